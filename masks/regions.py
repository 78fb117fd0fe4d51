"""Deciding whether a Grad-CAM box lies on the object or the background, and drawing masks for reports."""

from __future__ import annotations

import math
from typing import Sequence

import cv2
import numpy as np
from PIL import Image


def _box_pixels(mask: np.ndarray, box: Sequence[float]) -> np.ndarray:
    """The mask under box = (x0, y0, x1, y1), half-open like PIL's crop; float corners are rounded outwards."""
    if len(box) != 4:
        raise ValueError(f"box must be (x0, y0, x1, y1), got {tuple(box)}")
    h, w = mask.shape[:2]
    x0, y0 = max(0, math.floor(box[0])), max(0, math.floor(box[1]))
    x1, y1 = min(w, math.ceil(box[2])), min(h, math.ceil(box[3]))
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"box {tuple(box)} covers no pixel of a {w}x{h} mask")
    return mask[y0:y1, x0:x1]


def object_fraction(mask: np.ndarray, box: Sequence[float]) -> float:
    """Share of the box's pixels that are on the object."""
    return float(_box_pixels(np.asarray(mask, bool), box).mean())


def region_of_box(mask: np.ndarray, box: Sequence[float], threshold: float = 0.5) -> str:
    """'object' when at least ``threshold`` of the box's pixels are on the object, else 'background'.

    The box is in the mask's pixel coordinates (the image the mask was made for).
    """
    return "object" if object_fraction(mask, box) >= threshold else "background"


def mask_overlay(
    image: Image.Image,
    mask: np.ndarray,
    colour: tuple[int, int, int] = (255, 48, 48),
    alpha: float = 0.4,
    contour_colour: tuple[int, int, int] = (255, 255, 0),
) -> Image.Image:
    """RGB copy of ``image`` with the object tinted and its outline drawn."""
    rgb = np.asarray(image.convert("RGB")).astype(np.float32)
    m = np.asarray(mask, bool)
    if m.shape != rgb.shape[:2]:
        raise ValueError(f"mask is {m.shape[1]}x{m.shape[0]} but the image is {rgb.shape[1]}x{rgb.shape[0]}")
    rgb[m] = rgb[m] * (1 - alpha) + np.asarray(colour, np.float32) * alpha
    out = np.clip(rgb, 0, 255).astype(np.uint8)
    contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    thickness = max(1, round(min(m.shape) / 128))
    cv2.drawContours(out, contours, -1, contour_colour, thickness)
    return Image.fromarray(out, "RGB")
