"""`explain bench strategies` on the tiny model: table, Markdown and JSON with machine and model facts."""

from __future__ import annotations

import json

from explainer.bench import OracleDriven
from explainer.answerers.base import YesNoQuery
from explainer.answerers.oracle import OracleAnswerer
from explainer.answerers.scripted import ScriptedAnswerer
from explainer.cli import main


def test_bench_json_and_markdown(tmp_path, capsys):
    out = tmp_path / "b.json"
    code = main(["bench", "--arch", "idefics3", "--models-dir", str(tmp_path / "m"), "--images", "2",
                 "--strategies", "tree,direct-cached", "--json-out", str(out), "--markdown"])
    assert code == 0
    md = capsys.readouterr().out
    assert md.startswith("| strategy | median s / image |") and "| tree |" in md and "| direct-cached |" in md
    blob = json.loads(out.read_text())
    assert {"torch", "transformers", "device", "cpu_threads"} <= set(blob["machine"])
    assert blob["model"]["model_type"] == "idefics3" and blob["model"]["parameters"] > 0
    assert len(blob["runs"]) == 4
    summ = {s["strategy"]: s for s in blob["summaries"]}
    assert summ["tree"]["speedup_of_tree"] == 1.0
    assert summ["direct-cached"]["yes_no"] == 70


def test_bench_refuses_unknown_strategy(tmp_path, capsys):
    code = main(["bench", "strategies", "--arch", "idefics3", "--models-dir", str(tmp_path), "--strategies", "fast"])
    assert code == 2
    assert "unknown strategy fast" in capsys.readouterr().err


def test_oracle_driven_keeps_model_costs_and_oracle_answers():
    model = ScriptedAnswerer({"q": 0.2})
    driven = OracleDriven(model, OracleAnswerer({"Artificial smoothness"}))
    (a,) = driven.yes_no([YesNoQuery("q", "?", frozenset({"Artificial smoothness"}))])
    assert a.p_yes == 1.0  # the oracle's answer
    assert model.calls and model.calls[0].node_ids == ("q",)  # the model still computed it


def test_full_detector_stage_builds_the_seed_architectures():
    from explainer.bench import full_detector_stage

    stage = full_detector_stage("cpu")
    assert stage.sr.method == "rrdbnet" and stage.classifier is not None
    assert stage.classifier.config.backbone == "densenet121"
