from __future__ import annotations

from pathlib import Path

import pytest

from explainer.trees import compile_tree

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TREE = ROOT / "question_trees" / "cifake.yaml"


@pytest.fixture(scope="session")
def cifake():
    return compile_tree(DEFAULT_TREE)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """(tiny random-weight VLM folder, tiny classifier checkpoint), built offline once per test session."""
    import torch

    from detectors.classifier import ClassifierConfig, build_classifier, save_classifier
    from explainer.testing import build_tiny_vlm

    root = tmp_path_factory.mktemp("models")
    vlm = build_tiny_vlm("idefics3", root / "vlm")
    torch.manual_seed(0)
    det = save_classifier(root / "det", build_classifier(ClassifierConfig(backbone="tiny_cnn"))).parent
    return vlm, det
