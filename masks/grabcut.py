"""The no-training default: OpenCV GrabCut seeded from a centred rectangle.

CIFAR-like images put the object in the middle, so everything outside a
rectangle with a fixed margin is taken as sure background and GrabCut's
colour models sort out the inside.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

NOTE = "no mask checkpoint: using GrabCut seeded from a centred rectangle"


@dataclass(frozen=True)
class GrabCutConfig:
    margin: float = 0.1  # share of each side left outside the seed rectangle (tuned on the synthetic shapes)
    iterations: int = 5
    work_size: int = 128  # small inputs are upscaled so the seed rectangle has room; large ones are left alone
    seed: int = 0  # GrabCut's GMM init uses OpenCV's RNG; fixed so results repeat


def grabcut_mask(image: Image.Image, config: GrabCutConfig = GrabCutConfig()) -> np.ndarray:
    """RGB PIL image -> bool mask (H x W, input size), True on the object."""
    w, h = image.size
    rgb = np.asarray(image.convert("RGB"))
    scale = max(1.0, config.work_size / min(w, h))
    if scale > 1.0:
        rgb = cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_CUBIC)
    hh, ww = rgb.shape[:2]
    mx, my = max(1, round(ww * config.margin)), max(1, round(hh * config.margin))
    rect = (mx, my, max(1, ww - 2 * mx), max(1, hh - 2 * my))
    gc = np.zeros((hh, ww), np.uint8)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(config.seed)
    try:
        cv2.grabCut(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), gc, rect, bgd, fgd, config.iterations, cv2.GC_INIT_WITH_RECT)
    except cv2.error:
        # Degenerate input (e.g. a flat image: one colour cannot seed two models): call it all background.
        return np.zeros((h, w), bool)
    fg = ((gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)).astype(np.uint8)
    if (ww, hh) != (w, h):
        fg = cv2.resize(fg, (w, h), interpolation=cv2.INTER_NEAREST)
    return fg.astype(bool)
