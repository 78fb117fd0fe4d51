"""Fixtures for the feature-detector tests: tiny backbones saved like downloaded ones, and planted data.

Built once per session; everything is random-weight and local (no hub access).
"""

from __future__ import annotations

import pytest
import torch

from detectors.features.testing import build_tiny_backbone, make_planted_dataset

torch.set_num_threads(2)  # the CPU is shared


@pytest.fixture(scope="session")
def tiny_backbones(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("backbones")
    return {kind: str(build_tiny_backbone(kind, root / kind)) for kind in ("clip", "dinov2", "siglip")}


@pytest.fixture(scope="session")
def texture_data(tmp_path_factory) -> str:
    """Fakes carry a checkerboard over the whole image: a separation random tiny backbones see."""
    root = tmp_path_factory.mktemp("texture")
    make_planted_dataset(root, n_train=24, n_test=12, size=32, patch=32, strength=40)
    return str(root)


@pytest.fixture(scope="session")
def patch_data(tmp_path_factory) -> tuple[str, dict]:
    """Fakes carry an 8 px checkerboard on one cell of the 8 px patch grid; returns (root, planted boxes)."""
    root = tmp_path_factory.mktemp("patch")
    boxes = make_planted_dataset(root, n_train=60, n_test=20, size=32, patch=8, strength=60, align=8)
    return str(root), boxes
