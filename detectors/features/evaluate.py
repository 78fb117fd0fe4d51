"""``explain eval features``: the grid, the train x test transform matrix, and the cross-dataset matrix.

All three write a Markdown table, a JSON file with every number, and PNG figures
into ``--out``. Features come from the on-disk cache whenever the backbone, the
transform and the image file are unchanged, so a second grid with new heads
does not touch the backbone.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from detectors.features.backbones import load_backbone, short_name
from detectors.features.data import load_splits
from detectors.features.heads import check_head, fit_head, proba
from detectors.features.metrics import fmt, head_metrics
from detectors.features.plots import matrix_plot, roc_plot, scatter_plots
from detectors.features.reduce import parse_reduction
from detectors.features.train import FeatureRun, split_features
from detectors.features.transforms import canonical
from explainer.errors import UsageError
from explainer.outputs.tables import Table
from explainer.safe_io import atomic_write_text


@dataclass
class EvalFeaturesConfig(FeatureRun):
    data_dirs: list[str] = field(default_factory=list)
    backbones: list[str] = field(default_factory=list)
    heads: list[str] = field(default_factory=lambda: ["logreg"])
    reductions: list[str] = field(default_factory=lambda: ["none"])
    out_dir: str = "runs/features-eval"
    attribution: bool = False
    test_fraction: float = 0.2
    plots: bool = True


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)[:80]


def _write(out: Path, stem: str, table: Table, record: dict) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / f"{stem}.md", f"## {table.title}\n\n{table.markdown()}\n")
    atomic_write_text(out / f"{stem}.json", json.dumps(record, indent=2, default=float) + "\n")
    return record


def _check(cfg: EvalFeaturesConfig) -> None:
    for h in cfg.heads:
        check_head(h)
    for r in cfg.reductions:
        parse_reduction(r)
    if not cfg.backbones:
        raise UsageError("give at least one --backbone")


def run_grid(cfg: EvalFeaturesConfig) -> dict:
    """Backbones x reductions x heads on one dataset."""
    _check(cfg)
    if len(cfg.data_dirs) != 1:
        raise UsageError("the grid takes one DATA folder (use --cross for several)")
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train, test = load_splits(cfg.data_dirs[0], cfg.attribution, cfg.test_fraction, cfg.seed)
    classes = train.classes
    rows, figures, skipped = [], [], []
    for spec in cfg.backbones:
        backbone = load_backbone(spec, cfg.device)
        spec = short_name(spec)
        xtr, ytr = split_features(backbone, train, cfg, label="train", skipped=skipped)
        xte, yte = split_features(backbone, test, cfg, transform="none", label="test", skipped=skipped)
        if cfg.plots:
            figures += [str(p) for p in scatter_plots(xte, yte, classes, f"{spec} (test)", out, f"scatter-{_slug(spec)}", cfg.seed)]
        for reduction in cfg.reductions:
            curves = {}
            for head in cfg.heads:
                t0 = time.perf_counter()
                pipe = fit_head(head, reduction, xtr, ytr, cfg.seed)
                fit_s = time.perf_counter() - t0
                p = proba(pipe, xte)
                m = head_metrics(yte, p, classes)
                rows.append({"backbone": spec, "backbone_spec": backbone.spec, "reduction": reduction, "head": head, "fit_seconds": fit_s,
                             "transform": canonical(cfg.transform), **m})
                if len(classes) == 2:
                    curves[head] = (yte, p[:, 1])
            if cfg.plots and curves:
                path = out / f"roc-{_slug(spec)}-{_slug(reduction)}.png"
                figures.append(str(roc_plot(curves, f"{spec}, reduction {reduction}", path)))
    best = max(rows, key=lambda r: (r["accuracy"], r["roc_auc"] or 0.0))
    if cfg.plots and len(classes) > 2:
        conf = np.asarray(best["confusion"], dtype=float)
        figures.append(str(matrix_plot(conf, classes, classes, f"confusion: {best['backbone']} + {best['head']}",
                                       out / "confusion-best.png", xlabel="predicted", ylabel="true", fmt="{:.0f}")))
    per_class_cols = [f"recall {c}" for c in classes]
    table = Table(f"Feature heads on {Path(cfg.data_dirs[0]).name} ({len(test)} test images, {', '.join(classes)})",
                  ["backbone", "reduction", "head", "accuracy", "AUC", "AP", "F1", *per_class_cols])
    for r in rows:
        table.add(r["backbone"], r["reduction"], r["head"], fmt(r["accuracy"]), fmt(r["roc_auc"]), fmt(r["ap"]),
                  fmt(r["f1"]), *(fmt(r["per_class"][c]["recall"]) for c in classes), bold=r is best)
    table.footer = "AUC/AP/F1: fake is the positive class" if len(classes) == 2 else "F1, AUC, AP: macro over classes (one-vs-rest)"
    record = {"kind": "grid", "data": cfg.data_dirs[0], "classes": classes, "transform": canonical(cfg.transform),
              "rows": rows, "best": {k: best[k] for k in ("backbone", "reduction", "head", "accuracy")},
              "figures": figures, "skipped": skipped}
    _write(out, "grid", table, record)
    record["table"] = table
    return record


def run_robustness(cfg: EvalFeaturesConfig, train_transforms: list[str], test_transforms: list[str]) -> dict:
    """Seed 002's study: every train transform against every test transform, one backbone, head and reduction."""
    _check(cfg)
    if len(cfg.backbones) != 1 or len(cfg.heads) != 1 or len(cfg.reductions) != 1:
        raise UsageError("--robustness takes one --backbone, one --head and one --reduce")
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tr_specs, te_specs = [canonical(t) for t in train_transforms], [canonical(t) for t in test_transforms]
    train, test = load_splits(cfg.data_dirs[0], cfg.attribution, cfg.test_fraction, cfg.seed)
    backbone = load_backbone(cfg.backbones[0], cfg.device)
    head, reduction = cfg.heads[0], cfg.reductions[0]
    skipped: list[str] = []
    test_sets = [split_features(backbone, test, cfg, transform=t, label="test", skipped=skipped) for t in te_specs]
    train_sets = [split_features(backbone, train, cfg, transform=t, label="train", skipped=skipped) for t in tr_specs]
    acc, auc = _score_matrix(train_sets, test_sets, head, reduction, train.classes, cfg.seed)
    title = f"Accuracy, train transform (rows) x test transform (columns): {short_name(backbone.spec)} + {head}, reduction {reduction}"
    table, figures = _matrix_outputs(cfg, acc, tr_specs, te_specs, title, out / "robustness.png", "test transform", "train transform")
    record = {"kind": "robustness", "data": cfg.data_dirs[0], "backbone": backbone.spec, "head": head, "reduction": reduction,
              "train_transforms": tr_specs, "test_transforms": te_specs, "accuracy": _nan_to_none(acc),
              "roc_auc": _nan_to_none(auc), "figures": figures, "skipped": skipped}
    _write(out, "robustness", table, record)
    record["table"] = table
    return record


def run_cross(cfg: EvalFeaturesConfig) -> dict:
    """Train on each dataset's train split, test on every dataset's test split (the diagonal is in-domain)."""
    _check(cfg)
    if len(cfg.data_dirs) < 2:
        raise UsageError("--cross needs at least two DATA folders")
    if len(cfg.backbones) != 1 or len(cfg.heads) != 1 or len(cfg.reductions) != 1:
        raise UsageError("--cross takes one --backbone, one --head and one --reduce")
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    backbone = load_backbone(cfg.backbones[0], cfg.device)
    head, reduction = cfg.heads[0], cfg.reductions[0]
    names = [Path(d).name or str(d) for d in cfg.data_dirs]
    if len(set(names)) != len(names):
        names = [str(d) for d in cfg.data_dirs]
    sets, classes, skipped = [], None, []
    for d, name in zip(cfg.data_dirs, names):
        train, test = load_splits(d, cfg.attribution, cfg.test_fraction, cfg.seed)
        if classes is not None and train.classes != classes:
            raise UsageError(f"{d}: classes {train.classes} differ from {classes} of {cfg.data_dirs[0]}")
        classes = train.classes
        sets.append((split_features(backbone, train, cfg, label=f"{name} train", skipped=skipped),
                     split_features(backbone, test, cfg, transform="none", label=f"{name} test", skipped=skipped)))
    acc, auc = _score_matrix([s[0] for s in sets], [s[1] for s in sets], head, reduction, classes, cfg.seed)
    title = f"Accuracy, trained on (rows) x tested on (columns): {short_name(backbone.spec)} + {head}, reduction {reduction}"
    table, figures = _matrix_outputs(cfg, acc, names, names, title, out / "cross.png", "tested on", "trained on")
    record = {"kind": "cross", "datasets": list(cfg.data_dirs), "names": names, "backbone": backbone.spec, "head": head,
              "reduction": reduction, "accuracy": _nan_to_none(acc), "roc_auc": _nan_to_none(auc), "figures": figures,
              "skipped": skipped}
    _write(out, "cross", table, record)
    record["table"] = table
    return record


def _score_matrix(train_sets: list, test_sets: list, head: str, reduction: str, classes: list[str], seed: int):
    """Accuracy and AUC of a head fitted on each train set (rows) and scored on each test set (columns)."""
    acc = np.full((len(train_sets), len(test_sets)), np.nan)
    auc = np.full_like(acc, np.nan)
    for i, (xtr, ytr) in enumerate(train_sets):
        pipe = fit_head(head, reduction, xtr, ytr, seed)
        for j, (xte, yte) in enumerate(test_sets):
            m = head_metrics(yte, proba(pipe, xte), classes)
            acc[i, j] = m["accuracy"]
            auc[i, j] = np.nan if m["roc_auc"] is None else m["roc_auc"]
    return acc, auc


def _matrix_outputs(cfg: EvalFeaturesConfig, acc: np.ndarray, rows: list[str], cols: list[str], title: str,
                    png: Path, xlabel: str, ylabel: str) -> tuple[Table, list[str]]:
    table = Table(title, ["train \\ test", *cols])
    for i, name in enumerate(rows):
        table.add(name, *(fmt(v) for v in acc[i]))
    figures = []
    if cfg.plots:
        figures.append(str(matrix_plot(acc, rows, cols, f"accuracy: {ylabel} x {xlabel}", png, xlabel=xlabel, ylabel=ylabel)))
    return table, figures


def _nan_to_none(m: np.ndarray) -> list[list[float | None]]:
    return [[None if not np.isfinite(v) else float(v) for v in row] for row in m]
