"""Typed spec → validated, compiled tree: a ``networkx.DiGraph`` the engine walks.

``compile_tree`` refuses a bad tree before any model is loaded and reports every
problem at once (``FILE:LINE: key.path: what is wrong``). The compiled tree also
answers static questions the engine and the statistics need: which artifacts a
branch can lead to for a given scope, and which apply to a class.
"""

from __future__ import annotations

import difflib
import gc
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping

import networkx as nx
from jinja2 import TemplateError, TemplateSyntaxError

from explainer.trees.catalogue import Catalogue, builtin_catalogue
from explainer.trees.parse import parse_tree, with_include_chain
from explainer.trees.problems import Problem, TreeError, format_path
from explainer.trees.spec import NodeSpec, RegionSpec, Target, TreeSpec, Where
from explainer.trees.templates import RUNTIME_VARS, compile_template, undeclared_variables

ScopeKey = tuple  # sorted (var, value) pairs


def scope_key(scope: Mapping[str, Any]) -> ScopeKey:
    return tuple(sorted((k, v) for k, v in scope.items() if isinstance(v, str)))


@dataclass
class CompiledTree:
    spec: TreeSpec
    graph: nx.DiGraph
    catalogue: Catalogue
    templates: dict[tuple[str, str], Any]
    group_members: dict[str, frozenset[str]]  # group -> classes
    applies_classes: dict[str, frozenset[str] | None]  # node -> classes it applies to
    _cache: dict = field(default_factory=dict, repr=False)

    # -- basic access ---------------------------------------------------------
    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def start(self) -> str:
        assert self.spec.start is not None
        return self.spec.start

    @property
    def classes(self) -> tuple[str, ...]:
        return self.spec.classes

    @property
    def regions(self) -> dict[str, "RegionSpec"]:
        """The tree's declared regions (``regions:``); empty when it declares none."""
        return self.spec.regions

    def node(self, node_id: str) -> NodeSpec:
        return self.spec.nodes[node_id]

    def base_scope(self) -> dict[str, str]:
        """Variables every walk starts with: the tree's own vars and the runtime ones."""
        return {**RUNTIME_VARS, **self.spec.vars}

    def applies(self, node_id: str, scope: Mapping[str, Any]) -> bool:
        classes = self.applies_classes.get(node_id)
        if classes is None or "obj" not in scope:
            return True
        return scope["obj"] in classes

    def class_matches(self, key: str, value: str) -> bool:
        return key == value or value in self.group_members.get(key, ())

    def switch_targets(self, node: NodeSpec, scope: Mapping[str, Any]) -> list[Target]:
        """Targets a switch takes for ``scope``; every case when its variable is unbound."""
        if node.on not in scope:
            return list(node.cases.values()) + ([node.default] if node.default else [])
        for key, target in node.cases.items():
            if self.class_matches(key, str(scope[node.on])):
                return [target]
        return [node.default] if node.default else []

    def artifacts(self) -> set[str]:
        """Every catalogue name that appears anywhere in the tree."""
        return {n.artifact for n in self.spec.nodes.values() if n.artifact}

    # -- static reachability ---------------------------------------------------
    def leads_to(self, ids: Iterable[str], scope: Mapping[str, Any]) -> frozenset[str]:
        """Artifacts reachable from the nodes ``ids`` when walked with ``scope`` (all branches open)."""
        key = scope_key(scope)
        found: set[str] = set()
        for node_id in ids:
            found |= self._leads_from(node_id, key)
        return frozenset(found)

    def _leads_from(self, node_id: str, key: ScopeKey) -> frozenset[str]:
        """Memoised, iterative post-order walk: a 20,000-node chain must not hit Python's recursion limit."""
        memo = self._cache.setdefault("leads", {})
        hit = memo.get((node_id, key))
        if hit is not None:
            return hit
        children: dict[tuple[str, ScopeKey], list[tuple[str, ScopeKey]]] = {}
        open_: set[tuple[str, ScopeKey]] = set()  # on the current path: guards against cycles in unvalidated use
        stack = [(node_id, key)]
        while stack:
            item = stack[-1]
            if item in memo:
                stack.pop()
                continue
            nid, k = item
            node = self.spec.nodes[nid]
            if item not in children:
                scope = dict(k)
                kids: list[tuple[str, ScopeKey]] = []
                if self.applies(nid, scope):
                    scope.update(node.set)
                    for child_ids, child_scope in self._successors_all(node, scope):
                        child_key = scope_key(child_scope)
                        kids.extend((c, child_key) for c in child_ids)
                children[item] = kids
                open_.add(item)
                stack.extend(kid for kid in kids if kid not in memo and kid not in open_)
                continue
            stack.pop()
            open_.discard(item)
            out: set[str] = set()
            for kid in children.pop(item):
                out |= memo.get(kid, frozenset())
            if node.artifact and self.applies(nid, dict(k)):
                out.add(node.artifact)
            memo[item] = frozenset(out)
        return memo[(node_id, key)]

    def _successors_all(self, node: NodeSpec, scope: dict) -> list[tuple[tuple[str, ...], dict]]:
        """Every way out of ``node`` for ``scope`` (both answers, every unbound option)."""
        out: list[tuple[tuple[str, ...], dict]] = []
        if node.kind in ("ask", "probe"):
            for t in (node.if_yes, node.if_no):
                if t:
                    out.append((t.ids, scope))
        elif node.kind == "choose":
            bound = scope.get(node.sets) if node.sets else None
            for option, t in node.options.items():
                if bound is not None and option != bound:
                    continue
                child = dict(scope)
                if node.sets:
                    child[node.sets] = option
                if t:
                    out.append((t.ids, child))
        elif node.kind == "switch":
            for t in self.switch_targets(node, scope):
                out.append((t.ids, scope))
        elif node.kind == "all" and node.then:
            out.append((node.then.ids, scope))
        return out

    def option_leads_to(self, node: NodeSpec, scope: Mapping[str, Any]) -> tuple[frozenset[str], ...]:
        out = []
        for option, t in node.options.items():
            child = dict(scope)
            if node.sets:
                child[node.sets] = option
            out.append(self.leads_to(t.ids, child) if t else frozenset())
        return tuple(out)

    def applicable(self, obj: str | None) -> dict[str, set[str]]:
        """Artifacts a walk can find for class ``obj``, each with the regions it is found in."""
        cache = self._cache.setdefault("applicable", {})
        if obj in cache:
            return cache[obj]
        scope = self.base_scope()
        if obj is not None:
            scope["obj"] = obj
        out: dict[str, set[str]] = {}
        seen: set[tuple[str, ScopeKey]] = set()
        stack = [(self.start, scope)]
        while stack:
            node_id, sc = stack.pop()
            k = (node_id, scope_key(sc))
            if k in seen:
                continue
            seen.add(k)
            if not self.applies(node_id, sc):
                continue
            node = self.spec.nodes[node_id]
            sc = {**sc, **node.set}
            if node.artifact:
                out.setdefault(node.artifact, set()).add(sc.get("region", "whole image"))
            for ids, child in self._successors_all(node, sc):
                stack.extend((i, child) for i in ids)
        cache[obj] = out
        return out


# ---------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------


class _Checker:
    def __init__(self, spec: TreeSpec, catalogue: Catalogue) -> None:
        self.spec = spec
        self.catalogue = catalogue
        self.problems: list[Problem] = []

    def bad(self, where: Where, message: str, sub: tuple = ()) -> None:
        self.problems.append(Problem(where.file, where.line, format_path(where.path + sub), message))

    def _suggest(self, word: str, choices: Iterable[str]) -> str:
        close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
        return f" (did you mean '{close[0]}'?)" if close else ""

    # groups and classes --------------------------------------------------
    def group_where(self, name: str) -> Where:
        return self.spec.group_where.get(name, Where(self.spec.file, 1, ("groups", name)))

    def expand_groups(self) -> dict[str, frozenset[str]]:
        classes = set(self.spec.classes)
        out: dict[str, frozenset[str]] = {}

        def expand(name: str, chain: tuple[str, ...]) -> frozenset[str]:
            if name in out:
                return out[name]
            members: set[str] = set()
            for member in self.spec.groups[name]:
                if member in classes:
                    members.add(member)
                elif member in self.spec.groups:
                    if member in chain:
                        self.bad(self.group_where(name), f"group '{name}' contains itself through '{member}'")
                        continue
                    members |= expand(member, chain + (member,))
                else:
                    self.bad(self.group_where(name),
                             f"'{member}' is neither a class nor a group{self._suggest(member, classes | set(self.spec.groups))}")
            out[name] = frozenset(members)
            return out[name]

        for name in self.spec.groups:
            if name in classes:
                self.bad(self.group_where(name), f"group '{name}' has the same name as a class")
            expand(name, (name,))
        return out

    def check_target(self, node: NodeSpec, target: Target | None) -> None:
        if target is None:
            return
        for i, node_id in enumerate(target.ids):
            sub = (("at_least_one", i) if target.mode == "at_least_one" else (i,)) if len(target.ids) > 1 or target.mode != "all" else ()
            if node_id in self.spec.broken or (self.spec.incomplete and node_id not in self.spec.nodes):
                continue
            if node_id not in self.spec.nodes:
                self.bad(target.where, f"refers to node '{node_id}', which does not exist{self._suggest(node_id, self.spec.nodes)}", sub)
            elif target.mode == "at_least_one" and self.spec.nodes[node_id].kind not in ("ask", "probe"):
                self.bad(target.where, f"'{node_id}' is a '{self.spec.nodes[node_id].kind}' node; every member of at_least_one must be a yes/no question or a probe", sub)
        if len(set(target.ids)) != len(target.ids):
            self.bad(target.where, "lists the same node twice")

    def check_node(self, node: NodeSpec, groups: dict[str, frozenset[str]]) -> None:
        known = set(self.spec.classes) | set(groups)
        if node.applies_to is not None:
            if not self.spec.classes:
                self.bad(node.at("applies_to"), "'applies_to' needs the tree's 'classes' list")
            for name in node.applies_to:
                if self.spec.classes and name not in known:
                    self.bad(node.at("applies_to"), f"'{name}' is neither a class nor a group{self._suggest(name, known)}")
        if node.kind == "probe" and node.probe is not None:
            from explainer.probes import PROBES

            if node.probe not in PROBES:
                self.bad(node.at("probe"), f"unknown probe '{node.probe}'{self._suggest(node.probe, PROBES)}; known: {', '.join(PROBES)}")
        if node.artifact is not None and node.artifact not in self.catalogue:
            hint = self.catalogue.suggest(node.artifact)
            self.bad(node.at("artifact"), f"unknown artifact '{node.artifact}'" + (f" (did you mean '{hint}'?)" if hint else f"; names must be verbatim from the catalogue ({self.catalogue.source})"))
        for t in (node.if_yes, node.if_no, node.then, node.default, *node.options.values(), *node.cases.values()):
            self.check_target(node, t)
        if node.kind == "choose":
            if all(t is None for t in node.options.values()):
                self.bad(node.where, "choice leads nowhere: none of its options has a next node")
            if node.sets == "obj" and self.spec.classes:
                for option in node.options:
                    if option not in self.spec.classes:
                        self.bad(node.at("options"), f"option '{option}' is not one of the tree's classes{self._suggest(option, self.spec.classes)}")
        if node.kind == "switch" and node.on == "obj" and self.spec.classes:
            for case in node.cases:
                if case not in known:
                    self.bad(node.at("cases"), f"case '{case}' is neither a class nor a group{self._suggest(case, known)}", (case,))

    # graph -----------------------------------------------------------------
    def build_graph(self) -> nx.DiGraph:
        g = nx.DiGraph()
        for node in self.spec.nodes.values():
            g.add_node(node.id, kind=node.kind, spec=node)
        for node in self.spec.nodes.values():
            edges: list[tuple[Target | None, str, str]] = [
                (node.if_yes, "yes", "yes"), (node.if_no, "no", "no"), (node.then, "all", ""), (node.default, "case", "default")]
            # a list of options sharing one 'then' is one edge, not ten overwritten ones
            shared = len(node.options) > 1 and len({id(t) for t in node.options.values()}) == 1
            edges += [(t, "option", "any" if shared else name) for name, t in node.options.items()]
            edges += [(t, "case", name) for name, t in node.cases.items()]
            for target, kind, label in edges:
                if target is None:
                    continue
                for node_id in target.ids:
                    if node_id in self.spec.nodes:
                        g.add_edge(node.id, node_id, kind=kind, label=label, mode=target.mode, where=target.where)
        return g

    def check_structure(self, g: nx.DiGraph) -> bool:
        start = self.spec.start
        if start is not None and start not in self.spec.nodes and start not in self.spec.broken and not self.spec.incomplete:
            w = self.spec.where.get("start", Where(self.spec.file, 1, ("start",)))
            self.bad(w, f"start node '{start}' does not exist{self._suggest(start, self.spec.nodes)}")
            start = None
        if start not in self.spec.nodes:
            start = None
        acyclic = True
        for comp in nx.strongly_connected_components(g):
            if len(comp) == 1 and not g.has_edge(next(iter(comp)), next(iter(comp))):
                continue
            acyclic = False
            # Start from the node defined first: the edge that comes back to it is the one that closes the cycle.
            order = sorted(comp, key=lambda n: (self.spec.nodes[n].where.file, self.spec.nodes[n].where.line))
            cycle = nx.find_cycle(g.subgraph(comp), source=order[0])
            path = " -> ".join([e[0] for e in cycle] + [cycle[0][0]])
            closing = g.edges[cycle[-1][0], cycle[-1][1]]["where"]
            self.bad(closing, f"cycle: {path} (this branch closes it)")
        if start is not None and not self.spec.broken and not self.spec.incomplete:
            reachable = nx.descendants(g, start) | {start}
            for node in self.spec.nodes.values():
                if node.id not in reachable:
                    self.bad(node.where, f"node '{node.id}' is unreachable from the start node '{start}'")
        return acyclic

    # variables and templates ----------------------------------------------------
    def possible_values(self) -> dict[str, list[str]]:
        values: dict[str, list[str]] = {}
        for node in self.spec.nodes.values():
            for var, value in node.set.items():
                values.setdefault(var, []).append(value)
            if node.sets:
                values.setdefault(node.sets, []).extend(node.options)
        return values

    def check_templates(self, g: nx.DiGraph, acyclic: bool) -> dict[tuple[str, str], Any]:
        base = set(RUNTIME_VARS) | set(self.spec.vars) | set(self.spec.inputs)
        bound: dict[str, set[str]] = {}
        if acyclic and self.spec.start in self.spec.nodes:
            for node_id in nx.topological_sort(g):
                preds = list(g.predecessors(node_id))
                if node_id == self.spec.start or not preds:
                    incoming = set(base)
                else:
                    incoming = None
                    for p in preds:
                        pnode = self.spec.nodes[p]
                        out = bound.get(p, set(base)) | set(pnode.set)
                        if pnode.sets:
                            out.add(pnode.sets)
                        incoming = out if incoming is None else incoming & out
                bound[node_id] = (incoming or set(base)) | set(self.spec.nodes[node_id].set)
        values = self.possible_values()
        samples = {var: (vals[0] if vals else var) for var, vals in values.items()}
        if self.spec.classes:
            samples.setdefault("obj", self.spec.classes[0])
        for var in self.spec.inputs:
            samples.setdefault(var, var)
        compiled: dict[tuple[str, str], Any] = {}
        if self.spec.preamble is not None:
            where = self.spec.where.get("preamble", Where(self.spec.file, 1, ("preamble",)))
            try:
                used = undeclared_variables(self.spec.preamble)
                template = compile_template(self.spec.preamble)
            except TemplateSyntaxError as exc:
                self.bad(where, f"template syntax error: {exc.message} (template line {exc.lineno})")
            else:
                for var in sorted(used - base):
                    self.bad(where, f"template uses '{var}', which the tree never provides before the first question "
                                    f"(available: {', '.join(sorted(base))})")
                if not used - base:
                    compiled[("(tree)", "preamble")] = template
        for node in self.spec.nodes.values():
            have = bound.get(node.id, base | set(node.set))
            fields = []
            if node.prompt is not None:
                fields.append(("ask" if node.kind == "ask" else "choose", node.prompt, have, node.at("ask" if node.kind == "ask" else "choose")))
            extra = {"artifact", "description"} | ({"value"} if node.kind == "probe" else set())
            if node.follow_up is not None:
                fields.append(("follow_up", node.follow_up.prompt, have | extra, node.follow_up.where))
                extra = extra | {node.follow_up.var}
            if node.explain is not None:
                fields.append(("explain", node.explain, have | extra, node.at("explain")))
            for name, source, available, where in fields:
                try:
                    used = undeclared_variables(source)
                    template = compile_template(source)
                except TemplateSyntaxError as exc:
                    self.bad(where, f"template syntax error: {exc.message} (template line {exc.lineno})", ("ask",) if name == "follow_up" else ())
                    continue
                missing = sorted(used - available)
                for var in missing:
                    provided = ", ".join(sorted(available))
                    self.bad(where, f"template uses '{var}', which the tree never provides here (available: {provided})", ("ask",) if name == "follow_up" else ())
                if missing:
                    continue
                scope = {**RUNTIME_VARS, **self.spec.vars, **samples, **node.set, "artifact": node.artifact or "",
                         "description": "", "value": 0.5}
                if node.follow_up is not None:
                    scope[node.follow_up.var] = "tail"
                try:
                    template.render(**scope)
                except TemplateError as exc:
                    self.bad(where, f"template fails to render: {exc}", ("ask",) if name == "follow_up" else ())
                    continue
                compiled[(node.id, name)] = template
        return compiled

    # regions -----------------------------------------------------------------------
    def check_regions(self) -> None:
        """Fallbacks exist and end somewhere; every region a node names is declared; every declared one is used."""
        regions, broken = self.spec.regions, self.spec.broken_regions
        known = set(regions) | broken
        if "regions" in self.spec.where and not known:
            self.bad(self.spec.where["regions"], "declares no regions; leave 'regions' out for the detector's box and mask")
        for r in regions.values():
            if r.fallback is None or r.fallback in broken:
                continue
            if r.fallback == r.name:
                self.bad(r.at("fallback"), f"region '{r.name}' falls back to itself")
            elif r.fallback not in regions:
                self.bad(r.at("fallback"), f"falls back to region '{r.fallback}', which is not declared"
                                           f"{self._suggest(r.fallback, regions)}")
        self._check_fallback_cycles()
        used: set[str] = set()
        for node in self.spec.nodes.values():
            refs: list[tuple[str, Where]] = []
            if node.region is not None:
                refs.append((node.region, node.at("region")))
            elif "region" in node.set and known:
                refs.append((node.set["region"], node.at("set")))
            if node.kind == "choose" and node.sets == "region" and known:
                refs += [(option, node.at("options")) for option in node.options]
            for name, where in refs:
                used.add(name)
                if name in known:
                    continue
                if not known:
                    self.bad(where, f"names region '{name}', but the tree declares no regions (add it under 'regions:')")
                else:
                    self.bad(where, f"undeclared region '{name}'{self._suggest(name, regions)}; "
                                    f"declared: {', '.join(sorted(regions))}")
        reached = set()
        for name in used & set(regions):
            while name in regions and name not in reached:  # a used region's fallbacks are used too
                reached.add(name)
                name = regions[name].fallback
        for r in regions.values():
            if r.name not in reached:
                self.bad(r.where, f"region '{r.name}' is declared but no node is about it "
                                  f"(give a node 'region: {r.name}', or use it as a fallback)")

    def _check_fallback_cycles(self) -> None:
        regions = self.spec.regions
        done: set[str] = set()
        for start in sorted(regions, key=lambda n: (regions[n].where.file, regions[n].where.line)):
            chain: list[str] = []
            name: str | None = start
            while name in regions and name not in done and name not in chain:
                chain.append(name)
                name = regions[name].fallback
            if name in chain and len(chain) - chain.index(name) > 1:
                cycle = chain[chain.index(name):]
                closing = regions[cycle[-1]]
                self.bad(closing.at("fallback"), f"fallback cycle: {' -> '.join(cycle + [name])} (this fallback closes it); "
                                                 f"a chain of fallbacks must end at a region that needs none, e.g. 'whole'")
            done.update(chain)

    def check_switch_vars(self) -> None:
        values = self.possible_values()
        for node in self.spec.nodes.values():
            if node.kind != "switch" or node.on is None:
                continue
            if node.on not in values and node.on not in self.spec.vars and node.on not in self.spec.inputs:
                self.bad(node.at("switch"), f"switches on '{node.on}', which no node sets (use 'sets' on a choice or 'set' on a node)")
            elif node.on != "obj" and node.on in values:
                for case in node.cases:
                    if case not in values[node.on]:
                        self.bad(node.at("cases"), f"case '{case}' is never a value of '{node.on}' (values: {', '.join(sorted(set(values[node.on])))})", (case,))


def compile_spec(spec: TreeSpec, catalogue: Catalogue | None = None) -> CompiledTree:
    problems: list[Problem] = []
    if catalogue is None:
        catalogue = spec.catalogue or builtin_catalogue()
    checker = _Checker(spec, catalogue)
    groups = checker.expand_groups()
    for node in spec.nodes.values():
        checker.check_node(node, groups)
    graph = checker.build_graph()
    acyclic = checker.check_structure(graph)
    checker.check_switch_vars()
    checker.check_regions()
    templates = checker.check_templates(graph, acyclic)
    problems.extend(checker.problems)
    if problems:
        raise TreeError(with_include_chain(problems, spec.included_from))
    applies = {}
    for node in spec.nodes.values():
        if node.applies_to is None:
            applies[node.id] = None
        else:
            members: set[str] = set()
            for name in node.applies_to:
                members |= groups.get(name, {name})
            applies[node.id] = frozenset(members)
    return CompiledTree(spec, graph, catalogue, templates, groups, applies)


def compile_tree(path: str | Path, catalogue: Catalogue | None = None,
                 include_paths: tuple[str | Path, ...] = ()) -> CompiledTree:
    """Parse, validate and compile a tree file. Raises :class:`TreeError` listing every problem.

    ``include_paths``: folders besides the tree's own that its includes and catalogue file may come from.
    """
    with _gc_paused():
        return _compile_tree(path, catalogue, include_paths)


@contextmanager
def _gc_paused():
    """Loading a big tree allocates a million long-lived objects and no cycles; CPython's cyclic collector
    would rescan the growing heap again and again (a 50,000-node tree validated 1.7x slower with it on)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            # The paused objects all sit in the youngest generation: the first collection after enable()
            # would scan every one of them (0.6-0.75 s for 50,000 nodes). freeze() + unfreeze() moves them to
            # the oldest generation, where long-lived data belongs; they stay collectable there.
            gc.freeze()
            gc.unfreeze()
            gc.enable()


def _compile_tree(path: str | Path, catalogue: Catalogue | None, include_paths: tuple[str | Path, ...]) -> CompiledTree:
    spec, problems = parse_tree(path, include_paths=include_paths)
    if spec is None or problems:
        # Reference checks on a half-parsed tree still find real problems; run
        # them so the author sees everything in one go.
        if spec is not None:
            try:
                compile_spec(spec, catalogue)
            except TreeError as more:
                problems = problems + more.problems
        raise TreeError(problems)
    return compile_spec(spec, catalogue)


@lru_cache(maxsize=None)
def default_tree_path() -> Path:
    """The shipped CIFAKE tree (package data, so an installed copy finds it)."""
    from importlib import resources

    return Path(str(resources.files("question_trees").joinpath("cifake.yaml")))
