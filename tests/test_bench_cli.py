"""`explain bench strategies` on the tiny model: table, Markdown and JSON with machine and model facts."""

from __future__ import annotations

import json

import pytest

from explainer.bench import OracleDriven
from explainer.answerers.base import YesNoQuery
from explainer.answerers.oracle import OracleAnswerer
from explainer.answerers.scripted import ScriptedAnswerer
from explainer.cli import main


def test_bench_json_and_markdown(tmp_path, capsys):
    out = tmp_path / "b.json"
    code = main(["bench", "--arch", "idefics3", "--models-dir", str(tmp_path / "m"), "--images", "2",
                 "--strategies", "tree,direct-cached,tree", "--json-out", str(out), "--markdown"])
    assert code == 0
    md = capsys.readouterr().out
    assert md.count("| tree |") == 1  # named twice, run once
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


def test_bench_throughput_grid_plot_and_growth(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["bench", "throughput", "--arch", "idefics3", "--models-dir", str(tmp_path / "m"), "--batch-images",
                 "2,1", "--images", "3", "--growth", "70,280", "--growth-samples", "30", "--out-dir", str(out),
                 "--markdown"])
    assert code == 0
    md = capsys.readouterr().out
    assert md.startswith("| --batch-images | images | images/s |") and "| shape | catalogue | questions / image |" in md
    blob = json.loads((out / "throughput.json").read_text())
    points = {(p["batch_images"], p["images"]): p for p in blob["points"]}
    assert set(points) == {(1, 3), (2, 3)}
    for p in points.values():
        assert p["images_per_second"] == pytest.approx(3 / p["seconds"])
        assert 0 < p["p50_seconds"] <= p["p95_seconds"] and p["peak_rss_mib"] > 50
        assert 5 <= p["questions"] <= 40 and p["peak_gpu_mib"] is None
    # the same images and answers at both K: the same questions
    assert points[(1, 3)]["questions"] == points[(2, 3)]["questions"]
    assert points[(1, 3)]["speedup"] == 1.0
    assert blob["best_batch_images"] in (1, 2)
    growth = {(g["shape"], g["artifacts"]): g for g in blob["growth"]}
    assert set(growth) == {("wide", 70), ("wide", 280), ("cheapest", 70), ("cheapest", 280)}
    for shape in ("wide", "cheapest"):
        assert growth[shape, 70]["ratio_to_smallest"] == 1.0
        # four times the catalogue, far less than four times the questions
        assert 1.0 < growth[shape, 280]["ratio_to_smallest"] < 2.5
    assert growth["cheapest", 280]["expected"] < growth["wide", 280]["expected"]
    assert blob["settings"]["growth_shapes"] == ["wide", "cheapest"]
    assert (out / "throughput.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "growth.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| 1 | 3 |" in (out / "throughput.md").read_text()


def test_bench_throughput_refuses_bad_lists(tmp_path, capsys):
    assert main(["bench", "throughput", "--arch", "idefics3", "--models-dir", str(tmp_path), "--batch-images", "0,2"]) == 2
    assert "--batch-images: every value must be between 1 and 256" in capsys.readouterr().err
    assert main(["bench", "throughput", "--arch", "idefics3", "--models-dir", str(tmp_path), "--images", "x"]) == 2
    assert "--images is a comma-separated list of integers" in capsys.readouterr().err
    base = ["bench", "throughput", "--arch", "idefics3", "--models-dir", str(tmp_path)]
    assert main(base + ["--growth-shapes", "wide,tall"]) == 2
    assert "--growth-shapes: tall; choose from wide, cheapest" in capsys.readouterr().err
    assert main(base + ["--growth-samples", "1"]) == 2
    assert "--growth-samples must be at least 2" in capsys.readouterr().err
    assert main(base + ["--growth", "2,70"]) == 2
    assert "--growth: every value must be between 3 and 5000" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # refused before any model was built


def test_bench_tree_packed_asks_what_tree_asks(tmp_path, capsys, monkeypatch):
    """tree-packed: the same walk as tree (same questions, rounds and forward passes), each round packed."""
    out = tmp_path / "b.json"
    code = main(["bench", "--arch", "qwen2_vl", "--models-dir", str(tmp_path / "m"), "--images", "2",
                 "--strategies", "tree,tree-packed", "--json-out", str(out), "--markdown"])
    assert code == 0
    assert "| tree-packed |" in capsys.readouterr().out
    summ = {s["strategy"]: s for s in json.loads(out.read_text())["summaries"]}
    for key in ("yes_no", "choices", "follow_ups", "rounds", "forward_passes", "tokens"):
        assert summ["tree-packed"][key] == summ["tree"][key], key
    # where exact packing is not verified, the strategy is listed as not available instead of failing the run
    from explainer.answerers.hf import prefix_cache as pc

    monkeypatch.setattr(pc, "EXACT_PACKING", ("llava",))
    code = main(["bench", "--arch", "qwen2_vl", "--models-dir", str(tmp_path / "m"), "--images", "1",
                 "--strategies", "tree,tree-packed", "--markdown"])
    assert code == 0
    md = capsys.readouterr().out
    assert "| tree-packed |" not in md and "tree-packed not available here (ValueError: packing 'exact' refused" in md


def test_bench_throughput_with_exact_packing(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["bench", "throughput", "--arch", "idefics3", "--models-dir", str(tmp_path / "m"), "--batch-images",
                 "2", "--images", "2", "--growth", "", "--packing", "exact", "--out-dir", str(out), "--markdown"])
    assert code == 0
    assert "packing exact" in capsys.readouterr().out
    assert json.loads((out / "throughput.json").read_text())["settings"]["packing"] == "exact"
    assert (out / "throughput.png").exists() and not (out / "growth.png").exists()  # no growth rows, no plot
