"""The traversal engine: walks one image through a compiled tree, a frontier at a time.

Free nodes (switches, fan-outs, choices whose variable is already known) are
expanded at once; every question that is then ready goes to the answerer in one
batch per kind, and the answers open the next frontier. A round is one such
step; the walk stops when no question is left or the step limit is reached.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping

from explainer.answerers.base import (
    Answerer,
    ChoiceQuery,
    FollowUpQuery,
    ImageContext,
    MultiImageAnswerer,
    YesNoQuery,
    supports_many_images,
)
from explainer.engine.events import (
    AnswerInferred,
    ProbeMeasured,
    Event,
    FindingMade,
    FindingWithdrawn,
    QuestionAnswered,
    RegionLocated,
    RoundFinished,
    RoundStarted,
    StepLimitReached,
    WalkFinished,
    WalkStarted,
)
from explainer.engine.regions import RegionLocator
from explainer.errors import UsageError
from explainer.trees.compiler import CompiledTree, scope_key
from explainer.trees.spec import NodeSpec, Target
from explainer.trees.templates import render

DEFAULT_MAX_STEPS = 2000


@dataclass(eq=False)
class _Group:
    """An at_least_one branch: members being asked, and the last one held back."""

    last: "_Item"
    waiting: int
    any_yes: bool = False


@dataclass(eq=False)
class _Item:
    node_id: str
    scope: dict[str, str]
    group: _Group | None = None


@dataclass(frozen=True)
class Finding:
    artifact: str
    explanation: str
    node_id: str
    region: str | None
    detail: str | None
    p_yes: float | None  # None when the answer was inferred or measured
    round: int
    value: float | None = None  # the probe's measurement, for findings made by a probe

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class WalkResult:
    tree: str
    image_id: str
    findings: list[Finding]
    events: list[Event]
    yes_no: int
    choices: int
    follow_ups: int
    inferred: int
    rounds: int
    steps: int
    seconds: float
    truncated: bool
    scope: dict[str, str] = field(default_factory=dict)
    probes: int = 0
    # The answerer's counters for this image (forward passes, tokens, prefix and model time), when it keeps them.
    stats: Any = field(default=None, repr=False, compare=False)
    # The tree's declared regions this walk needed: name -> how it was located (box, wording, fallback)
    regions: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # fallbacks and failures while locating regions

    @property
    def artifacts(self) -> set[str]:
        return {f.artifact for f in self.findings}

    @property
    def questions(self) -> list[QuestionAnswered]:
        return [e for e in self.events if isinstance(e, QuestionAnswered)]

    def to_dict(self, events: bool = True) -> dict[str, Any]:
        out = {
            "tree": self.tree,
            "image_id": self.image_id,
            "scope": self.scope,
            "findings": [f.to_dict() for f in self.findings],
            "counts": {
                "yes_no": self.yes_no, "choices": self.choices, "follow_ups": self.follow_ups,
                "inferred": self.inferred, "probes": self.probes, "rounds": self.rounds, "steps": self.steps,
            },
            "seconds": self.seconds,
            "truncated": self.truncated,
        }
        if self.regions:
            out["regions"] = self.regions
            out["notes"] = list(self.notes)
        if events:
            out["events"] = [e.to_dict() for e in self.events]
        return out


def probe_says_yes(node: NodeSpec, value: float | None) -> bool | None:
    """A probe's answer: above/below its threshold, or None when nothing could be measured."""
    if value is None:
        return None
    return value > node.above if node.above is not None else value < node.below


def explain_finding(tree: CompiledTree, node: NodeSpec, scope: Mapping[str, Any], detail: str | None = None,
                    value: float | None = None) -> str:
    """The one-line explanation of a finding: the node's template, else the catalogue description."""
    artifact = tree.catalogue[node.artifact]
    ctx = {**scope, "artifact": artifact.name, "description": artifact.description, "value": value}
    if node.follow_up is not None:
        ctx[node.follow_up.var] = detail or ""
    if node.explain is not None:
        return render(tree.templates[(node.id, "explain")], ctx)
    text = artifact.description[:1].upper() + artifact.description[1:]
    if detail:
        text += f" ({detail})"
    if value is not None:
        text += f" (measured {node.probe} = {value:.3g})"
    return text + "."


class _Walk:
    """State of one walk. Methods append events to ``out``; the runner drains them."""

    def __init__(self, tree: CompiledTree, answerer: Answerer, max_steps: int, calibration: Any = None) -> None:
        self.tree = tree
        self.answerer = answerer
        self.max_steps = max_steps
        self.calibration = calibration  # explainer.quality.calibration.Calibration or None
        self.out: list[Event] = []
        self.pending: list[_Item] = []
        self.visited: set[tuple[str, tuple]] = set()
        self.findings: list[Finding] = []
        self.steps = 0
        self.round = 0
        self.counts = {"yes_no": 0, "choices": 0, "follow_ups": 0, "inferred": 0, "probes": 0}
        self.context = ImageContext()
        self.truncated = False
        self.final_scope: dict[str, str] = {}
        # artifacts found whose follow-up question is still to be asked
        self.follow_ups: list[tuple[NodeSpec, dict[str, str], float | None]] = []
        self.regions: RegionLocator | None = None  # set when the tree declares regions

    # -- helpers -----------------------------------------------------------------
    def _render(self, node_id: str, field_name: str, scope: Mapping[str, Any]) -> str:
        return render(self.tree.templates[(node_id, field_name)], self._in_region(scope))

    def _in_region(self, scope: Mapping[str, Any]) -> Mapping[str, Any]:
        """The scope with {{ roi }} worded for the declared region it is about (as located for this image)."""
        if self.regions is not None:
            located = self.regions.located.get(scope.get("region"))
            if located is not None:
                return {**scope, "roi": located.wording}
        return scope

    def _locate(self, scope: Mapping[str, Any]) -> None:
        """Locate the scope's declared region the first time a node about it is visited (lazy: once per image)."""
        name = scope.get("region")
        if self.regions is None or name not in self.tree.regions or name in self.regions.located:
            return
        before, n_notes = set(self.regions.located), len(self.regions.notes)
        self.regions.get(name)
        notes = tuple(self.regions.notes[n_notes:])
        for n, loc in sorted(self.regions.located.items(), key=lambda item: item[0] != name):  # the one asked first
            if n not in before:
                self.out.append(RegionLocated(self.round, n, loc.locate, loc.used, loc.located, loc.box, loc.wording,
                                              loc.answer, notes if n == name else ()))

    def _enter(self, target: Target | None, scope: dict[str, str]) -> tuple[str, ...]:
        if target is None:
            return ()
        if target.mode == "all":
            self.pending.extend(_Item(i, scope) for i in target.ids)
            return target.ids
        members = [i for i in target.ids if self.tree.applies(i, scope)]
        if not members:
            return ()
        *asked, last = members
        if not asked:
            self._infer(_Item(last, scope), "the question above said yes and this is the only applicable member of its group")
            return (last,)
        group = _Group(last=_Item(last, scope), waiting=len(asked))
        self.pending.extend(_Item(i, scope, group) for i in asked)
        return tuple(members)

    def _claim(self, item: _Item) -> bool:
        """Mark a node visited; False if it was already, or the step limit is hit."""
        key = (item.node_id, scope_key(item.scope))
        if key in self.visited or self.truncated:
            return False
        self.visited.add(key)
        self.steps += 1
        if self.steps > self.max_steps:
            self.steps -= 1
            self.truncated = True
            self.out.append(StepLimitReached(self.steps, self.max_steps))
            return False
        return True

    def _group_answer(self, group: _Group | None, yes: bool) -> None:
        if group is None:
            return
        group.waiting -= 1
        group.any_yes |= yes
        if group.waiting == 0:
            if group.any_yes:
                self.pending.append(group.last)  # unknown: ask it in the next round
            else:
                self._infer(group.last, "the question above said yes and every other member of its group said no")

    def _infer(self, item: _Item, reason: str) -> None:
        if not self._claim(item):
            return
        node = self.tree.node(item.node_id)
        scope = {**item.scope, **node.set}
        self._locate(scope)
        self.counts["inferred"] += 1
        branch = self._yes_branch(node, scope, p_yes=None)
        prompt = self._render(node.id, "ask", scope) if node.kind == "ask" else f"probe {node.probe} on the {node.on}"
        self.out.append(AnswerInferred(self.round, node.id, prompt, "yes", reason, branch))

    def _yes_branch(self, node: NodeSpec, scope: dict[str, str], p_yes: float | None,
                    value: float | None = None) -> tuple[str, ...]:
        if node.artifact:
            self._found(node, scope, p_yes, value)
            return (f"artifact:{node.artifact}",)
        return self._enter(node.if_yes, scope)

    def _found(self, node: NodeSpec, scope: dict[str, str], p_yes: float | None, value: float | None = None) -> None:
        if node.follow_up is not None:
            self.follow_ups.append((node, scope, p_yes))
        else:
            self._record(node, scope, p_yes, None, value)

    def _measure(self, node: NodeSpec, scope: dict[str, str]) -> tuple[float | None, str]:
        oracle = getattr(self.answerer, "measure_probe", None)
        if oracle is not None:  # a test double that knows the truth
            return oracle(self.tree.leads_to((node.id,), scope), node.above, node.below)
        image = self.context.pixels if self.context.pixels is not None else self.context.image
        if image is None:
            return None, "no image to measure"
        from explainer.probes import measure

        return measure(node.probe, image, self.context.mask, node.on)

    def _probe(self, item: _Item, node: NodeSpec, scope: dict[str, str]) -> None:
        self.counts["probes"] += 1
        value, note = self._measure(node, scope)
        yes = probe_says_yes(node, value)
        if yes is None:
            answer, branch = "unknown", ()
        else:
            answer = "yes" if yes else "no"
            branch = self._yes_branch(node, scope, None, value) if yes else self._enter(node.if_no, scope)
        # a probe is measured in the round its node is reached; it asks the model nothing
        self.out.append(ProbeMeasured(self.round, node.id, node.probe, node.on, value, answer, node.above,
                                      node.below, note, branch))
        self._group_answer(item.group, answer != "no")

    def _record(self, node: NodeSpec, scope: dict[str, str], p_yes: float | None, detail: str | None,
                value: float | None = None) -> None:
        assert node.artifact is not None
        artifact = self.tree.catalogue[node.artifact]
        text = explain_finding(self.tree, node, self._in_region(scope), detail, value)
        finding = Finding(artifact.name, text, node.id, scope.get("region"), detail, p_yes, self.round, value)
        self.findings.append(finding)
        self.out.append(FindingMade(self.round, node.id, artifact.name, text, finding.region, detail, p_yes, value))

    # -- the frontier ----------------------------------------------------------------
    def expand(self) -> tuple[list, list, list]:
        """Expand free nodes; return the questions ready now (yes/no, choice, follow-up)."""
        yes_no: list[tuple[_Item, NodeSpec, dict]] = []
        choices: list[tuple[_Item, NodeSpec, dict]] = []
        while self.pending:
            item = self.pending.pop(0)
            if not self.tree.applies(item.node_id, item.scope) or not self._claim(item):
                self._group_answer(item.group, True)  # unknown: never infer past a skipped member
                continue
            node = self.tree.node(item.node_id)
            scope = {**item.scope, **node.set}
            self._locate(scope)
            self.final_scope.update({k: v for k, v in scope.items() if k in ("obj", "kind")})
            if node.kind == "ask":
                yes_no.append((item, node, scope))
            elif node.kind == "choose":
                if node.sets and node.sets in scope:
                    target = node.options.get(scope[node.sets])
                    self._enter(target, scope)
                else:
                    choices.append((item, node, scope))
            elif node.kind == "switch":
                for target in self.tree.switch_targets(node, scope):
                    self._enter(target, scope)
            elif node.kind == "all":
                self._enter(node.then, scope)
            elif node.kind == "artifact":
                self._found(node, scope, None)
            elif node.kind == "probe":
                self._probe(item, node, scope)
        follow_ups, self.follow_ups = self.follow_ups, []
        return yes_no, choices, follow_ups

    def queries(self, yes_no: list, choices: list, follow_ups: list) -> tuple[list, list, list]:
        """The round's queries, rendered: (choice, yes/no, follow-up), in the order of the ready lists."""
        cq = [ChoiceQuery(n.id, self._render(n.id, "choose", s), tuple(n.options), n.sets or "",
                          self.tree.option_leads_to(n, s)) for _, n, s in choices]
        yq = []
        for _, n, s in yes_no:
            leads = frozenset({n.artifact}) if n.artifact else self.tree.leads_to(n.if_yes.ids if n.if_yes else (), s)
            yq.append(YesNoQuery(n.id, self._render(n.id, "ask", s), leads))
        fq = []
        for node, scope, _ in follow_ups:
            artifact = self.tree.catalogue[node.artifact]
            ctx = {**scope, "artifact": artifact.name, "description": artifact.description}
            fu = node.follow_up
            allowed = None if fu.allowed is None else tuple(dict.fromkeys((*fu.allowed, fu.withdraw)))
            fq.append(FollowUpQuery(node.id, self._render(node.id, "follow_up", ctx), allowed,
                                    artifact=artifact.name, withdraw=fu.withdraw))
        return cq, yq, fq

    def ask(self, yes_no: list, choices: list, follow_ups: list) -> None:
        """One round with this walk's own answerer (the single-image protocol)."""
        cq, yq, fq = self.queries(yes_no, choices, follow_ups)
        ans = self.answerer
        # choices first: their answers never change the yes/no questions already rendered for this round
        ca = ans.choose(cq) if cq else []
        ya = ans.yes_no(yq) if yq else []
        fa = ans.follow_up(fq) if fq else []
        self.apply((yes_no, choices, follow_ups), (cq, yq, fq), (ca, ya, fa))

    def apply(self, ready: tuple[list, list, list], queries: tuple[list, list, list],
              answers: tuple[list, list, list]) -> None:
        """Take a round's answers: open branches, record findings, emit the events."""
        yes_no, choices, follow_ups = ready
        cq, yq, fq = queries
        ca, ya, fa = answers
        for (item, node, scope), q, a in zip(choices, cq, ca):
            self.counts["choices"] += 1
            option = a.best
            child = dict(scope)
            if node.sets:
                child[node.sets] = option
                self.final_scope[node.sets] = option
            branch = self._enter(node.options[option], child)
            self.out.append(QuestionAnswered(self.round, node.id, "choice", q.prompt, option, probs=dict(a.probs),
                                             branch=branch, tokens=a.tokens, seconds=a.seconds))
        for (item, node, scope), q, a in zip(yes_no, yq, ya):
            self.counts["yes_no"] += 1
            threshold = node.threshold if node.threshold is not None else self.tree.spec.threshold
            p_calibrated = None
            if self.calibration is not None:  # `explain --calibration FILE`: rescaled P(yes), own threshold
                p_calibrated = self.calibration.adjust(node.id, a.p_yes)
                threshold = self.calibration.threshold(node.id, threshold)
            yes = (a.p_yes if p_calibrated is None else p_calibrated) >= threshold
            if yes:
                branch = self._yes_branch(node, scope, a.p_yes)
            else:
                branch = self._enter(node.if_no, scope)
            self.out.append(QuestionAnswered(self.round, node.id, "yes_no", q.prompt, "yes" if yes else "no",
                                             p_yes=a.p_yes, threshold=threshold, mass=a.mass, branch=branch,
                                             tokens=a.tokens, seconds=a.seconds, p_calibrated=p_calibrated))
            self._group_answer(item.group, yes)
        for (node, scope, p_yes), q, a in zip(follow_ups, fq, fa):
            self.counts["follow_ups"] += 1
            word = a.text.strip().lower()
            self.out.append(QuestionAnswered(self.round, node.id, "follow_up", q.prompt, word,
                                             tokens=a.tokens, seconds=a.seconds))
            if word == node.follow_up.withdraw:
                self.out.append(FindingWithdrawn(self.round, node.id, node.artifact, word))
            else:
                self._record(node, scope, p_yes, word)


class TreeRunner:
    """Walks images through one compiled tree with one answerer (LangGraph-style runner)."""

    def __init__(self, tree: CompiledTree, answerer: Answerer, max_steps: int = DEFAULT_MAX_STEPS,
                 calibration: Any = None) -> None:
        self.tree = tree
        self.answerer = answerer
        self.max_steps = max_steps
        self.calibration = calibration

    def check_scope(self, scope: Mapping[str, str]) -> None:
        missing = [v for v in self.tree.spec.inputs if v not in scope]
        if missing:
            raise UsageError(f"tree '{self.tree.name}' needs {', '.join(missing)} for every walk (its 'inputs'); "
                             f"give {'it' if len(missing) == 1 else 'them'} (e.g. --class for obj)")
        obj = scope.get("obj")
        if obj is not None and self.tree.classes and obj not in self.tree.classes:
            raise UsageError(f"class '{obj}' is not one of the tree's classes ({', '.join(self.tree.classes)})")

    def _start(self, context: ImageContext | None, scope: Mapping[str, str] | None) -> tuple[_Walk, ImageContext]:
        """A fresh walk for one image: scope checked, preamble rendered into the context."""
        context = context or ImageContext()
        given = dict(scope or {})
        self.check_scope(given)
        start_scope = {**self.tree.base_scope(), **given}
        preamble = self.tree.templates.get(("(tree)", "preamble"))
        if preamble is not None:
            context = dataclasses.replace(context, preamble=render(preamble, start_scope))
        walk = _Walk(self.tree, self.answerer, self.max_steps, self.calibration)
        walk.context = context
        if self.tree.regions:
            walk.regions = RegionLocator(self.tree.regions, context, single_locator(self.answerer),
                                         f"answerer '{getattr(self.answerer, 'name', 'answerer')}'")
        walk.final_scope.update({k: v for k, v in given.items()})
        walk.pending.append(_Item(self.tree.start, start_scope))
        walk.out.append(WalkStarted(self.tree.name, context.image_id, dict(given), context.preamble))
        return walk, context

    @staticmethod
    def _finished(walk: _Walk, seconds: float) -> WalkFinished:
        c = walk.counts
        return WalkFinished(tuple(f.artifact for f in walk.findings), c["yes_no"], c["choices"], c["follow_ups"],
                            c["inferred"], walk.round, walk.steps, seconds, walk.truncated,
                            dict(walk.final_scope), c["probes"])

    def stream(self, context: ImageContext | None = None, scope: Mapping[str, str] | None = None) -> Iterator[Event]:
        """Yield the walk's events as they happen; the last one is :class:`WalkFinished`."""
        walk, context = self._start(context, scope)
        started = time.perf_counter()
        yield from walk.out
        walk.out.clear()
        self.answerer.begin_image(context)
        try:
            while True:
                yes_no, choices, follow_ups = walk.expand()
                yield from walk.out
                walk.out.clear()
                if not (yes_no or choices or follow_ups):
                    break
                walk.round += 1
                round_start = time.perf_counter()
                yield RoundStarted(walk.round, len(yes_no), len(choices), len(follow_ups))
                walk.ask(yes_no, choices, follow_ups)
                yield from walk.out
                walk.out.clear()
                yield RoundFinished(walk.round, time.perf_counter() - round_start)
        finally:
            self.answerer.end_image()
        yield self._finished(walk, time.perf_counter() - started)
        self._last_findings = walk.findings

    def run(self, context: ImageContext | None = None, scope: Mapping[str, str] | None = None) -> WalkResult:
        events = list(self.stream(context, scope))
        stats = getattr(self.answerer, "stats", None)
        return _result(self.tree.name, context.image_id if context else "", list(self._last_findings), events,
                       copy.copy(stats) if stats is not None else None)

    def run_many(self, items: Iterable[tuple[ImageContext, Mapping[str, str] | None]],
                 batch_images: int = 1) -> Iterator[tuple[int, WalkResult]]:
        """Walk many images, up to ``batch_images`` together; yield ``(index, result)`` as each finishes.

        With an answerer that implements :class:`MultiImageAnswerer`, every
        round sends the ready questions of all open images in one call per
        kind, and an image that finishes is replaced by the next one before
        the following round (continuous batching): a long walk never holds the
        others back. Each image's walk is the one :meth:`run` gives (tested).
        Any other answerer, or ``batch_images`` 1, walks one image at a time.
        Results come in the order images finish, not the order given.
        """
        multi = isinstance(self.answerer, MultiImageAnswerer)
        single = hasattr(self.answerer, "begin_image")  # a multi-image-only answerer walks K=1 in the multi loop
        if single and (batch_images <= 1 or not supports_many_images(self.answerer)):
            for i, (context, scope) in enumerate(items):
                yield i, self.run(context, scope)
            return
        if not multi:
            raise TypeError(f"answerer {getattr(self.answerer, 'name', self.answerer)!r} implements neither protocol")
        yield from _MultiWalk(self, max(1, min(int(batch_images), int(self.answerer.max_images)))).run(items)


def single_locator(answerer: Any):
    """``locate`` of a single-image answerer as a one-query function, or None when it cannot locate."""
    locate = getattr(answerer, "locate", None)
    return (lambda q: locate([q])[0]) if callable(locate) else None


def slot_locator(answerer: Any, slot: int):
    """``locate_images`` of a multi-image answerer for one open image, or None when it cannot locate."""
    locate = getattr(answerer, "locate_images", None)
    return (lambda q: locate([(slot, q)])[0]) if callable(locate) else None


def _result(tree: str, image_id: str, findings: list[Finding], events: list[Event], stats) -> WalkResult:
    done = events[-1]
    assert isinstance(done, WalkFinished)
    regions, notes = {}, []
    for e in events:
        if isinstance(e, RegionLocated):
            regions[e.region] = {"locate": e.locate, "located": e.located, "used": e.used,
                                 "box": list(e.box) if e.box else None, "wording": e.wording,
                                 **({"answer": e.answer} if e.answer is not None else {})}
            notes += e.notes
    return WalkResult(regions=regions, notes=notes,
        tree=tree, image_id=image_id, findings=findings, events=events, yes_no=done.yes_no, choices=done.choices,
        follow_ups=done.follow_ups, inferred=done.inferred, rounds=done.rounds, steps=done.steps,
        seconds=done.seconds, truncated=done.truncated, scope=done.scope, probes=done.probes, stats=stats,
    )


@dataclass(eq=False)
class _Open:
    """One image being walked in a multi-image run."""

    index: int
    walk: _Walk
    context: ImageContext
    started: float
    events: list[Event] = field(default_factory=list)
    ready: tuple[list, list, list] | None = None  # questions expanded and not yet asked


class _MultiWalk:
    """The continuous-batching loop behind :meth:`TreeRunner.run_many`."""

    def __init__(self, runner: TreeRunner, width: int) -> None:
        self.runner = runner
        self.answerer = runner.answerer
        self.width = max(1, width)
        self.open: dict[int, _Open] = {}

    def _refill(self, queue: Iterator) -> bool:
        """Open images into free slots; False once the queue is exhausted."""
        new: dict[int, ImageContext] = {}
        exhausted = False
        free = [s for s in range(self.width) if s not in self.open]
        try:
            for slot in free:
                item = next(queue, None)
                if item is None:
                    exhausted = True
                    break
                index, (context, scope) = item
                walk, context = self.runner._start(context, scope)
                self.open[slot] = _Open(index, walk, context, time.perf_counter(), events=list(walk.out))
                walk.out.clear()
                new[slot] = context
        except BaseException:
            for slot in new:  # not begun yet: nothing to end
                del self.open[slot]
            raise
        if new:
            try:
                self.answerer.begin_images(new)
            except BaseException:
                for slot in new:
                    del self.open[slot]
                raise
            per_image = getattr(self.answerer, "answerer", None)
            for slot in new:  # probes an oracle measures ask the image's own answerer
                walk = self.open[slot].walk
                if callable(per_image):
                    walk.answerer = per_image(slot)
                if walk.regions is not None:  # ask_vlm regions: about this slot's image
                    walk.regions.locate_fn = (single_locator(per_image(slot)) if callable(per_image)
                                              else slot_locator(self.answerer, slot))
        return not exhausted

    def _close(self, slot: int) -> tuple[int, WalkResult]:
        state = self.open.pop(slot)
        walk = state.walk
        try:
            stats = copy.copy(self.answerer.image_stats(slot))
        finally:
            self.answerer.end_images([slot])
        state.events.append(self.runner._finished(walk, time.perf_counter() - state.started))
        return state.index, _result(self.runner.tree.name, state.context.image_id, list(walk.findings),
                                    state.events, stats)

    def run(self, items: Iterable) -> Iterator[tuple[int, WalkResult]]:
        queue = iter(enumerate(items))
        more = True
        try:
            while True:
                if more:
                    more = self._refill(queue)
                if not self.open:
                    return
                finished = []
                for slot, state in self.open.items():
                    if state.ready is None:
                        state.ready = state.walk.expand()
                        state.events.extend(state.walk.out)
                        state.walk.out.clear()
                        if not any(state.ready):
                            finished.append(slot)
                for slot in finished:
                    yield self._close(slot)
                if finished and more:
                    continue  # fill the freed slots before the next forward pass
                if self.open:
                    self._round()
        finally:
            if self.open:
                self.answerer.end_images(list(self.open))
                self.open.clear()

    def _round(self) -> None:
        """One forward pass per kind over the ready questions of every open image."""
        start = time.perf_counter()
        built: dict[int, tuple[list, list, list]] = {}
        for slot, state in self.open.items():
            yes_no, choices, follow_ups = state.ready
            state.walk.round += 1
            state.events.append(RoundStarted(state.walk.round, len(yes_no), len(choices), len(follow_ups)))
            built[slot] = state.walk.queries(yes_no, choices, follow_ups)
        answers: dict[int, list[list]] = {slot: [[], [], []] for slot in built}
        for kind, method in enumerate(("choose_images", "yes_no_images", "follow_up_images")):
            pairs = [(slot, q) for slot, qs in built.items() for q in qs[kind]]
            if not pairs:
                continue
            got = getattr(self.answerer, method)(pairs)
            if len(got) != len(pairs):
                raise RuntimeError(f"{self.answerer.name}: {method} gave {len(got)} answers for {len(pairs)} questions")
            for (slot, _), a in zip(pairs, got):
                answers[slot][kind].append(a)
        seconds = time.perf_counter() - start
        for slot, state in self.open.items():
            walk = state.walk
            walk.apply(state.ready, built[slot], tuple(answers[slot]))
            state.events.extend(walk.out)
            walk.out.clear()
            state.events.append(RoundFinished(walk.round, seconds))
            state.ready = None
