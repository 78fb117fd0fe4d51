"""The shipped portrait tree: the same checks as the default tree (validates, every artifact reachable, oracle
walks exact, cost within 1.5x of the entropy floor) and a full walk on the tiny model of each architecture."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image

from explainer.answerers.oracle import OracleAnswerer
from explainer.cli import main
from explainer.engine import TreeRunner
from explainer.stats.tree_cost import situations, tree_stats
from explainer.trees import builtin_catalogue, compile_tree

ROOT = Path(__file__).resolve().parents[1]
PORTRAITS = ROOT / "question_trees" / "portraits.yaml"


@pytest.fixture(scope="module")
def portraits():
    return compile_tree(PORTRAITS)


def test_portrait_tree_validates_through_the_cli(capsys):
    assert main(["tree", "validate", str(PORTRAITS)]) == 0
    assert "portraits.yaml: ok" in capsys.readouterr().out


def test_catalogue_extends_the_default_for_faces(portraits):
    default = builtin_catalogue()
    cat = portraits.catalogue
    assert cat.names[:len(default)] == default.names  # the 70 keep their names and order
    added = cat.names[len(default):]
    assert "Mismatched irises or pupils" in added and "Warped or mismatched eyeglasses" in added
    # reworded for faces: the default speaks of no species, the tree of skin
    assert "skin" in cat["Over-smoothing of natural textures"].description
    assert cat["Over-smoothing of natural textures"].description != default["Over-smoothing of natural textures"].description


def test_every_artifact_the_tree_names_is_reachable(portraits):
    named = portraits.artifacts()
    assert len(named) >= 35
    assert set(portraits.applicable(None)) == named
    assert named <= set(portraits.catalogue.names)


_SITUATIONS = None


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_oracle_walk_finds_exactly_the_true_artifacts(portraits, data):
    global _SITUATIONS
    _SITUATIONS = _SITUATIONS or situations(portraits)
    sit = data.draw(st.sampled_from(_SITUATIONS))
    truth = data.draw(st.sets(st.sampled_from(sit.artifacts), max_size=6))
    result = TreeRunner(portraits, OracleAnswerer(truth, facts=sit.vars)).run()
    assert result.artifacts == truth and not result.truncated


def test_cost_within_one_and_a_half_of_the_floor(portraits):
    stats = tree_stats(portraits, samples=120, seed=1)
    mean_q, floor = stats.mean("yes_no"), stats.mean("entropy_bits")
    assert mean_q <= 1.5 * floor
    assert mean_q >= 0.95 * floor  # nothing beats the floor (minus sampling noise)
    assert max(c.max_rounds for c in stats.classes) <= 6
    assert stats.direct_questions == len(portraits.artifacts())  # compared with its own catalogue, not the 70


@pytest.mark.parametrize("arch", ["llava", "idefics3", "qwen2_vl"])
def test_full_walk_on_each_architecture(tmp_path_factory, arch, capsys):
    from explainer.testing import build_tiny_vlm

    vlm = build_tiny_vlm(arch, tmp_path_factory.mktemp(arch))
    image = tmp_path_factory.mktemp("img") / "1.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(image)
    assert main([str(image), "--tree", str(PORTRAITS), "--vlm", str(vlm), "--device", "cpu", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    asked = [q for q in record["questions"] if q["kind"] == "yes_no"]
    gates = {"face", "skin_and_hair", "around", "light_and_rendering"}
    assert gates <= {q["node_id"] for q in asked}, "the four first questions are always asked"
    assert all(0.0 <= q["p_yes"] <= 1.0 for q in asked)
    names = set(compile_tree(PORTRAITS).catalogue.names)
    assert all(f["artifact"] in names for f in record["findings"])
