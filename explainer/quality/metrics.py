"""Explanation scores: per artifact, micro and macro, per region and per group, false alarms, bootstrap.

A unit is a pair (image, artifact). Gold says which pairs are true; a run says
which it reported. Precision, recall and F1 per artifact and their micro/macro
averages come from scikit-learn on the image × artifact indicator matrices
(macro over the artifacts labelled or reported at least once, as scikit-learn
does for the labels it is given).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import precision_recall_fscore_support

from explainer.quality.gold import Gold
from explainer.quality.runs import Run

UNSPECIFIED_REGION = "(unspecified)"


def prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f}


@dataclass
class Pairs:
    """The scored images of one run against gold, as aligned indicator matrices."""

    indexes: list[int]
    labels: list[str]
    truth: np.ndarray  # images × labels, bool
    pred: np.ndarray

    def per_image_counts(self) -> np.ndarray:
        """images × (tp, fp, fn), for the bootstrap."""
        tp = (self.truth & self.pred).sum(1)
        fp = (~self.truth & self.pred).sum(1)
        fn = (self.truth & ~self.pred).sum(1)
        return np.stack([tp, fp, fn], axis=1)


def align(gold: Gold, run: Run, labels: list[str] | None = None) -> Pairs:
    indexes = sorted(i for i in gold.images if run.covers(i))
    if labels is None:
        seen = set().union(*(gold.images[i].artifacts for i in indexes), *(run.record(i).findings for i in indexes)) \
            if indexes else set()
        labels = sorted(seen)
    col = {a: j for j, a in enumerate(labels)}
    truth = np.zeros((len(indexes), len(labels)), dtype=bool)
    pred = np.zeros_like(truth)
    for r, i in enumerate(indexes):
        for a in gold.images[i].artifacts:
            truth[r, col[a]] = True
        for a in run.record(i).findings:
            if a in col:
                pred[r, col[a]] = True
    return Pairs(indexes, labels, truth, pred)


def _region_rows(gold: Gold, run: Run, indexes: list[int]) -> list[dict[str, Any]]:
    # a pair's region: where the label puts it, else where the run found it
    counts: dict[str, list[int]] = {}
    for i in indexes:
        g, rec = gold.images[i], run.record(i)
        for a in g.artifacts | set(rec.findings):
            region = g.regions.get(a) or rec.findings.get(a) or (rec.region if a in rec.findings else None) \
                or UNSPECIFIED_REGION
            c = counts.setdefault(region, [0, 0, 0])
            c[0 if (a in g.artifacts and a in rec.findings) else 1 if a in rec.findings else 2] += 1
    return [{"region": k, "support": tp + fn, "tp": tp, "fp": fp, "fn": fn, **prf(tp, fp, fn)}
            for k, (tp, fp, fn) in sorted(counts.items())]


def _group_rows(per_artifact: list[dict[str, Any]]) -> list[dict[str, Any]]:
    counts: dict[str, list[int]] = {}
    for row in per_artifact:
        c = counts.setdefault(row["group"], [0, 0, 0])
        c[0] += row["tp"]
        c[1] += row["fp"]
        c[2] += row["fn"]
    rows = [{"group": k, "support": tp + fn, "tp": tp, "fp": fp, "fn": fn, **prf(tp, fp, fn)}
            for k, (tp, fp, fn) in counts.items()]
    return sorted(rows, key=lambda r: (-r["support"], r["group"]))


def evaluate(gold: Gold, run: Run, groups: dict[str, str] | None = None) -> dict[str, Any]:
    """Every table for one run, as plain data (the JSON output; Markdown is rendered from it).

    ``groups`` maps an artifact to its group (the gate above it in the question tree).
    """
    pairs = align(gold, run)
    notes: list[str] = []
    skipped = dict(run.skipped)
    not_covered = sum(1 for i in gold.images if not run.covers(i))
    if not_covered:
        skipped["gold image not in the run"] = not_covered
    if run.kind == "task2":
        notes.append("scored from task2.json: a gold image it does not list counts as explained with no artifact")
    if pairs.labels and pairs.indexes:
        p, r, f, s = precision_recall_fscore_support(pairs.truth, pairs.pred, average=None, zero_division=0)
        micro = precision_recall_fscore_support(pairs.truth, pairs.pred, average="micro", zero_division=0)
        macro = precision_recall_fscore_support(pairs.truth, pairs.pred, average="macro", zero_division=0)
    else:
        p = r = f = s = np.zeros(0)
        micro = macro = (0.0, 0.0, 0.0, None)
    tp = (pairs.truth & pairs.pred).sum(0)
    fp = (~pairs.truth & pairs.pred).sum(0)
    fn = (pairs.truth & ~pairs.pred).sum(0)
    groups = groups or {}
    per_artifact = [{"artifact": a, "group": groups.get(a, "(not in the tree)"), "support": int(s[j]),
                     "predicted": int(tp[j] + fp[j]), "tp": int(tp[j]), "fp": int(fp[j]), "fn": int(fn[j]),
                     "precision": float(p[j]), "recall": float(r[j]), "f1": float(f[j])}
                    for j, a in enumerate(pairs.labels)]
    per_artifact.sort(key=lambda row: (-row["support"], -row["predicted"], row["artifact"]))
    empty = [k for k, i in enumerate(pairs.indexes) if not gold.images[i].artifacts]
    alarms = pairs.pred[empty].sum(1) if empty else np.zeros(0)
    return {
        "run": run.name, "source": run.source, "kind": run.kind, "images": len(pairs.indexes),
        "images_labelled_with_artifacts": len(pairs.indexes) - len(empty),
        "micro": {"precision": float(micro[0]), "recall": float(micro[1]), "f1": float(micro[2]),
                  "tp": int(tp.sum()), "fp": int(fp.sum()), "fn": int(fn.sum())},
        "macro": {"precision": float(macro[0]), "recall": float(macro[1]), "f1": float(macro[2]),
                  "artifacts": len(pairs.labels)},
        "per_artifact": per_artifact,
        "per_region": _region_rows(gold, run, pairs.indexes),
        "per_group": _group_rows(per_artifact),
        "no_artifact_images": {"images": len(empty), "with_false_alarm": int((alarms > 0).sum()),
                               "false_alarm_rate": float((alarms > 0).mean()) if len(empty) else None,
                               "false_findings_per_image": float(alarms.mean()) if len(empty) else None},
        "skipped": skipped, "notes": notes, "calibration": run.calibration,
    }


def micro_f1_of_counts(counts: np.ndarray) -> np.ndarray:
    """Micro F1 from summed (tp, fp, fn) along the last axis; 0 where undefined."""
    tp, fp, fn = counts[..., 0], counts[..., 1], counts[..., 2]
    denom = 2 * tp + fp + fn
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)


def paired_bootstrap(gold: Gold, a: Run, b: Run, samples: int = 2000, seed: int = 0,
                     confidence: float = 0.95) -> dict[str, Any]:
    """CI on micro-F1(b) - micro-F1(a), resampling the images both runs cover (the same draw for both)."""
    common_idx = [i for i in sorted(gold.images) if a.covers(i) and b.covers(i)]
    labels = sorted(set().union(*(gold.images[i].artifacts | set(a.record(i).findings) | set(b.record(i).findings)
                                  for i in common_idx))) if common_idx else []
    restrict = {i: gold.images[i] for i in common_idx}
    sub = Gold(gold.source, restrict)
    ca = align(sub, a, labels).per_image_counts()
    cb = align(sub, b, labels).per_image_counts()
    out = {"baseline": a.name, "other": b.name, "images": len(common_idx), "samples": samples, "seed": seed,
           "confidence": confidence}
    if not common_idx:
        return {**out, "f1_difference": None, "ci_low": None, "ci_high": None}
    diff = float(micro_f1_of_counts(cb.sum(0)) - micro_f1_of_counts(ca.sum(0)))
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(common_idx), size=(samples, len(common_idx)))
    boot = micro_f1_of_counts(cb[draws].sum(1)) - micro_f1_of_counts(ca[draws].sum(1))
    lo, hi = np.quantile(boot, [(1 - confidence) / 2, 1 - (1 - confidence) / 2])
    return {**out, "f1_difference": diff, "ci_low": float(lo), "ci_high": float(hi),
            "p_b_not_better": float((boot <= 0).mean())}
