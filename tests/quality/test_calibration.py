"""`explain calibrate`: answerers with known biases are brought back; the file is checked and applied everywhere."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from explainer.cli.main import main
from explainer.errors import UsageError
from explainer.quality.calibrate import ece, fit_contextual, labelled_samples
from explainer.quality.calibration import load_calibration, sigmoid
from explainer.quality.gold import load_gold
from explainer.quality.paths import TreePaths
from explainer.quality.runs import load_run
from explainer.quality.simulate import FaultyAnswerer, gold_lines, sample_truths, simulate_run, write_jsonl
from explainer.trees.catalogue import builtin_catalogue

CAT = builtin_catalogue()


def _biased_nodes(tree, share: float, seed: int = 0) -> list[str]:
    asks = sorted(n for n, s in tree.spec.nodes.items() if s.kind == "ask")
    return random.Random(seed).sample(asks, int(len(asks) * share))


def _micro_f1(gold_path: Path, run_path: Path, capsys) -> float:
    assert main(["eval", "explanations", "--gold", str(gold_path), str(run_path), "--json", "--bootstrap", "1"]) == 0
    return json.loads(capsys.readouterr().out)["micro"]["f1"]


@pytest.fixture(scope="module")
def biased(tmp_path_factory, cifake):
    """40% of the questions lean to yes (+3 in log-odds) with Gaussian noise 0.5; labelled --ask-all walks to learn from."""
    root = tmp_path_factory.mktemp("biased")
    bias = {n: 3.0 for n in _biased_nodes(cifake, 0.4)}

    def answerer():
        return FaultyAnswerer(bias=bias, noise=0.5, seed=0)

    train, test = sample_truths(cifake, 100, seed=1), sample_truths(cifake, 60, seed=2)
    write_jsonl(root / "gold_train.jsonl", gold_lines(train))
    write_jsonl(root / "gold_test.jsonl", gold_lines(test))
    write_jsonl(root / "train" / "results.jsonl", simulate_run(cifake, answerer(), train, ask_all=True))
    write_jsonl(root / "raw" / "results.jsonl", simulate_run(cifake, answerer(), test))
    return root, answerer, test


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_supervised_calibration_brings_a_biased_answerer_back(biased, cifake, capsys, method):
    root, answerer, test = biased
    before = _micro_f1(root / "gold_test.jsonl", root / "raw", capsys)
    assert before < 0.6
    cal_path = root / f"{method}.yaml"
    assert main(["calibrate", "supervised", str(root / "train"), "--gold", str(root / "gold_train.jsonl"),
                 "--method", method, "-o", str(cal_path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["ece_after"] < summary["ece_before"] and summary["question_f1_after"] > summary["question_f1_before"]
    assert Path(summary["plot"]).read_bytes()[:4] == b"\x89PNG"
    cal = load_calibration(cal_path)
    assert cal.method == f"supervised-{method}" and cal.tree == "cifake" and len(cal.nodes) > 50
    write_jsonl(root / f"cal_{method}" / "results.jsonl", simulate_run(cifake, answerer(), test, calibration=cal))
    after = _micro_f1(root / "gold_test.jsonl", root / f"cal_{method}", capsys)
    assert after > 0.85, (before, after)
    record = json.loads((root / f"cal_{method}" / "results.jsonl").read_text().splitlines()[0])
    assert record["calibration"]["sha256"] == cal.sha256
    assert all("p_calibrated" in q for q in record["questions"] if q["kind"] == "yes_no")


def test_target_precision_is_met_on_the_data_it_was_fitted_on(biased, cifake, capsys):
    root, _, _ = biased
    cal_path = root / "precise.yaml"
    assert main(["calibrate", "supervised", str(root / "train"), "--gold", str(root / "gold_train.jsonl"),
                 "--method", "threshold", "--target-precision", "0.95", "-o", str(cal_path), "--json"]) == 0
    capsys.readouterr()
    cal = load_calibration(cal_path)
    gold = load_gold(root / "gold_train.jsonl", CAT)
    samples, _ = labelled_samples(gold, load_run(root / "train", gold, CAT), TreePaths(cifake))
    checked = 0
    for node_id, node in cal.nodes.items():
        ss = [s for s in samples if s.node_id == node_id and s.p >= node.threshold]
        if ss:
            assert sum(s.label for s in ss) / len(ss) >= 0.95, node_id
            checked += 1
    assert checked > 30


def test_contextual_calibration_removes_a_pure_bias(cifake, tmp_path, capsys):
    nodes = _biased_nodes(cifake, 0.5, seed=4)
    bias = {n: (3.0 if k % 2 else -3.0) for k, n in enumerate(nodes)}  # half lean to yes, half to no; no noise
    answerer = FaultyAnswerer(bias=bias, seed=0)
    truths = sample_truths(cifake, 40, seed=6)
    write_jsonl(tmp_path / "gold.jsonl", gold_lines(truths))
    write_jsonl(tmp_path / "raw" / "results.jsonl", simulate_run(cifake, answerer, truths))
    before = _micro_f1(tmp_path / "gold.jsonl", tmp_path / "raw", capsys)
    gold = load_gold(tmp_path / "gold.jsonl", CAT)
    summary = fit_contextual(cifake, answerer, classes=["cat", "truck"], output=tmp_path / "ctx.yaml",
                             labelled=(gold, load_run(tmp_path / "raw", gold, CAT), TreePaths(cifake)))
    cal = load_calibration(tmp_path / "ctx.yaml")
    for node_id, node in cal.nodes.items():  # the prior measured on blank and noise images is the bias itself
        assert node.prior == pytest.approx(sigmoid(bias.get(node_id, 0.0)))
    assert summary["ece_after"] < summary["ece_before"]
    write_jsonl(tmp_path / "cal" / "results.jsonl", simulate_run(cifake, answerer, truths, calibration=cal))
    after = _micro_f1(tmp_path / "gold.jsonl", tmp_path / "cal", capsys)
    assert before < 0.9 and after == 1.0, (before, after)


def test_ask_all_records_every_skipped_question_and_changes_no_finding(cifake):
    truths = sample_truths(cifake, 8, seed=9)
    plain = simulate_run(cifake, FaultyAnswerer(flip=0.1), truths)
    full = simulate_run(cifake, FaultyAnswerer(flip=0.1), truths, ask_all=True)
    paths = TreePaths(cifake)
    for a, b in zip(plain, full):
        assert a["findings"] == b["findings"]
        walked = [q for q in b["questions"] if not q.get("gated")]
        assert len(walked) == len(a["questions"])
        asked = {q["node_id"] for q in b["questions"] if q["kind"] == "yes_no"}
        scope = {"obj": b["obj"], "region": b["region"], "roi": "the whole image"}
        assert asked == {n for n, _ in paths.ask_nodes(scope)}
        assert any(q.get("gated") for q in b["questions"])


def test_ece_by_hand():
    p = np.array([0.1, 0.1, 0.9, 0.9])
    assert ece(p, np.array([0, 0, 1, 1], dtype=bool)) == pytest.approx(0.1)
    assert ece(p, np.array([1, 1, 0, 0], dtype=bool)) == pytest.approx(0.9)


BAD_FILES = [
    ("calibration: 1\nnodes: {face_eyes: {scaling: platt, a: 1}}\n", "nodes.face_eyes.b: must be a finite number"),
    ("calibration: 1\nnodes: {face_eyes: {scaling: magic}}\n", "'magic' is not one of"),
    ("calibration: 1\nnodes: {face_eyes: {threshold: 1.5}}\n", "outside [0, 1]"),
    ("calibration: 1\nnodes: {face_eyes: {scaling: isotonic, x: [0.5, 0.2], y: [0, 1]}}\n", "non-decreasing"),
    ("calibration: 1\nnodes: {face_eyes: {scaling: contextual, prior: 1.0}}\n", "prior"),
    ("calibration: 1\nnodes: {face_eyes: {scaling: none, a: 2}}\n", "unknown key(s) a"),
    ("calibration: 1\nnodes: [face_eyes]\n", "'nodes' must map"),
    ("nodes: {}\n", "not a calibration file"),
    ("calibration: 1\nnodes: {face_eyes: [oops\n", ":3: not valid YAML"),
]


@pytest.mark.parametrize("text,words", BAD_FILES)
def test_bad_calibration_files_are_refused(tmp_path, text, words):
    p = tmp_path / "cal.yaml"
    p.write_text(text)
    with pytest.raises(UsageError) as err:
        load_calibration(p)
    assert str(err.value).startswith(str(p)) and words in str(err.value), str(err.value)


def test_a_calibration_for_another_tree_is_refused(cifake, tmp_path):
    p = tmp_path / "cal.yaml"
    p.write_text("calibration: 1\nnodes: {face_eye: {threshold: 0.3}}\n")
    with pytest.raises(UsageError, match="no node 'face_eye' .*did you mean 'face_eyes'"):
        load_calibration(p).check_tree(cifake)
    p.write_text("calibration: 1\nnodes: {class: {threshold: 0.3}}\n")
    with pytest.raises(UsageError, match="a choose node, not a yes/no question"):
        load_calibration(p).check_tree(cifake)
    p.write_text("calibration: 1\ntree: direct\nnodes: {}\n")
    with pytest.raises(UsageError, match="made for tree 'direct'"):
        load_calibration(p).check_tree(cifake)


def test_the_pipeline_applies_the_file_records_it_and_asks_all(tmp_path):
    from explainer.images import load_image
    from explainer.pipeline import Pipeline, PipelineOptions

    root = Path(__file__).resolve().parents[2]
    image = load_image(root / "examples" / "1.png")

    def explain(**kw):
        # the oracle with no true artifact answers every yes/no question with P(yes) = 0.1
        return Pipeline(PipelineOptions(obj="truck", **kw), answerer=FaultyAnswerer()).explain([image])[0]

    bare = explain()
    first = next(q for q in bare.questions if q["kind"] == "yes_no")
    assert first["answer"] == "no" and "p_calibrated" not in first and bare.calibration is None
    cal = tmp_path / "cal.yaml"
    cal.write_text(f"calibration: 1\ntree: cifake\nnodes:\n  {first['node_id']}: {{scaling: none, threshold: 0.05}}\n")
    plain, full = explain(calibration=str(cal)), explain(calibration=str(cal), ask_all=True)
    assert plain.calibration["sha256"] == load_calibration(cal).sha256 and plain.tree == "cifake"
    asked = {q["node_id"]: q for q in plain.questions if q["kind"] == "yes_no"}
    assert asked[first["node_id"]]["answer"] == "yes" and asked[first["node_id"]]["p_calibrated"] == pytest.approx(0.1)
    assert len(asked) > len([q for q in bare.questions if q["kind"] == "yes_no"])  # the gate opened its members
    gated = [q for q in full.questions if q.get("gated")]
    assert gated and full.counts["asked_beyond_walk"] == len(gated)
    assert full.findings == plain.findings


def test_explain_refuses_a_bad_calibration_before_any_model(tmp_path, capsys):
    root = Path(__file__).resolve().parents[2]
    cal = tmp_path / "cal.yaml"
    cal.write_text("calibration: 1\nnodes: {no_such_node: {threshold: 0.3}}\n")
    assert main([str(root / "examples" / "1.png"), "--no-vlm", "--calibration", str(cal)]) == 2
    assert "no_such_node" in capsys.readouterr().err


def test_calibrate_contextual_through_the_command_line_with_a_tiny_model(cifake, tmp_path, capsys):
    from explainer.testing import build_tiny_vlm

    model = build_tiny_vlm("idefics3", tmp_path / "models")
    out = tmp_path / "ctx.yaml"
    assert main(["calibrate", "contextual", "--vlm", str(model), "--class", "cat", "--device", "cpu",
                 "-o", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    cal = load_calibration(out)
    expected = {n for n, _ in TreePaths(cifake).ask_nodes({"obj": "cat", "roi": "the whole image"})}
    assert set(cal.nodes) == expected and summary["nodes_calibrated"] == len(expected)
    assert all(node.scaling == "contextual" and 0 < node.prior < 1 for node in cal.nodes.values())
    assert cal.info["inputs"] == ["blank", "noise"] and cal.info["classes"] == ["cat"]
    assert main(["calibrate", "contextual", "--vlm", str(model), "--class", "unicorn", "-o", str(out)]) == 2
    assert "unicorn" in capsys.readouterr().err
