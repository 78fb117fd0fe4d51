"""The shipped CIFAKE tree: coverage, oracle exactness, and its cost targets."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given, settings, strategies as st

from explainer.answerers.oracle import OracleAnswerer
from explainer.engine import TreeRunner
from explainer.trees import builtin_catalogue
from explainer.trees.compiler import default_tree_path
from explainer.stats.tree_cost import situations, tree_stats


ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TREE = ROOT / "question_trees" / "cifake.yaml"


def test_catalogue_is_the_challenge_list_verbatim():
    names = builtin_catalogue().names
    assert len(names) == 70 and len(set(names)) == 70
    reference = ROOT.parent / "shared" / "reference" / "adobe_artifacts_70.json"
    if reference.exists():  # present beside the checkout in development and CI
        assert names == json.loads(reference.read_text())
    assert names[0] == "Inconsistent object boundaries"
    assert names[-1] == "Scale inconsistencies within the same object class"


def test_every_catalogue_artifact_is_in_the_default_tree(cifake):
    assert cifake.artifacts() == set(builtin_catalogue().names)


def test_every_artifact_is_reachable_for_some_class(cifake):
    reachable = set()
    for obj in cifake.classes:
        reachable |= set(cifake.applicable(obj))
    assert reachable == set(builtin_catalogue().names)


def test_applicability_follows_the_classes(cifake):
    cat, car = cifake.applicable("cat"), cifake.applicable("automobile")
    assert "Dental anomalies in mammals" in cat and "Dental anomalies in mammals" not in car
    assert "Incorrect wheel geometry" in car and "Incorrect wheel geometry" not in cat
    assert "Anatomically incorrect paw structures" not in cifake.applicable("horse")
    assert cat["Unrealistic eye reflections"] == {"face"}
    assert cat["Texture repetition patterns"] == {"background"}


def test_installed_copy_finds_the_tree():
    assert Path(default_tree_path()).read_text() == DEFAULT_TREE.read_text()


_SITUATIONS = None


def _situations(tree):
    global _SITUATIONS
    if _SITUATIONS is None:
        _SITUATIONS = situations(tree)
    return _SITUATIONS


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_oracle_walk_finds_exactly_the_true_artifacts(cifake, data):
    sit = data.draw(st.sampled_from(_situations(cifake)))
    truth = data.draw(st.sets(st.sampled_from(sit.artifacts)))
    oracle = OracleAnswerer(truth, facts=sit.vars)
    result = TreeRunner(cifake, oracle).run()
    assert result.artifacts == truth
    assert result.scope["obj"] == sit.vars["obj"]
    assert not result.truncated


def test_oracle_walk_with_the_class_given_skips_the_class_question(cifake):
    oracle = OracleAnswerer({"Incorrect wheel geometry"}, facts={"region": "body"})
    result = TreeRunner(cifake, oracle).run(scope={"obj": "truck"})
    assert result.artifacts == {"Incorrect wheel geometry"}
    assert "class" not in [q.node_id for q in result.questions]


def test_cost_targets_of_the_default_tree(cifake):
    stats = tree_stats(cifake, samples=120, seed=1)
    mean_q = stats.mean("yes_no")
    floor = stats.mean("entropy_bits")
    assert 0.08 < stats.p_artifact < 0.14  # about 2.4 artifacts per image
    assert mean_q <= 16.0
    assert mean_q <= 1.5 * floor
    assert max(c.max_rounds for c in stats.classes) <= 6
    assert mean_q >= floor * 0.95  # no tree beats the entropy floor (minus sampling noise)
