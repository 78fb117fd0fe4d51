"""The numbers ``explain eval detector`` reports, from scikit-learn."""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    classification_report,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

METRIC_NAMES = ("accuracy", "precision", "recall", "f1", "roc_auc", "ap")
CLASS_NAMES = ("real", "fake")


def binary_metrics(y_true: np.ndarray, p_fake: np.ndarray, threshold: float = 0.5) -> dict[str, float | None]:
    """Fake is the positive class. ROC-AUC and AP are None when only one class is present."""
    y_true = np.asarray(y_true).astype(int)
    p_fake = np.asarray(p_fake, dtype=np.float64)
    y_pred = (p_fake >= threshold).astype(int)
    out: dict[str, float | None] = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "precision": float(precision_score(y_true, y_pred, zero_division=0)),
        "recall": float(recall_score(y_true, y_pred, zero_division=0)),
        "f1": float(f1_score(y_true, y_pred, zero_division=0)),
        "roc_auc": None,
        "ap": None,
    }
    if len(np.unique(y_true)) == 2:
        out["roc_auc"] = float(roc_auc_score(y_true, p_fake))
        out["ap"] = float(average_precision_score(y_true, p_fake))
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in out.items()}


def class_report(y_true: np.ndarray, p_fake: np.ndarray, threshold: float = 0.5) -> dict:
    """Per-class precision, recall, F1 and support (scikit-learn's classification
    report) and the confusion matrix, rows = true class (real, fake), columns = predicted."""
    y_true = np.asarray(y_true).astype(int)
    y_pred = (np.asarray(p_fake, dtype=np.float64) >= threshold).astype(int)
    report = classification_report(
        y_true, y_pred, labels=[0, 1], target_names=list(CLASS_NAMES), output_dict=True, zero_division=0
    )
    per_class = {name: {k: float(v) for k, v in report[name].items()} for name in CLASS_NAMES}
    for name in per_class:
        per_class[name]["support"] = int(per_class[name]["support"])
    return {"per_class": per_class, "confusion_matrix": confusion_matrix(y_true, y_pred, labels=[0, 1]).tolist()}
