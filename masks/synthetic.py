"""Synthetic shapes on textured backgrounds, with exact masks.

Used by the tests and the benchmark (and handy for trying the trainer): each
sample is a centred circle, ellipse, rectangle or blob on noise, stripes, a
gradient or a checkerboard, with the ground-truth mask drawn from the same
geometry.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

SHAPES = ("circle", "ellipse", "rectangle", "blob")
BACKGROUNDS = ("noise", "stripes", "gradient", "checker")


def _colour_far_from(rng: np.random.Generator, others: list[np.ndarray], min_dist: float = 120.0) -> np.ndarray:
    best, best_d = None, -1.0
    for _ in range(50):
        c = rng.integers(0, 256, size=3).astype(np.float32)
        d = min(float(np.linalg.norm(c - o)) for o in others) if others else 1e9
        if d >= min_dist:
            return c
        if d > best_d:
            best, best_d = c, d
    return best  # type: ignore[return-value]


def _background(rng: np.random.Generator, size: int, kind: str, c1: np.ndarray, c2: np.ndarray) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    if kind == "noise":
        t = rng.random((size // 4, size // 4)).astype(np.float32)
        t = cv2.resize(t, (size, size), interpolation=cv2.INTER_LINEAR)
    elif kind == "stripes":
        angle = rng.uniform(0, np.pi)
        freq = rng.uniform(4, 10)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (np.cos(angle) * xx + np.sin(angle) * yy))
    elif kind == "gradient":
        angle = rng.uniform(0, 2 * np.pi)
        t = np.cos(angle) * xx + np.sin(angle) * yy
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    else:  # checker
        cells = int(rng.integers(4, 10))
        t = ((np.floor(xx * cells) + np.floor(yy * cells)) % 2).astype(np.float32)
    img = c1[None, None, :] * (1 - t[..., None]) + c2[None, None, :] * t[..., None]
    return img


def _shape_mask(rng: np.random.Generator, size: int, kind: str) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    cx = size / 2 + rng.uniform(-0.08, 0.08) * size
    cy = size / 2 + rng.uniform(-0.08, 0.08) * size
    r = rng.uniform(0.18, 0.3) * size
    if kind == "circle":
        cv2.circle(mask, (round(cx), round(cy)), round(r), 255, -1)
    elif kind == "ellipse":
        axes = (round(r), round(r * rng.uniform(0.55, 0.85)))
        cv2.ellipse(mask, (round(cx), round(cy)), axes, float(rng.uniform(0, 180)), 0, 360, 255, -1)
    elif kind == "rectangle":
        w, h = r * rng.uniform(1.3, 1.7), r * rng.uniform(1.0, 1.4)
        box = cv2.boxPoints(((cx, cy), (w, h), float(rng.uniform(-30, 30))))
        cv2.fillPoly(mask, [np.round(box).astype(np.int32)], 255)
    else:  # blob: a few overlapping discs around the centre, smoothed
        for _ in range(int(rng.integers(3, 6))):
            ox, oy = rng.uniform(-0.5, 0.5, size=2) * r
            cv2.circle(mask, (round(cx + ox), round(cy + oy)), round(r * rng.uniform(0.45, 0.7)), 255, -1)
        mask = cv2.GaussianBlur(mask, (0, 0), r / 6)
        mask = np.where(mask >= 128, 255, 0).astype(np.uint8)
    return mask >= 128


def make_sample(
    rng: np.random.Generator,
    size: int = 128,
    shape: str | None = None,
    background: str | None = None,
    style: str = "random",
) -> tuple[Image.Image, np.ndarray]:
    """One (RGB image, bool mask) pair; style 'random' (any colours) or 'salient' (saturated object, grey background)."""
    shape = shape or SHAPES[int(rng.integers(len(SHAPES)))]
    background = background or BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    if style == "salient":
        # Photo-like: a saturated object on a greyish background.
        c1, c2 = (np.clip(rng.uniform(20, 235) + rng.normal(0, 12, size=3), 0, 255).astype(np.float32) for _ in range(2))
        hue = np.uint8(rng.integers(0, 180))
        hsv = np.array([[[hue, rng.integers(170, 256), rng.integers(150, 256)]]], np.uint8)
        fg = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)
    else:  # "random": any colours, the object's at least 60 away from the background's
        c1 = rng.integers(0, 256, size=3).astype(np.float32)
        c2 = _colour_far_from(rng, [c1], 60.0)
        fg = _colour_far_from(rng, [c1, c2, (c1 + c2) / 2], 60.0)
    fg2 = np.clip(fg + rng.normal(0, 40, size=3), 0, 255)
    img = _background(rng, size, background, c1, c2)
    mask = _shape_mask(rng, size, shape)
    # The object is textured too (blotches between two near colours, plus
    # shading), so neither side is a flat colour.
    blot = cv2.resize(rng.random((size // 8, size // 8)).astype(np.float32), (size, size))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    shade = 1.0 + 0.2 * (xx - 0.5) - 0.2 * (yy - 0.5)
    obj = (fg[None, None, :] * (1 - blot[..., None]) + fg2[None, None, :] * blot[..., None]) * shade[..., None]
    obj = np.clip(obj, 0, 255)
    img = np.where(mask[..., None], obj, img)
    img = img + rng.normal(0, 8, size=img.shape)  # sensor-like noise everywhere
    img = np.clip(img, 0, 255).astype(np.uint8)
    return Image.fromarray(img, "RGB"), mask


def make_samples(n: int, seed: int = 0, size: int = 128, style: str = "random") -> list[tuple[Image.Image, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [make_sample(rng, size, style=style) for _ in range(n)]


def write_dataset(root: str | Path, n: int, seed: int = 0, size: int = 128, style: str = "random") -> Path:
    """Write ``root/images/sample_XXX.png`` and ``root/masks/sample_XXX.png`` (masks mode 'L', 0/255)."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for i, (img, mask) in enumerate(make_samples(n, seed, size, style)):
        img.save(root / "images" / f"sample_{i:03d}.png")
        Image.fromarray(mask.astype(np.uint8) * 255, "L").save(root / "masks" / f"sample_{i:03d}.png")
    return root
