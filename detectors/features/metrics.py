"""Scores of a head on held-out features: accuracy, AUC, AP, F1, per class, and the confusion matrix.

Binary (real = 0, fake = 1): AUC, AP and F1 take fake as the positive class.
N-way (attribution): macro F1, one-vs-rest macro AUC and macro AP; AUC and AP
are None when a class is missing from the test set.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    classification_report,
    confusion_matrix,
    f1_score,
    roc_auc_score,
)

SUMMARY = ("accuracy", "roc_auc", "ap", "f1")


def head_metrics(y: np.ndarray, p: np.ndarray, classes: list[str]) -> dict:
    y = np.asarray(y).astype(int)
    labels = list(range(len(classes)))
    pred = np.argmax(p, axis=1)
    binary = len(classes) == 2
    present = set(np.unique(y).tolist())
    out: dict = {"n": int(len(y)), "accuracy": float(accuracy_score(y, pred)), "roc_auc": None, "ap": None}
    out["f1"] = float(f1_score(y, pred, average="binary" if binary else "macro", labels=labels, zero_division=0))
    if binary and present == {0, 1}:
        out["roc_auc"] = float(roc_auc_score(y, p[:, 1]))
        out["ap"] = float(average_precision_score(y, p[:, 1]))
    elif not binary and present == set(labels):
        out["roc_auc"] = float(roc_auc_score(y, p, multi_class="ovr", average="macro", labels=labels))
        out["ap"] = float(average_precision_score(np.eye(len(classes))[y], p, average="macro"))
    report = classification_report(y, pred, labels=labels, target_names=classes, output_dict=True, zero_division=0)
    out["per_class"] = {
        c: {k: (int(v) if k == "support" else float(v)) for k, v in report[c].items()} for c in classes
    }
    out["confusion"] = confusion_matrix(y, pred, labels=labels).tolist()
    return out


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
