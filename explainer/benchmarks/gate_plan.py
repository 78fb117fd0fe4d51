"""Gate hierarchies over exchangeable artifacts: the exact expected number of questions, and the cheapest one.

The engine's rule for a gate (``if_yes: {at_least_one: [...]}``, see
``explainer/engine/runner.py``): once the gate says yes, every member but the
last is asked at once; the last is *inferred* yes when they all said no (an
inferred gate is entered without its question, an inferred artifact is a
finding) and asked in the next round otherwise. A region's root is an ``all``
of top-level members, each asked.

With every artifact present independently with probability ``p``, the expected
number of questions of a hierarchy has a closed form (``expected_questions``),
so the cost-growth table can give exact expectations beside the sampled walks.
``cheapest_hierarchy`` finds, by dynamic programming over group sizes, the
hierarchy with the fewest expected questions. Its splits come out near the
golden ratio (Fibonacci sizes: 13 asked, 21 held back): asking the smaller
part first makes a "no" (the likelier answer) settle the most. Allowing
three-way gates found nothing cheaper for 2 to 100 artifacts at the benchmark's
p (checked when this was written; ``tests/test_growth.py`` checks it by brute
force on small groups), so the search is over two-way splits, O(n^2).

A hierarchy is an artifact (any hashable that is not a tuple) or a tuple of
two or more hierarchies, asked in order, the last one held back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

Hierarchy = Any  # an artifact, or a tuple of Hierarchy


@dataclass(frozen=True)
class _Cost:
    size: int
    asked: float  # expected questions when the node's own question is asked (a gate or an artifact)
    known_yes: float  # expected questions below it once it is known to hold at least one artifact


def _cost(node: Hierarchy, p: float) -> _Cost:
    if not isinstance(node, tuple):
        return _Cost(1, 1.0, 0.0)
    if len(node) < 2:
        raise ValueError(f"a gate needs at least two members, got {len(node)}")
    q = 1.0 - p
    children = [_cost(c, p) for c in node]
    size = sum(c.size for c in children)
    p_node = 1.0 - q ** size
    *asked, last = children
    below = sum(1.0 + (1.0 - q ** c.size) / p_node * c.known_yes for c in asked)
    rest = size - last.size
    below += q ** rest * (1.0 - q ** last.size) / p_node * last.known_yes  # all asked said no: last inferred
    below += (1.0 - q ** rest) / p_node * last.asked  # some said yes: the last is asked, knowing nothing of it
    return _Cost(size, 1.0 + p_node * below, below)


def expected_questions(roots: Sequence[Hierarchy], p: float) -> float:
    """Expected questions under a root ``all`` of ``roots`` (each asked), every artifact present with ``p``."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    return sum(_cost(r, p).asked for r in roots)


@dataclass(frozen=True)
class GatePlan:
    """The cheapest hierarchy's sizes for every group size up to ``n``: ``split[m]`` members are asked first."""

    p: float
    split: np.ndarray  # split[m]: size of the asked part of a gate over m (m >= 2)
    roots: tuple[int, ...]  # sizes of the root's members
    expected: float  # expected questions under the root

    def build(self, artifacts: Sequence[Any]) -> list[Hierarchy]:
        """Lay ``artifacts`` (in order) into the planned hierarchy; returns the root's members."""
        if len(artifacts) != sum(self.roots):
            raise ValueError(f"the plan is for {sum(self.roots)} artifacts, got {len(artifacts)}")

        def gate(items: Sequence[Any]) -> Hierarchy:
            if len(items) == 1:
                return items[0]
            s = int(self.split[len(items)])
            return (gate(items[:s]), gate(items[s:]))

        out, at = [], 0
        for size in self.roots:
            out.append(gate(artifacts[at : at + size]))
            at += size
        return out


def cheapest_hierarchy(n: int, p: float) -> GatePlan:
    """The fewest expected questions over ``n`` artifacts present independently with ``p`` (two-way gates)."""
    if n < 1:
        raise ValueError(f"need at least one artifact, got {n}")
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    q = 1.0 - p
    qs = q ** np.arange(n + 1)  # qs[m]: no artifact among m
    pos = 1.0 - qs  # pos[m]: at least one among m
    asked = np.zeros(n + 1)  # as in _Cost
    known = np.zeros(n + 1)
    split = np.zeros(n + 1, dtype=np.int64)
    asked[1] = 1.0
    for m in range(2, n + 1):
        s = np.arange(1, m)  # the asked part; the held-back part is m - s
        cost = (1.0 + pos[s] / pos[m] * known[s] + qs[s] * pos[m - s] / pos[m] * known[m - s]
                + pos[s] / pos[m] * asked[m - s])
        best = int(np.argmin(cost))
        split[m], known[m] = best + 1, cost[best]
        asked[m] = 1.0 + pos[m] * known[m]
    # the root's members: the cheapest way to cut n into groups, each asked
    total = np.full(n + 1, np.inf)
    total[0] = 0.0
    cut = np.zeros(n + 1, dtype=np.int64)
    for m in range(1, n + 1):
        s = np.arange(1, m + 1)
        cost = total[m - s] + asked[s]
        best = int(np.argmin(cost))
        cut[m], total[m] = best + 1, cost[best]
    roots, m = [], n
    while m:
        roots.append(int(cut[m]))
        m -= int(cut[m])
    return GatePlan(p=p, split=split, roots=tuple(sorted(roots)), expected=float(total[n]))
