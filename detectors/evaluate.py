"""Scoring a trained detector on a CIFAKE-layout split, clean and under FGSM."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from detectors.classifier import Classifier, load_classifier
from detectors.data import load_split
from detectors.fgsm import DEFAULT_EPS, fgsm
from detectors.metrics import binary_metrics
from detectors.progress import make_progress
from detectors.sr.load import SuperResolver, load_sr


def prepare_batch(x_uint8: torch.Tensor, sr: SuperResolver, image_size: int, device: torch.device | str) -> torch.Tensor:
    """uint8 LR batch -> float [0,1] SR batch at ``image_size`` on ``device``."""
    x = x_uint8.to(device).float().div_(255.0)
    x = sr(x)
    if x.shape[-1] != image_size or x.shape[-2] != image_size:
        x = F.interpolate(x, size=(image_size, image_size), mode="bicubic", align_corners=False, antialias=True).clamp_(0, 1)
    return x


def predict(
    model: Classifier,
    sr: SuperResolver,
    x_uint8: torch.Tensor,
    y: torch.Tensor,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    fgsm_eps: float | None = None,
    seed: int = 0,
    description: str | None = None,
) -> np.ndarray:
    """P(fake) per image; with ``fgsm_eps`` each batch is attacked first."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    probs: list[np.ndarray] = []
    progress = make_progress() if description else None
    task = progress.add_task(description, total=len(x_uint8), info="") if progress else None
    if progress:
        progress.start()
    try:
        for i in range(0, len(x_uint8), batch_size):
            x = prepare_batch(x_uint8[i : i + batch_size], sr, model.config.image_size, device)
            yb = y[i : i + batch_size].to(device)
            if fgsm_eps:
                x = fgsm(model, x, yb, eps=fgsm_eps, generator=gen)
            with torch.no_grad():
                probs.append(torch.sigmoid(model(x)).cpu().numpy())
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
    batch_size: int = 64
    device: str = "cpu"
    seed: int = 0
    progress: bool = True


def evaluate_detector(cfg: EvalConfig) -> dict[str, Any]:
    model, meta = load_classifier(cfg.checkpoint, cfg.device)
    sr_path = cfg.sr_weights if cfg.sr_weights is not None else meta.get("sr_weights")
    sr = load_sr(sr_path, cfg.device)
    eps = cfg.fgsm_eps if cfg.fgsm_eps is not None else meta.get("fgsm_eps", DEFAULT_EPS) or DEFAULT_EPS
    x, y = load_split(cfg.data_dir, cfg.split, model.config.lr_size)
    desc = (lambda s: s) if cfg.progress else (lambda s: None)
    clean = predict(model, sr, x, y, cfg.batch_size, cfg.device, None, cfg.seed, desc(f"eval {cfg.split} clean"))
    result: dict[str, Any] = {
        "checkpoint": str(Path(cfg.checkpoint)),
        "split": cfg.split,
        "n": int(len(y)),
        "n_fake": int(y.sum().item()),
        "sr_method": sr.method,
        "clean": binary_metrics(y.numpy(), clean),
    }
    if eps:
        adv = predict(model, sr, x, y, cfg.batch_size, cfg.device, eps, cfg.seed, desc(f"eval {cfg.split} FGSM"))
        result["fgsm_eps"] = float(eps)
        result["fgsm"] = binary_metrics(y.numpy(), adv)
    return result
