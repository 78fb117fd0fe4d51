from __future__ import annotations

from pathlib import Path

import pytest

from explainer.trees import compile_tree

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TREE = ROOT / "question_trees" / "cifake.yaml"


@pytest.fixture(scope="session")
def cifake():
    return compile_tree(DEFAULT_TREE)
