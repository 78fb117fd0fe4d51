"""Shared fixtures for the detector tests: synthetic CIFAKE-style data and one
small trained detector, built once per session so the suite stays fast."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.nn import functional as F

# The CPU is shared; never take more than two cores.
torch.set_num_threads(2)

LR_SIZE = 32
PLANTED_TRAIN, PLANTED_TEST = 240, 60  # per class
PATCH = 12  # planted artifact, in 32 px source pixels (48 px after x4)
AMP = 0.15


def make_image(rng: np.random.Generator, fake: bool) -> tuple[Image.Image, tuple[int, int] | None]:
    """A smooth random 32x32 'photo'; fakes get a checkerboard patch (the
    classic transposed-convolution upsampling artifact) at a random place."""
    low = torch.from_numpy(rng.random((1, 3, 4, 4)).astype(np.float32))
    img = F.interpolate(low, size=(LR_SIZE, LR_SIZE), mode="bicubic", align_corners=False)[0].numpy()
    img = 0.2 + 0.6 * img + rng.normal(0, 0.02, img.shape)
    loc = None
    if fake:
        x0, y0 = (int(v) for v in rng.integers(0, LR_SIZE - PATCH + 1, size=2))
        yy, xx = np.mgrid[0:PATCH, 0:PATCH]
        img[:, y0 : y0 + PATCH, x0 : x0 + PATCH] += AMP * np.where((yy + xx) % 2 == 0, 1.0, -1.0)
        loc = (x0, y0)
    arr = (np.clip(img, 0, 1).transpose(1, 2, 0) * 255).round().astype(np.uint8)
    return Image.fromarray(arr), loc


def make_dataset(root: Path, n_train: int, n_test: int, seed: int) -> dict[str, tuple[int, int]]:
    """CIFAKE layout under ``root``; returns {fake image path: patch (x0, y0) at 32 px}."""
    rng = np.random.default_rng(seed)
    locs: dict[str, tuple[int, int]] = {}
    for split, n in (("train", n_train), ("test", n_test)):
        for cls in ("REAL", "FAKE"):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                image, loc = make_image(rng, cls == "FAKE")
                path = folder / f"{i:04d}.png"
                image.save(path)
                if loc is not None:
                    locs[str(path)] = loc
    return locs


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A very small set for plumbing tests (resume, errors)."""
    root = tmp_path_factory.mktemp("cifake_tiny")
    make_dataset(root, n_train=8, n_test=4, seed=1)
    return root


@pytest.fixture(scope="session")
def planted(tmp_path_factory) -> tuple[Path, dict]:
    """Planted-trace data (detectors.synthetic): every fake has an 8-12 px patch of a
    checkerboard, grid or spectral trace 5 grey levels strong; nothing else differs."""
    from detectors.synthetic import TraceSpec, make_dataset

    root = tmp_path_factory.mktemp("planted")
    return root, make_dataset(root, PLANTED_TRAIN, PLANTED_TEST, seed=3, spec=TraceSpec(amplitude=5.0, noise=2.0))


@pytest.fixture(scope="session")
def trained_tiny(planted, tmp_path_factory) -> Path:
    """``explain train detector DATA --backbone tiny_cnn`` with every other option at its
    default (RGB, FGSM on, default epochs and learning rate): issue 13's acceptance run."""
    from explainer.cli import main

    root, _ = planted
    out = tmp_path_factory.mktemp("runs") / "default"
    assert main(["train", "detector", str(root), "--out", str(out), "--backbone", "tiny_cnn", "--no-progress"]) == 0
    return out


@pytest.fixture
def fake_images(planted) -> list[tuple[Image.Image, tuple[int, int, int, int]]]:
    """Held-out fakes with their trace box (x0, y0, x1, y1) in 32 px coordinates."""
    root, traces = planted
    return [(Image.open(root / p).convert("RGB"), tuple(t["box"])) for p, t in sorted(traces.items()) if p.startswith("test/")]
