"""Gating loss: for each labelled artifact a walk missed, which answer on its path lost it.

The first "no" on the artifact's path (in round order) is to blame: a gate
(a question above the artifact) or the artifact's own question. A path with no
question asked was cut by a choice (the class or the region went elsewhere).
Answers recorded by ``--ask-all`` beyond the walk do not count: they did not
decide anything.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from explainer.quality.gold import Gold
from explainer.quality.paths import TreePaths
from explainer.quality.runs import Run


def blame(paths: TreePaths, artifact: str, questions: list[dict[str, Any]]) -> tuple[str, str, str]:
    """(kind, node id, detail) of what lost ``artifact`` in one walk."""
    on_path = paths.path_nodes(artifact)
    if not on_path:
        return "not in the tree", "", "the tree has no node for this artifact"
    asked = [q for q in questions if q.get("node_id") in on_path and not q.get("gated")]
    leaves = set(paths.leaves.get(artifact, ()))
    for q in sorted((q for q in asked if q.get("kind") == "yes_no" and q.get("answer") == "no"),
                    key=lambda q: q.get("round", 0)):
        kind = "artifact question" if q["node_id"] in leaves else "gate"
        return kind, q["node_id"], f"P(yes) {q.get('p_calibrated', q.get('p_yes'))}"
    for q in asked:
        if q.get("kind") == "follow_up" and q.get("node_id") in leaves:
            return "withdrawn by follow-up", q["node_id"], f"answered '{q.get('answer')}'"
    choices = [q for q in questions if q.get("kind") == "choice" and q.get("node_id") in on_path]
    if choices:
        q = choices[-1]
        return "branch not taken", q["node_id"], f"chose '{q.get('answer')}'"
    if asked:
        return "other", asked[-1]["node_id"], "a question on its path was asked but none said no"
    return "not reached", "", "no question on its path was asked"


def gating_loss(gold: Gold, run: Run, paths: TreePaths) -> dict[str, Any] | None:
    """Missed labelled artifacts grouped by the answer that lost them; None for a run without questions."""
    if not run.has_questions:
        return None
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    missed = 0
    for index, record in run.images.items():
        for artifact in sorted(gold.images[index].artifacts - set(record.findings)):
            missed += 1
            if record.predicted_real:
                kind, node_id = "predicted real", ""
            else:
                kind, node_id, _ = blame(paths, artifact, record.questions)
            row = rows.setdefault((kind, node_id), {"kind": kind, "node_id": node_id,
                                                    "label": paths.label(node_id) if node_id else "",
                                                    "missed": 0, "artifacts": Counter()})
            row["missed"] += 1
            row["artifacts"][artifact] += 1
    out = []
    for row in sorted(rows.values(), key=lambda r: (-r["missed"], r["kind"], r["node_id"])):
        out.append({**row, "share": row["missed"] / missed, "artifacts": dict(row["artifacts"].most_common())})
    return {"missed": missed, "by_cause": out}
