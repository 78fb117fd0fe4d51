"""Tiny random-weight VLMs of each supported architecture, built once per test session."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from explainer.testing import TINY_ARCHS, build_tiny_vlm


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny-vlms")


@pytest.fixture(scope="session")
def tiny_paths(tiny_dir):
    return {arch: build_tiny_vlm(arch, tiny_dir) for arch in TINY_ARCHS}


@pytest.fixture(scope="session")
def loaded(tiny_paths):
    """One cached-mode answerer per architecture (the model is shared with plain-mode answerers)."""
    from explainer.answerers.hf import load_vlm

    # float32 pinned: the default on CPUs with native bf16 is bfloat16, too coarse for 1e-4 equality.
    return {arch: load_vlm(path, device="cpu", dtype="float32") for arch, path in tiny_paths.items()}


def noise_image(seed: int = 0, size: int = 128) -> Image.Image:
    rng = np.random.RandomState(seed)
    pixels = (rng.rand(size, size, 3) * 255).astype("uint8")
    pixels[40:44, 30:90] = (255, 0, 0)  # a red box edge, like the engine's
    return Image.fromarray(pixels)


@pytest.fixture
def image():
    return noise_image()


@pytest.fixture(scope="session")
def make_image():
    return noise_image
