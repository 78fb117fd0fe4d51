"""What a tree costs per image: questions, follow-ups and rounds, beside the entropy floor.

A *situation* is one assignment of the variables the tree's choices bind (the
class, the region...). In each situation every applicable artifact is present
independently with probability p; we sample artifact sets, walk the real
engine with the oracle answerer, and count. The floor no tree can beat is the
entropy of the artifact set, sum of H(p_a) over the applicable artifacts:
each yes/no answer carries at most one bit.
"""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from explainer.answerers.oracle import OracleAnswerer
from explainer.engine.runner import DEFAULT_MAX_STEPS, TreeRunner
from explainer.errors import UsageError
from explainer.trees.compiler import CompiledTree, scope_key

MAX_PRIORS_BYTES = 1024 * 1024  # one probability per catalogue artifact is a few KB
MEAN_ARTIFACTS_PER_IMAGE = 2.4  # the mean of the seed team's published explanations


def entropy_bits(p: float) -> float:
    if p <= 0.0 or p >= 1.0:
        return 0.0
    return -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


@dataclass(frozen=True)
class Situation:
    scope: tuple  # sorted (var, value) pairs bound by choices
    artifacts: tuple[str, ...]  # applicable artifacts, catalogue order

    @property
    def vars(self) -> dict[str, str]:
        return dict(self.scope)


def situations(tree: CompiledTree) -> list[Situation]:
    """Every assignment of choice-bound variables a walk can reach, with its applicable artifacts."""
    found: dict[tuple, None] = {}

    # iterative: a 20,000-node chain must not hit Python's recursion limit
    stack: list[tuple[str, dict[str, str], dict[str, str], set]] = [(tree.start, tree.base_scope(), {}, set())]
    while stack:
        node_id, scope, bound, seen = stack.pop()
        key = (node_id, scope_key(scope))
        if key in seen or not tree.applies(node_id, scope):
            continue
        seen.add(key)
        node = tree.node(node_id)
        scope = {**scope, **node.set}
        if node.kind == "choose" and node.sets and node.sets not in scope:
            for option, target in node.options.items():
                if target is not None:
                    child_bound = {**bound, node.sets: option}
                    for nid in target.ids:
                        stack.append((nid, {**scope, node.sets: option}, child_bound, set()))
                else:
                    found.setdefault(tuple(sorted({**bound, node.sets: option}.items())), None)
            continue
        children = tree._successors_all(node, scope)
        if not children:
            found.setdefault(tuple(sorted(bound.items())), None)
        for ids, child_scope in children:
            for nid in ids:
                stack.append((nid, child_scope, bound, seen))

    order = {name: i for i, name in enumerate(tree.catalogue.names)}
    out = []
    for sc in found:
        scope = {**tree.base_scope(), **dict(sc)}
        arts = tree.leads_to((tree.start,), scope)
        out.append(Situation(sc, tuple(sorted(arts, key=order.__getitem__))))
    return sorted(out, key=lambda s: s.scope)


def longest_path(tree: CompiledTree, route: Mapping[str, str]) -> int:
    """Most model questions (yes/no, choice, follow-up) on any path of one situation.

    Choices are counted as asked (nothing is bound when a walk starts) but only
    the option ``route`` names is followed.
    """
    memo: dict[tuple, int] = {}
    pending: dict[tuple, tuple[int, list[tuple]]] = {}  # opened, not finished: own count and children
    start = (tree.start, scope_key(tree.base_scope()))
    stack = [start]
    while stack:  # iterative post-order: no recursion limit on long chains
        key = stack[-1]
        if key in memo:
            stack.pop()
            continue
        if key not in pending:
            node_id, sc = key[0], dict(key[1])
            if not tree.applies(node_id, sc):
                memo[key] = 0
                continue
            node = tree.node(node_id)
            sc = {**sc, **node.set}
            own = (1 if node.kind in ("ask", "choose") else 0) + (1 if node.follow_up is not None else 0)
            if node.kind == "choose" and node.sets in route:
                sc = {**sc, node.sets: route[node.sets]}
            kids = [(i, scope_key(child)) for ids, child in tree._successors_all(node, sc) for i in ids]
            pending[key] = (own, kids)
            stack.extend(k for k in kids if k not in memo and k not in pending)
            continue
        stack.pop()
        own, kids = pending.pop(key)
        memo[key] = own + max((memo.get(k, 0) for k in kids), default=0)
    return memo[start]


def load_priors(path: str | Path, tree: CompiledTree) -> dict[str, float]:
    from explainer.safe_io import read_yaml_capped

    # a priors file is a short mapping; like every input it must be a regular file within a cap
    data = read_yaml_capped(path, MAX_PRIORS_BYTES, "priors file")
    if not isinstance(data, dict):
        raise UsageError(f"{path}: priors are a mapping of catalogue name to probability")
    out = {}
    for name, value in data.items():
        if name not in tree.catalogue:
            raise UsageError(f"{path}: '{name}' is not a catalogue artifact")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise UsageError(f"{path}: prior of '{name}' must be a probability in [0, 1], not {value!r}")
        out[str(name)] = float(value)
    return out


@dataclass
class SituationStats:
    scope: dict[str, str]
    applicable: int
    entropy_bits: float
    yes_no: float
    yes_no_se: float
    follow_ups: float
    rounds: float
    max_rounds: int
    longest_path: int
    artifacts_per_image: float
    probes: float = 0.0


@dataclass
class ClassStats:
    name: str
    artifacts_reachable: int
    regions: dict[str, int]
    longest_path: int
    yes_no: float
    yes_no_se: float
    follow_ups: float
    rounds: float
    max_rounds: int
    entropy_bits: float
    situations: list[SituationStats] = field(default_factory=list)
    probes: float = 0.0

    @property
    def ratio_to_floor(self) -> float:
        return self.yes_no / self.entropy_bits if self.entropy_bits else math.inf


@dataclass
class TreeStats:
    tree: str
    p_artifact: float
    samples: int
    seed: int
    classes: list[ClassStats]
    catalogue_covered: int
    catalogue_size: int
    direct_questions: int

    def mean(self, attr: str) -> float:
        return statistics.fmean(getattr(c, attr) for c in self.classes)

    def to_dict(self) -> dict[str, Any]:
        import dataclasses

        return {
            "tree": self.tree, "p_artifact": self.p_artifact, "samples_per_situation": self.samples, "seed": self.seed,
            "catalogue_covered": self.catalogue_covered, "catalogue_size": self.catalogue_size,
            "direct": {"yes_no": self.direct_questions, "rounds": self.direct_questions},
            "mean": {k: self.mean(k) for k in ("yes_no", "follow_ups", "probes", "rounds", "entropy_bits")}
            | {"ratio_to_floor": self.mean("yes_no") / self.mean("entropy_bits") if self.mean("entropy_bits") else None},
            "classes": [dataclasses.asdict(c) | {"ratio_to_floor": c.ratio_to_floor if c.entropy_bits else None}
                        for c in self.classes],
        }


def default_p(sits: list[Situation]) -> float:
    """p such that an image carries MEAN_ARTIFACTS_PER_IMAGE artifacts on average."""
    mean_n = statistics.fmean(len(s.artifacts) for s in sits) if sits else 0
    return min(1.0, MEAN_ARTIFACTS_PER_IMAGE / mean_n) if mean_n else 0.0


def tree_stats(tree: CompiledTree, p: float | None = None, priors: Mapping[str, float] | None = None,
               samples: int = 400, seed: int = 0) -> TreeStats:
    sits = situations(tree)
    if p is None:
        p = default_p(sits)
    priors = dict(priors or {})
    rng = random.Random(seed)
    oracle = OracleAnswerer()
    # every node may be visited once per walk; the default step limit is for runaway walks, not big trees
    runner = TreeRunner(tree, oracle, max_steps=max(DEFAULT_MAX_STEPS, 4 * len(tree.spec.nodes)))
    per_sit: list[SituationStats] = []
    for sit in sits:
        probs = [priors.get(a, p) for a in sit.artifacts]
        q, f, r, n, pr = [], [], [], [], []
        for _ in range(samples):
            truth = {a for a, pa in zip(sit.artifacts, probs) if rng.random() < pa}
            oracle.truth = frozenset(truth)
            oracle.facts = sit.vars
            res = runner.run()
            if res.artifacts != truth:  # the oracle must find exactly the truth; anything else is a tree bug
                raise AssertionError(f"oracle walk for {sit.vars} found {sorted(res.artifacts)} instead of {sorted(truth)}")
            q.append(res.yes_no)
            f.append(res.follow_ups)
            r.append(res.rounds)
            n.append(len(truth))
            pr.append(res.probes)
        per_sit.append(SituationStats(
            sit.vars, len(sit.artifacts), sum(entropy_bits(x) for x in probs), statistics.fmean(q),
            statistics.stdev(q) / math.sqrt(len(q)) if len(q) > 1 else 0.0, statistics.fmean(f), statistics.fmean(r),
            max(r), longest_path(tree, sit.vars), statistics.fmean(n), statistics.fmean(pr)))
    classes: list[ClassStats] = []
    names = tree.classes or ("(any)",)
    for name in names:
        mine = [s for s in per_sit if s.scope.get("obj", name) == name]
        if not mine:
            continue
        reachable = tree.applicable(name if tree.classes else None)
        regions: dict[str, int] = {}
        for art, where in reachable.items():
            for region in where:
                regions[region] = regions.get(region, 0) + 1
        classes.append(ClassStats(
            name=name, artifacts_reachable=len(reachable), regions=dict(sorted(regions.items())),
            longest_path=max(s.longest_path for s in mine),
            yes_no=statistics.fmean(s.yes_no for s in mine),
            yes_no_se=math.sqrt(sum(s.yes_no_se ** 2 for s in mine)) / len(mine),
            follow_ups=statistics.fmean(s.follow_ups for s in mine),
            rounds=statistics.fmean(s.rounds for s in mine), max_rounds=max(s.max_rounds for s in mine),
            entropy_bits=statistics.fmean(s.entropy_bits for s in mine), situations=mine,
            probes=statistics.fmean(s.probes for s in mine)))
    # direct prompting asks one question per artifact this tree can name: its own catalogue, not the default 70
    return TreeStats(tree.name, p, samples, seed, classes, len(tree.artifacts()), len(tree.catalogue),
                     len(tree.artifacts()))
