"""Training augmentations on uint8 LR batches (B, 3, H, W), drawn from a seeded generator.

The detector looks for traces a few grey levels strong at the scale of single
source pixels. Flips and crops at native resolution keep them intact and are on
by default. Blur, JPEG and resizing wash exactly those traces out (they are
what a robustness test applies, not what a detector should learn from by
default), so they are options: ``--augment flip,crop,jpeg``.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

AUGMENTATIONS = ("flip", "crop", "blur", "jpeg", "resize")
DEFAULT_AUGMENT = ("flip", "crop")
CROP_PAD = 4  # px of reflection padding a crop may shift by
JPEG_QUALITY = (60, 95)
BLUR_SIGMA = (0.3, 1.2)
RESIZE_FACTOR = (0.5, 0.9)
PROBABILITY = 0.5  # each optional augmentation is applied to half the images


def parse_augment(text: str | list | tuple) -> tuple[str, ...]:
    items = [t.strip() for t in text.split(",")] if isinstance(text, str) else list(text)
    items = [t for t in items if t and t != "none"]
    bad = [t for t in items if t not in AUGMENTATIONS]
    if bad:
        raise ValueError(f"unknown augmentation {bad[0]!r}; expected a comma-separated subset of {','.join(AUGMENTATIONS)} or none")
    return tuple(dict.fromkeys(items))


def _uniform(gen: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=gen))


def augment(x: torch.Tensor, names: tuple[str, ...], gen: torch.Generator) -> torch.Tensor:
    """Return an augmented copy of the uint8 batch ``x``; ``gen`` makes it reproducible."""
    if not names:
        return x
    x = x.clone()
    n, _, h, w = x.shape
    if "flip" in names:
        flip = torch.rand(n, generator=gen) < 0.5
        x[flip] = x[flip].flip(-1)
    if "crop" in names:
        padded = F.pad(x.float(), (CROP_PAD,) * 4, mode="reflect").to(torch.uint8)
        offsets = torch.randint(0, 2 * CROP_PAD + 1, (n, 2), generator=gen)
        x = torch.stack([padded[i, :, oy : oy + h, ox : ox + w] for i, (oy, ox) in enumerate(offsets.tolist())])
    for i in range(n):
        for name in ("blur", "resize", "jpeg"):
            if name in names and float(torch.rand((), generator=gen)) < PROBABILITY:
                x[i] = _apply(name, x[i], gen)
    return x


def _apply(name: str, img: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    h, w = img.shape[-2:]
    if name == "blur":
        sigma = _uniform(gen, *BLUR_SIGMA)
        radius = max(1, int(round(3 * sigma)))
        t = torch.arange(-radius, radius + 1, dtype=torch.float32)
        k = torch.exp(-(t**2) / (2 * sigma**2))
        k = k / k.sum()
        f = img.float()[None]
        f = F.pad(f, (radius,) * 4, mode="reflect")
        f = F.conv2d(f, k.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
        f = F.conv2d(f, k.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)
        return f[0].round().clamp(0, 255).to(torch.uint8)
    if name == "resize":
        factor = _uniform(gen, *RESIZE_FACTOR)
        small = F.interpolate(img.float()[None], size=(max(2, round(h * factor)), max(2, round(w * factor))),
                              mode="bicubic", align_corners=False, antialias=True)
        return F.interpolate(small, size=(h, w), mode="bicubic", align_corners=False)[0].round().clamp(0, 255).to(torch.uint8)
    if name == "jpeg":
        quality = int(round(_uniform(gen, *JPEG_QUALITY)))
        buf = io.BytesIO()
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(buf, format="JPEG", quality=quality)
        buf.seek(0)
        arr = np.asarray(Image.open(buf).convert("RGB"), dtype=np.uint8)
        return torch.from_numpy(arr.copy()).permute(2, 0, 1)
    raise ValueError(name)
