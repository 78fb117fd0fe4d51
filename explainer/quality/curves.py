"""Precision and recall as the P(yes) threshold moves, and the plots (matplotlib, PNG).

A pair (image, artifact) is reported at threshold t when every yes/no question
on its path that the walk recorded said P(yes) >= t, so its score is the
smallest of those P(yes). With ``--ask-all`` or ``--strategy direct`` every
question on the path is recorded and the curve is exact; from a plain tree walk,
a gate that said no hides what its members would have answered, and the curve
is what lowering the threshold on the recorded answers alone gives. A finding
made without a P(yes) (inferred) keeps its score from the gates above it; a
probe's answer and a follow-up's withdrawal count the same at every threshold. Pairs whose path was never reached cannot be reported
at any threshold but still count as positives.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from explainer.quality.gold import Gold
from explainer.quality.paths import TreePaths
from explainer.quality.runs import Run
from explainer.safe_io import atomic_write_bytes


def question_p(q: dict[str, Any]) -> float | None:
    p = q.get("p_calibrated")
    return q.get("p_yes") if p is None else p


def pair_scores(gold: Gold, run: Run, paths: TreePaths) -> tuple[np.ndarray, np.ndarray, int]:
    """(scores, is_true) of the reachable pairs, and the number of true pairs in all (for recall)."""
    scores, truth = [], []
    positives = 0
    for index in sorted(gold.images):
        if not run.covers(index):
            continue
        record = run.record(index)
        labelled = gold.images[index].artifacts
        positives += len(labelled)
        p_of: dict[str, float] = {}
        said_no = {q.get("node_id") for q in record.questions if q.get("answer") == "no" and not q.get("gated")}
        for q in record.questions:
            p, kind = question_p(q), q.get("kind")
            if kind == "probe":  # measured, not asked: the same at every threshold
                p = 1.0 if q.get("answer") == "yes" else 0.0
            elif kind == "follow_up" and paths.tree.spec.nodes.get(q.get("node_id", "")) is not None:
                node = paths.tree.node(q["node_id"])
                p = 1.0 if node.artifact in record.findings else 0.0  # not found after it: withdrawn
            elif kind != "yes_no" or p is None:
                continue
            p_of[q["node_id"]] = min(p, p_of.get(q["node_id"], 1.0))
        for artifact in paths.leaves:
            path = paths.path_nodes(artifact)
            on_path = [p_of[n] for n in path if n in p_of]
            leaf_seen = any(n in p_of for n in paths.leaves[artifact])
            # scored when its own question was answered, it was found, or a "no" above it hid it;
            # a member the walk skipped for another reason (not applicable to the class) is not a candidate
            if not (leaf_seen or artifact in record.findings or (on_path and path & said_no)):
                continue
            scores.append(min(on_path) if on_path else 1.0)
            truth.append(artifact in labelled)
    return np.asarray(scores, dtype=float), np.asarray(truth, dtype=bool), positives


def pr_curve(gold: Gold, run: Run, paths: TreePaths) -> dict[str, Any] | None:
    """Precision, recall and F1 at every distinct threshold; None when the run has no P(yes)."""
    if not run.has_questions:
        return None
    scores, truth, positives = pair_scores(gold, run, paths)
    if not len(scores) or not positives:
        return None
    order = np.argsort(-scores, kind="stable")
    s, t = scores[order], truth[order]
    tp = np.cumsum(t)
    fp = np.cumsum(~t)
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the last pair at each distinct threshold
    precision = tp[last] / (tp[last] + fp[last])
    recall = tp[last] / positives
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    best = int(np.argmax(f1))
    return {"thresholds": s[last].tolist(), "precision": precision.tolist(), "recall": recall.tolist(),
            "f1": f1.tolist(), "best": {"threshold": float(s[last][best]), "f1": float(f1[best]),
                                         "precision": float(precision[best]), "recall": float(recall[best])},
            "positives": positives}


def save_figure(fig, ax, path: Path, *, xlabel: str, ylabel: str, title: str, limit: float = 1.02,
                legend_size: int = 7) -> Path:
    """Label a unit-square plot, write it as PNG atomically, and free the figure."""
    import io

    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_xlim(0, limit)
    ax.set_ylim(0, limit)
    ax.set_title(title)
    ax.legend(fontsize=legend_size)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def _figure_bytes(fig) -> bytes:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def plot_f1_bars(evaluations: list[dict[str, Any]], path: Path, top: int = 40) -> Path:
    """Per-artifact F1, one bar per run, for the artifacts with the most support."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    support: dict[str, int] = {}
    for ev in evaluations:
        for row in ev["per_artifact"]:
            support[row["artifact"]] = max(support.get(row["artifact"], 0), row["support"])
    names = sorted(support, key=lambda a: (-support[a], a))[:top]
    fig, ax = plt.subplots(figsize=(8, 0.28 * len(names) + 1.5))
    height = 0.8 / max(len(evaluations), 1)
    for k, ev in enumerate(evaluations):
        f1 = {row["artifact"]: row["f1"] for row in ev["per_artifact"]}
        ax.barh(np.arange(len(names)) + k * height, [f1.get(a, 0.0) for a in names], height=height, label=ev["run"])
    ax.set_yticks(np.arange(len(names)) + 0.4 - height / 2, [f"{a} ({support[a]})" for a in names], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("F1 (support in brackets)")
    ax.set_title("Explanation F1 per artifact")
    ax.legend(fontsize=8, loc="lower right")
    data = _figure_bytes(fig)
    plt.close(fig)
    return atomic_write_bytes(path, data)


def plot_pr(curves: dict[str, dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for name, c in curves.items():
        ax.plot(c["recall"], c["precision"], marker=".", markersize=3, label=f"{name} (best F1 {c['best']['f1']:.2f}"
                f" at P(yes) ≥ {c['best']['threshold']:.2f})")
    return save_figure(fig, ax, path, xlabel="recall", ylabel="precision",
                       title="Precision-recall over the P(yes) threshold")
