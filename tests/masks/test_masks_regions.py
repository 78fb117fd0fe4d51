"""region_of_box and the report overlay."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from masks import mask_overlay, object_fraction, region_of_box


@pytest.fixture()
def mask() -> np.ndarray:
    m = np.zeros((100, 100), bool)
    m[30:70, 30:70] = True  # a centred 40x40 object
    return m


def test_box_inside_object_and_inside_background(mask: np.ndarray) -> None:
    assert region_of_box(mask, (40, 40, 60, 60)) == "object"
    assert region_of_box(mask, (0, 0, 20, 20)) == "background"
    assert region_of_box(mask, (75, 0, 100, 100)) == "background"


def test_straddling_box_uses_the_threshold(mask: np.ndarray) -> None:
    box = (20, 30, 60, 70)  # x 20..60: 30 of 40 columns on the object
    assert object_fraction(mask, box) == pytest.approx(0.75)
    assert region_of_box(mask, box) == "object"
    assert region_of_box(mask, box, threshold=0.8) == "background"
    half = (10, 30, 50, 70)  # exactly half
    assert object_fraction(mask, half) == pytest.approx(0.5)
    assert region_of_box(mask, half) == "object"  # >= threshold counts as object


def test_box_is_half_open_clipped_and_rounded_outwards(mask: np.ndarray) -> None:
    assert object_fraction(mask, (29, 30, 31, 31)) == pytest.approx(0.5)  # columns 29 and 30 only
    assert region_of_box(mask, (-50, -50, 31, 31)) == "background"
    assert object_fraction(mask, (30.5, 30.5, 30.6, 30.6)) == 1.0  # covers pixel (30, 30)
    with pytest.raises(ValueError):
        region_of_box(mask, (10, 10, 10, 20))
    with pytest.raises(ValueError):
        region_of_box(mask, (200, 200, 300, 300))


def test_overlay_tints_the_object_only_and_draws_a_contour(mask: np.ndarray) -> None:
    image = Image.new("RGB", (100, 100), (100, 100, 100))
    out = np.asarray(mask_overlay(image, mask))
    assert out.shape == (100, 100, 3)
    assert (out[5, 5] == (100, 100, 100)).all()  # background untouched
    assert out[50, 50, 0] > 100 and out[50, 50, 2] < 100  # object tinted red
    assert (out[30, 50] == (255, 255, 0)).all()  # outline on the object's edge
    with pytest.raises(ValueError, match="50x50"):
        mask_overlay(image, np.zeros((50, 50), bool))
