"""``explain train features``: extract (or reuse) features, fit one head, score it, save the head folder."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from detectors.features.backbones import Backbone, load_backbone
from detectors.features.cache import cache_key, extract_features
from detectors.features.data import Split, load_splits
from detectors.features.heads import HEADS, check_head, fit_head, proba
from detectors.features.metrics import head_metrics
from detectors.features.persist import save_head
from detectors.features.plots import matrix_plot, roc_plot
from detectors.features.reduce import parse_reduction
from detectors.features.transforms import canonical
from detectors.progress import note
from explainer.errors import UsageError


@dataclass
class FeatureRun:
    """Where features come from; shared by training and every evaluation."""

    backbone: str
    transform: str = "none"
    cache_dir: str | None = "runs/feature-cache"
    batch_size: int = 32
    device: str = "cpu"
    seed: int = 0
    progress: bool = True


@dataclass
class TrainFeaturesConfig(FeatureRun):
    data_dir: str = ""
    out_dir: str = "runs/features"
    head: str = "logreg"
    reduction: str = "none"
    attribution: bool = False
    test_fraction: float = 0.2
    skipped: list[str] = field(default_factory=list)


def split_features(backbone: Backbone, split: Split, run: FeatureRun, transform: str | None = None,
                   label: str = "", skipped: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) for the readable images of a split; unreadable ones are noted and left out."""
    x, ok, bad = extract_features(
        backbone, split.paths, transform if transform is not None else run.transform, run.cache_dir,
        run.batch_size, run.progress, label,
    )
    for line in bad:
        note(f"skipped: {line}")
    if skipped is not None:
        skipped += bad
    y = split.labels[ok]
    if len(y) == 0:
        raise UsageError(f"no readable images in the {label or 'given'} split")
    return x, y


def train_features(cfg: TrainFeaturesConfig) -> dict:
    check_head(cfg.head)
    parse_reduction(cfg.reduction)
    transform = canonical(cfg.transform)
    train, test = load_splits(cfg.data_dir, cfg.attribution, cfg.test_fraction, cfg.seed)
    backbone = load_backbone(cfg.backbone, cfg.device)
    xtr, ytr = split_features(backbone, train, cfg, label="train", skipped=cfg.skipped)
    # The test split is scored clean: the transform is a training augmentation.
    xte, yte = split_features(backbone, test, cfg, transform="none", label="test", skipped=cfg.skipped)
    t0 = time.perf_counter()
    pipe = fit_head(cfg.head, cfg.reduction, xtr, ytr, cfg.seed)
    fit_s = time.perf_counter() - t0
    p = proba(pipe, xte)
    metrics = head_metrics(yte, p, train.classes)
    train_acc = float((np.argmax(proba(pipe, xtr), 1) == ytr).mean())
    out = Path(cfg.out_dir)
    meta = {
        "backbone": backbone.spec,
        "backbone_description": backbone.describe(),
        "feature_dim": int(xtr.shape[1]),
        "input_size": backbone.input_size(),
        "transform": transform,
        "cache_key": cache_key(backbone, transform),
        "head": cfg.head,
        "differentiable": HEADS[cfg.head][1],
        "reduction": cfg.reduction,
        "classes": train.classes,
        "task": "attribution" if cfg.attribution else "binary",
        "data_dir": str(Path(cfg.data_dir).resolve()),
        "n_train": int(len(ytr)),
        "n_test": int(len(yte)),
        "train_accuracy": train_acc,
        "metrics": metrics,
        "fit_seconds": fit_s,
        "seed": cfg.seed,
        "skipped": cfg.skipped,
    }
    save_head(out, pipe, meta)
    if len(train.classes) == 2:
        roc_plot({cfg.head: (yte, p[:, 1])}, f"{backbone.spec} + {cfg.head} (test)", out / "roc.png")
    conf = np.asarray(metrics["confusion"], dtype=float)
    matrix_plot(conf, train.classes, train.classes, "confusion (test)", out / "confusion.png",
                xlabel="predicted", ylabel="true", fmt="{:.0f}")
    return {"head_dir": str(out), **{k: meta[k] for k in ("backbone", "head", "reduction", "classes", "n_train", "n_test")},
            "metrics": metrics, "train_accuracy": train_acc}
