"""Scoring a trained detector on a CIFAKE-layout split: clean, under FGSM, and plotted.

The attack perturbs the 32-px image explain is given (see :mod:`detectors.pipeline`);
``--fgsm-sweep`` scores several budgets so the report shows where an attacker's
budget starts to exceed what the detector relies on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from detectors.classifier import load_classifier
from detectors.data import load_split
from detectors.fgsm import DEFAULT_EPS, fgsm
from detectors.metrics import binary_metrics, class_report
from detectors.pipeline import LRPipeline
from detectors.progress import make_progress, note
from detectors.sr.load import load_sr

DEFAULT_SWEEP = (0.5 / 255, 1 / 255, 2 / 255, 4 / 255, 8 / 255)


def predict(
    pipeline: torch.nn.Module,
    x_uint8: torch.Tensor,
    y: torch.Tensor,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    fgsm_eps: float | None = None,
    seed: int = 0,
    description: str | None = None,
) -> np.ndarray:
    """P(fake) per LR image through ``pipeline`` (an :class:`~detectors.pipeline.LRPipeline`);
    with ``fgsm_eps`` each batch is attacked first."""
    pipeline.eval()
    gen = torch.Generator().manual_seed(seed)
    probs: list[np.ndarray] = []
    progress = make_progress() if description else None
    task = progress.add_task(description, total=len(x_uint8), info="") if progress else None
    if progress:
        progress.start()
    try:
        for i in range(0, len(x_uint8), batch_size):
            x = x_uint8[i : i + batch_size].to(device).float().div_(255.0)
            yb = y[i : i + batch_size].to(device)
            if fgsm_eps:
                x = fgsm(pipeline, x, yb, eps=fgsm_eps, generator=gen)
            with torch.no_grad():
                probs.append(torch.sigmoid(pipeline(x)).cpu().numpy())
            if progress:
                progress.update(task, advance=len(yb))
    finally:
        if progress:
            progress.stop()
    return np.concatenate(probs) if probs else np.zeros(0)


@dataclass
class EvalConfig:
    data_dir: str
    checkpoint: str
    split: str = "test"
    sr_weights: str | None = None  # None: what the checkpoint was trained with
    fgsm_eps: float | None = None  # None: the checkpoint's, else 8/255; 0 skips
    fgsm_sweep: tuple[float, ...] = ()  # extra budgets to score (accuracy and AUC per eps)
    batch_size: int = 64
    device: str = "cpu"
    seed: int = 0
    progress: bool = True
    plots_dir: str | None = None  # ROC, PR and confusion-matrix PNGs go here


def evaluate_detector(cfg: EvalConfig) -> dict[str, Any]:
    model, meta = load_classifier(cfg.checkpoint, cfg.device)
    sr_path = cfg.sr_weights if cfg.sr_weights is not None else meta.get("sr_weights")
    sr = load_sr(sr_path, cfg.device)
    pipeline = LRPipeline(model, sr).to(cfg.device)
    recorded = meta.get("fgsm_eps")
    recorded = recorded if type(recorded) in (int, float) and 0 < recorded <= 1 else None
    eps = cfg.fgsm_eps if cfg.fgsm_eps is not None else (recorded or DEFAULT_EPS)
    x, y = load_split(cfg.data_dir, cfg.split, model.config.lr_size, warn=note)
    desc = (lambda s: s) if cfg.progress else (lambda s: None)
    clean = predict(pipeline, x, y, cfg.batch_size, cfg.device, None, cfg.seed, desc(f"eval {cfg.split} clean"))
    labels = y.numpy()
    result: dict[str, Any] = {
        "checkpoint": str(Path(cfg.checkpoint)),
        "split": cfg.split,
        "n": int(len(y)),
        "n_fake": int(y.sum().item()),
        "sr_method": sr.method,
        "attack_space": f"{model.config.lr_size} px input, before the upscale",
        "clean": binary_metrics(labels, clean),
        "report": class_report(labels, clean),
    }
    curves = {"clean": clean}
    if eps:
        adv = predict(pipeline, x, y, cfg.batch_size, cfg.device, eps, cfg.seed, desc(f"eval {cfg.split} FGSM"))
        result["fgsm_eps"] = float(eps)
        result["fgsm"] = binary_metrics(labels, adv)
        result["report_fgsm"] = class_report(labels, adv)
        curves[f"FGSM {eps * 255:.3g}/255"] = adv
    sweep = []
    for e in cfg.fgsm_sweep:
        p = predict(pipeline, x, y, cfg.batch_size, cfg.device, e, cfg.seed, desc(f"eval FGSM {e * 255:.3g}/255"))
        m = binary_metrics(labels, p)
        sweep.append({"eps": float(e), "eps_255": round(e * 255, 4), "accuracy": m["accuracy"], "roc_auc": m["roc_auc"]})
    if sweep:
        result["fgsm_sweep"] = sweep
    if cfg.plots_dir:
        from detectors.plots import plot_confusion, plot_pr, plot_roc

        out = Path(cfg.plots_dir)
        out.mkdir(parents=True, exist_ok=True)
        title = f"{meta.get('backbone')} on {cfg.split} ({len(y)} images)"
        result["plots"] = {
            "roc": str(plot_roc(labels, curves, out / "roc.png", title)),
            "pr": str(plot_pr(labels, curves, out / "pr.png", title)),
            "confusion": str(plot_confusion(result["report"]["confusion_matrix"], out / "confusion.png", title)),
        }
    return result
