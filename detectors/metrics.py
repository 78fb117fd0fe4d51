"""The six numbers ``explain eval detector`` reports, from scikit-learn."""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import accuracy_score, average_precision_score, f1_score, precision_score, recall_score, roc_auc_score

METRIC_NAMES = ("accuracy", "precision", "recall", "f1", "roc_auc", "ap")


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
