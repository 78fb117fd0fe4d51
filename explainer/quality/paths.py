"""What the tree says about an artifact: the nodes that name it, the gates above it, its group.

Used to score a pair (image, artifact) from the questions a walk recorded, to
blame a gate for a missed artifact, and to label the yes/no questions of a walk
for calibration (a question's truth is whether its yes-branch leads to a
labelled artifact, exactly what the oracle answers).
"""

from __future__ import annotations

from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping

import networkx as nx

from explainer.errors import UsageError
from explainer.trees import compile_tree
from explainer.trees.compiler import CompiledTree, default_tree_path

SHIPPED_TREES = ("cifake.yaml", "direct.yaml")


class TreePaths:
    def __init__(self, tree: CompiledTree) -> None:
        self.tree = tree

    @cached_property
    def leaves(self) -> dict[str, tuple[str, ...]]:
        """artifact -> ids of the nodes that report it."""
        out: dict[str, list[str]] = {}
        for node in self.tree.spec.nodes.values():
            if node.artifact:
                out.setdefault(node.artifact, []).append(node.id)
        return {k: tuple(v) for k, v in out.items()}

    @cached_property
    def _ancestors(self) -> dict[str, frozenset[str]]:
        return {n: frozenset(nx.ancestors(self.tree.graph, n)) for n in self.tree.graph.nodes}

    def path_nodes(self, artifact: str) -> frozenset[str]:
        """Every node on some path from the start to a node reporting ``artifact`` (the leaves included)."""
        out: set[str] = set()
        for leaf in self.leaves.get(artifact, ()):
            out.add(leaf)
            out |= self._ancestors.get(leaf, frozenset())
        return frozenset(out)

    @cached_property
    def groups(self) -> dict[str, str]:
        """artifact -> the label of the gate (the nearest yes/no question above it), or its region node."""
        out: dict[str, str] = {}
        for artifact, leaves in self.leaves.items():
            labels: list[str] = []
            for leaf in leaves:
                label = "(asked directly)"
                for parent in self.tree.graph.predecessors(leaf):
                    node = self.tree.node(parent)
                    if node.kind in ("ask", "probe"):
                        label = node.label or node.id
                        break
                    if node.kind == "all" and node.label and parent != self.tree.start:
                        label = node.label
                if label not in labels:
                    labels.append(label)
            out[artifact] = " / ".join(labels)
        return out

    def label(self, node_id: str) -> str:
        node = self.tree.spec.nodes.get(node_id)
        return (node.label or node_id) if node else node_id

    def question_truth(self, node_id: str, scope: Mapping[str, Any], truth: Iterable[str]) -> bool | None:
        """Whether a yes/no node's answer should be yes for an image with artifacts ``truth`` (None: unknown node)."""
        node = self.tree.spec.nodes.get(node_id)
        if node is None or node.kind != "ask":
            return None
        full = {**self.tree.base_scope(), **{k: v for k, v in scope.items() if isinstance(v, str)}, **node.set}
        leads = {node.artifact} if node.artifact else set(self.tree.leads_to(node.if_yes.ids if node.if_yes else (), full))
        return bool(leads & set(truth))

    def ask_nodes(self, scope: Mapping[str, str]) -> list[tuple[str, dict[str, str]]]:
        """Every yes/no question a walk with ``scope`` could ask, all branches open, each with its scope.

        Choices whose variable is bound follow it; unbound ones open every
        option. Used by ``--ask-all`` and by contextual calibration.
        """
        out: list[tuple[str, dict[str, str]]] = []
        seen: set[tuple[str, tuple]] = set()
        stack = [(self.tree.start, {**self.tree.base_scope(), **scope})]
        while stack:
            node_id, sc = stack.pop()
            key = (node_id, tuple(sorted(sc.items())))
            if key in seen or not self.tree.applies(node_id, sc):
                continue
            seen.add(key)
            node = self.tree.node(node_id)
            sc = {**sc, **node.set}
            if node.kind == "ask":
                out.append((node_id, sc))
            for ids, child in self.tree._successors_all(node, sc):  # noqa: SLF001 - the compiler's own walk
                stack.extend((i, child) for i in reversed(ids))
        return out


@lru_cache(maxsize=1)
def shipped_trees() -> tuple[CompiledTree, ...]:
    return tuple(compile_tree(default_tree_path().parent / name) for name in SHIPPED_TREES)


def tree_for_run(tree_file: str | None, tree_name: str | None, node_ids: Iterable[str]) -> CompiledTree:
    """The tree a run was made with: --tree, else the shipped tree it names, else the one that knows its nodes."""
    if tree_file:
        return compile_tree(Path(tree_file))
    shipped = shipped_trees()
    for tree in shipped:
        if tree_name and tree.name == tree_name:
            return tree
    ids = set(node_ids)
    for tree in shipped:
        if ids and ids <= set(tree.spec.nodes):
            return tree
    if not ids:
        return shipped[0]
    raise UsageError("the run's questions come from a tree that is not shipped; give it with --tree FILE")
