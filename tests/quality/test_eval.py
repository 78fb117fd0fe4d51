"""`explain eval explanations`: scores checked against hand counts, the oracle, and answerers with known faults."""

from __future__ import annotations

import json

import pytest

from explainer.cli.main import main
from explainer.errors import UsageError
from explainer.quality.gold import load_gold
from explainer.quality.runs import load_run
from explainer.quality.simulate import FaultyAnswerer, gold_lines, sample_truths, simulate_run, write_jsonl
from explainer.trees import compile_tree
from explainer.trees.catalogue import builtin_catalogue
from explainer.trees.compiler import default_tree_path

CAT = builtin_catalogue()
A, B, C = "Texture repetition patterns", "Unnatural Lighting Gradients", "Inconsistent shadow directions"


def _eval_json(capsys, *argv) -> dict:
    assert main(["eval", "explanations", *map(str, argv), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def sim(tmp_path_factory, cifake):
    """40 simulated images, the oracle through the tree and through direct prompting, and a noisy tree run."""
    root = tmp_path_factory.mktemp("sim")
    direct = compile_tree(default_tree_path().parent / "direct.yaml")
    truths = sample_truths(cifake, 40, seed=3)
    write_jsonl(root / "gold.jsonl", gold_lines(truths))
    write_jsonl(root / "tree" / "results.jsonl", simulate_run(cifake, FaultyAnswerer(), truths))
    write_jsonl(root / "direct" / "results.jsonl", simulate_run(direct, FaultyAnswerer(), truths))
    write_jsonl(root / "noisy" / "results.jsonl", simulate_run(cifake, FaultyAnswerer(flip=0.15, seed=1), truths))
    return root, truths


def test_hand_counted_example(tmp_path, capsys):
    gold = tmp_path / "gold.json"
    gold.write_text(json.dumps([{"index": 1, "explanation": {A: "", B: ""}}, {"index": 2, "explanation": {A: ""}},
                                {"index": 3, "explanation": {}}, {"index": 4, "explanation": {}}]))
    run = tmp_path / "task2.json"
    # image 1: A right, B missed, C wrong; image 2: A right; image 3: a false alarm; image 4 not listed: nothing
    run.write_text(json.dumps([{"index": 1, "explanation": {A: "", C: ""}}, {"index": 2, "explanation": {A: ""}},
                               {"index": 3, "explanation": {B: ""}}, {"index": 9, "explanation": {A: ""}}]))
    out = _eval_json(capsys, run, "--gold", gold)
    assert out["images"] == 4
    assert out["micro"] == {"precision": 2 / 4, "recall": 2 / 3, "f1": 2 * 2 / (2 * 2 + 2 + 1), "tp": 2, "fp": 2, "fn": 1}
    rows = {r["artifact"]: r for r in out["per_artifact"]}
    assert (rows[A]["support"], rows[A]["precision"], rows[A]["recall"]) == (2, 1.0, 1.0)
    assert (rows[B]["support"], rows[B]["tp"], rows[B]["fp"], rows[B]["fn"]) == (1, 0, 1, 1)
    assert (rows[C]["support"], rows[C]["fp"], rows[C]["f1"]) == (0, 1, 0.0)
    assert out["macro"]["f1"] == pytest.approx((1.0 + 0.0 + 0.0) / 3)
    assert out["no_artifact_images"] == {"images": 2, "with_false_alarm": 1, "false_alarm_rate": 0.5,
                                         "false_findings_per_image": 0.5}
    assert out["skipped"] == {"index not in the gold file": 1}
    assert any("does not list" in n for n in out["notes"])
    # per group and per region re-add to the micro counts
    for key in ("per_group", "per_region"):
        assert sum(r["tp"] for r in out[key]) == 2 and sum(r["fp"] for r in out[key]) == 2
        assert sum(r["fn"] for r in out[key]) == 1


def test_the_oracle_scores_one_through_the_tree_and_directly(sim, capsys):
    root, _ = sim
    out = _eval_json(capsys, root / "tree", root / "direct", "--gold", root / "gold.jsonl")
    for ev in out["runs"]:
        assert ev["micro"]["f1"] == 1.0 and ev["macro"]["f1"] == 1.0, ev["run"]
        assert ev["images"] == 40 and ev["skipped"] == {}
        assert ev["pr_curve"]["best"]["f1"] == 1.0
    assert out["runs"][0]["gating_loss"] == {"missed": 0, "by_cause": []}
    comp = out["comparisons"][0]
    assert comp["f1_difference"] == 0.0 and comp["ci_low"] == 0.0 and comp["ci_high"] == 0.0


def test_noise_lowers_the_score_and_the_bootstrap_sees_it(sim, capsys):
    root, _ = sim
    out = _eval_json(capsys, root / "tree", root / "noisy", "--gold", root / "gold.jsonl", "--bootstrap", "500")
    noisy = out["runs"][1]
    assert noisy["micro"]["f1"] < 0.85
    comp = out["comparisons"][0]
    assert comp["f1_difference"] == pytest.approx(noisy["micro"]["f1"] - 1.0)
    assert comp["ci_low"] <= comp["f1_difference"] <= comp["ci_high"] < 0
    # the PR curve at the tree's own threshold (0.5) reproduces the walk's F1
    curve = noisy["pr_curve"]
    at_half = max(k for k, t in enumerate(curve["thresholds"]) if t >= 0.5)
    assert curve["f1"][at_half] == pytest.approx(noisy["micro"]["f1"])


def test_gating_loss_names_the_gate_made_to_fail(cifake, tmp_path, capsys):
    gate = "parts"  # wheels, wings, panels and windows of vehicles
    members = set(cifake.leads_to(cifake.node(gate).if_yes.ids, {**cifake.base_scope(), "obj": "automobile"}))
    truths = [t for t in sample_truths(cifake, 400, seed=5, p=0.2) if t[1] & members][:25]
    assert len(truths) >= 10
    write_jsonl(tmp_path / "gold.jsonl", gold_lines(truths))
    write_jsonl(tmp_path / "run" / "results.jsonl", simulate_run(cifake, FaultyAnswerer(miss={gate: 1.0}), truths))
    out = _eval_json(capsys, tmp_path / "run", "--gold", tmp_path / "gold.jsonl")
    top = out["gating_loss"]["by_cause"][0]
    assert (top["kind"], top["node_id"]) == ("gate", gate)
    assert set(top["artifacts"]) <= members
    assert top["missed"] == sum(len(t[1] & members) for t in truths)


def test_skipped_records_are_counted_by_reason(tmp_path, capsys):
    (tmp_path / "gold.jsonl").write_text("\n".join(json.dumps(x) for x in [
        {"index": 1, "artifacts": [A]}, {"index": 2, "artifacts": [B]}, {"index": 3, "artifacts": [A]}]) + "\n")
    run = tmp_path / "out"
    run.mkdir()
    lines = [json.dumps({"file": "1.png", "index": 1, "verdict": "fake", "findings": [{"artifact": A}]}),
             json.dumps({"file": "2.png", "index": 2, "error": "2.png: truncated"}),
             json.dumps({"file": "3.png", "index": 3, "verdict": "real", "findings": [{"artifact": A}]}),
             json.dumps({"file": "x.png", "index": None, "findings": []}),
             json.dumps({"file": "8.png", "index": 8, "findings": []}),
             '{"file": "9.png", "ind']
    (run / "results.jsonl").write_text("\n".join(lines) + "\n")
    out = _eval_json(capsys, run, "--gold", tmp_path / "gold.jsonl")
    assert out["skipped"] == {"image failed in the run": 1, "predicted real: its findings are not part of task 2": 1,
                              "no index (no number in the file name)": 1, "index not in the gold file": 1,
                              "unreadable line (a killed run's last line?)": 1, "gold image not in the run": 1}
    assert out["images"] == 2 and out["micro"]["tp"] == 1 and out["micro"]["fn"] == 1
    assert out["gating_loss"]["by_cause"][0]["kind"] == "predicted real"


@pytest.mark.parametrize("content,words", [
    ('[{"index": 1, "explanation": {"Texture repetition": ""}}]', ["task2.json:1", "unknown artifact",
                                                                      "did you mean 'Texture repetition patterns'"]),
    ('[\n {"index": "1", "explanation": {}}\n]', ["task2.json:2", "non-integer 'index'"]),
    ('[\n {"index": 1, "explanation": {}},\n {"index": 1, "explanation": {}}\n]', ["task2.json:3", "twice"]),
])
def test_bad_runs_are_refused_with_the_line(tmp_path, content, words):
    (tmp_path / "gold.jsonl").write_text(json.dumps({"index": 1, "artifacts": [A]}) + "\n")
    gold = load_gold(tmp_path / "gold.jsonl", CAT)
    (tmp_path / "task2.json").write_text(content)
    with pytest.raises(UsageError) as err:
        load_run(tmp_path / "task2.json", gold, CAT)
    for w in words:
        assert w in str(err.value)


def test_a_folder_without_outputs_is_refused(tmp_path):
    (tmp_path / "gold.jsonl").write_text(json.dumps({"index": 1, "artifacts": [A]}) + "\n")
    gold = load_gold(tmp_path / "gold.jsonl", CAT)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no results.jsonl or task2.json"):
        load_run(tmp_path / "empty", gold, CAT)


def test_out_writes_markdown_json_and_plots(sim, tmp_path, capsys):
    root, _ = sim
    out = tmp_path / "report"
    assert main(["eval", "explanations", str(root / "tree"), str(root / "noisy"), "--gold", str(root / "gold.jsonl"),
                 "--out", str(out), "--bootstrap", "100"]) == 0
    md = capsys.readouterr().out
    assert "| noisy | 40 |" in md and "Paired bootstrap" in md and "Gating loss: noisy" in md
    assert "### Per artifact: noisy" in (out / "report.md").read_text()
    assert json.loads((out / "report.json").read_text())["runs"][1]["run"] == "noisy"
    for png in ("f1_per_artifact.png", "pr_curve.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_simulated_strategy_table(tmp_path, capsys):
    out = tmp_path / "sim.json"
    assert main(["eval", "simulate", "--images", "30", "--noise", "0", "--json-out", str(out), "--markdown"]) == 0
    assert "simulated images" in capsys.readouterr().out  # the footer says the answers are simulated
    result = json.loads(out.read_text())
    rows = {r["strategy"]: r for r in result["rows"]}
    assert result["simulated"] is True
    assert rows["tree"]["micro"]["f1"] == 1.0 and rows["direct"]["micro"]["f1"] == 1.0  # noise 0: the oracle
    assert rows["direct"]["yes_no_per_image"] == 70 and rows["tree"]["yes_no_per_image"] < 30
    assert main(["eval", "simulate", "--images", "30", "--noise", "2", "--json-out", str(out)]) == 0
    noisy = {r["strategy"]: r for r in json.loads(out.read_text())["rows"]}
    assert noisy["tree"]["micro"]["f1"] < 1.0 and noisy["direct"]["micro"]["f1"] < 1.0
