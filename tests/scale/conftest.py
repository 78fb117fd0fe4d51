"""Fixtures of the Ray tests: tiny offline models, and leaving no process of ours behind."""

from __future__ import annotations

import sys

import pytest

from scale_helpers import kill_pids, our_descendants


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    import torch

    from detectors.classifier import ClassifierConfig, build_classifier, save_classifier
    from explainer.testing import build_tiny_vlm

    root = tmp_path_factory.mktemp("scale-models")
    vlm = build_tiny_vlm("idefics3", root / "vlm")
    torch.manual_seed(0)
    det = save_classifier(root / "det", build_classifier(ClassifierConfig(backbone="tiny_cnn"))).parent
    return vlm, det


@pytest.fixture
def no_leftover_ray():
    """Kill, by pid, any process this test started and left behind (a Ray cluster of ours)."""
    yield
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    kill_pids(our_descendants())
