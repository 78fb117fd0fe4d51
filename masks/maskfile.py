"""Reading hand-made mask files, refusing the ones that cannot be meant as masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from explainer.errors import UsageError

ACCEPTED_MODES = ("L", "1", "RGB")


def _size_pair(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def mask_from_pil(mask: Image.Image, where: str = "mask") -> np.ndarray:
    """PIL mask ('L', '1', or RGB with equal channels) -> bool array H x W.

    Foreground is >= 128, except for masks whose largest value is 1 (0/1
    masks, as some annotation tools save them), where it is 1.
    """
    if mask.mode == "1":
        return np.asarray(mask.convert("L")) >= 128
    if mask.mode == "L":
        values = np.asarray(mask)
    elif mask.mode == "RGB":
        rgb = np.asarray(mask)
        if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
            raise UsageError(
                f"{where}: mask is RGB with differing channels; save it as grayscale ('L') or 1-bit ('1')"
            )
        values = rgb[..., 0]
    else:
        raise UsageError(
            f"{where}: mask mode {mask.mode!r} is not supported; save it as grayscale ('L'), 1-bit ('1') "
            "or RGB with equal channels"
        )
    threshold = 1 if values.size and values.max() == 1 else 128
    return values >= threshold


def load_mask_file(path: str | Path, size: int | tuple[int, int]) -> np.ndarray:
    """Load a mask that must be ``size`` = (width, height) (or an int for square); -> bool H x W.

    Raises UsageError with one line naming the file for a missing or unreadable
    file, a size that differs from the image's, or an unsupported mode.
    """
    path = Path(path)
    want_w, want_h = _size_pair(size)
    from explainer.images import opened_image

    with opened_image(path, "mask") as img:  # not a regular file, a bomb, corrupt: one UsageError naming it
        img.load()
        mask = img
    w, h = mask.size
    if (w, h) != (want_w, want_h):
        raise UsageError(f"{path}: mask is {w}x{h} but the image is {want_w}x{want_h}")
    return mask_from_pil(mask, where=str(path))
