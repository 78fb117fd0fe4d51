"""`explain` through the real command line, on tiny offline models: batch, bad files, kill and resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from explainer.cli import main
from explainer.trees import builtin_catalogue


def _images(folder: Path, n: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    for i in range(1, n + 1):
        arr = (rng.random((32, 32, 3)) * 255).astype("uint8")
        arr[8:24, 8:24] = (rng.random(3) * 255).astype("uint8")  # a centred "object"
        Image.fromarray(arr).save(folder / f"{i}.png")


def _cmd(folder, vlm, det, out, *extra):
    return [str(folder), "--vlm", str(vlm), "--detector", str(det), "--device", "cpu", "--out", str(out), *extra]


def test_batch_with_duplicate_and_broken_files(tmp_path, tiny_models, capsys):
    vlm, det = tiny_models
    folder = tmp_path / "in"
    _images(folder, 3)
    shutil.copy(folder / "1.png", folder / "4.png")  # same picture, another index
    (folder / "5.png").write_text("not an image")
    (folder / "6.png").write_bytes((folder / "2.png").read_bytes()[:90])
    out = tmp_path / "out"
    # folder 1.png given twice: explained once
    code = main([*_cmd(folder, vlm, det, out), str(folder / "1.png")])
    err = capsys.readouterr().err
    assert code == 1  # some images failed
    assert "2 of 6 image(s) failed" in err
    assert "5.png: not an image" in err and "6.png: image is truncated or corrupt" in err
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["index"] for r in records) == [1, 2, 3, 4, 5, 6]
    good = [r for r in records if not r["error"]]
    assert len(good) == 4
    assert all(r["questions"] and r["questions"][0]["node_id"] == "class" for r in good)
    assert all(q["p_yes"] is None or 0.0 <= q["p_yes"] <= 1.0 for r in good for q in r["questions"])
    task1 = json.loads((out / "task1.json").read_text())
    task2 = json.loads((out / "task2.json").read_text())
    assert [t["index"] for t in task1] == [1, 2, 3, 4]
    assert all(t["prediction"] in ("real", "fake") for t in task1)
    names = set(builtin_catalogue().names)
    fake = {t["index"] for t in task1 if t["prediction"] == "fake"}
    assert {t["index"] for t in task2} <= fake
    assert all(set(t["explanation"]) <= names and all(isinstance(v, str) and v for v in t["explanation"].values())
               for t in task2)
    by_index = {r["index"]: r for r in good}
    assert by_index[1]["findings"] == by_index[4]["findings"]  # the duplicate picture gets the same answer


def test_json_lists_questions_with_p_yes(tmp_path, tiny_models, capsys):
    vlm, det = tiny_models
    _images(tmp_path, 1)
    assert main([str(tmp_path / "1.png"), "--vlm", str(vlm), "--device", "cpu", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    asked = [q for q in record["questions"] if q["kind"] == "yes_no"]
    assert asked and all(0.0 <= q["p_yes"] <= 1.0 for q in asked)
    assert record["counts"]["yes_no"] == len(asked)
    assert record["verdict"] is None and "no classifier checkpoint" in " ".join(record["notes"])


@pytest.mark.slow  # the default run kills and resumes at several points in tests/hostile/test_hostile_outputs.py
def test_killed_run_resumes_to_the_same_files(tmp_path, tiny_models):
    vlm, det = tiny_models
    folder = tmp_path / "in"
    _images(folder, 6)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    base = [sys.executable, "-m", "explainer.cli"]
    whole = tmp_path / "whole"
    subprocess.run(base + _cmd(folder, vlm, det, whole, "--batch-size", "1"), check=True, env=env,
                   capture_output=True, timeout=600)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(base + _cmd(folder, vlm, det, killed, "--batch-size", "1"), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = killed / "results.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and len(log.read_text().splitlines()) >= 2:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(log.read_text().splitlines())
    assert 2 <= done_before < 6, "the run was not killed midway"
    resumed = subprocess.run(base + _cmd(folder, vlm, det, killed, "--resume", "--batch-size", "1"), env=env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming: {done_before} image(s) already done" in resumed.stderr
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert sorted(r["index"] for r in lines) == [1, 2, 3, 4, 5, 6]  # none repeated, none lost
    for name in ("task1.json", "task2.json"):
        assert (killed / name).read_text() == (whole / name).read_text()


def test_existing_run_needs_resume(tmp_path, tiny_models, capsys):
    vlm, det = tiny_models
    _images(tmp_path / "in", 1)
    out = tmp_path / "out"
    assert main([*_cmd(tmp_path / "in", vlm, det, out), "--no-vlm"]) == 0
    capsys.readouterr()
    assert main([*_cmd(tmp_path / "in", vlm, det, out), "--no-vlm"]) == 2
    assert "results.jsonl already exists; pass --resume" in capsys.readouterr().err


def test_explicit_vlm_that_cannot_load_is_a_usage_error(tmp_path, capsys):
    _images(tmp_path, 1)
    assert main([str(tmp_path / "1.png"), "--vlm", str(tmp_path / "no-such-model")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("explain: error: cannot load VLM") and "Traceback" not in err


def test_explain_with_vlm_replaces_template_explanations(tmp_path, tiny_models, capsys):
    vlm, _ = tiny_models
    _images(tmp_path, 1)
    img = str(tmp_path / "1.png")
    assert main([img, "--vlm", str(vlm), "--device", "cpu", "--json", "--explain-with-vlm"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["findings"], "the tiny model should find something to explain"
    for f in record["findings"]:
        assert "template_explanation" in f or "the VLM gave no sentence" in " ".join(record["notes"])
        if "template_explanation" in f:
            assert f["explanation"] != f["template_explanation"] and "\n" not in f["explanation"]


@pytest.mark.parametrize("arch", ["llava", "idefics3", "qwen2_vl"])
def test_full_walk_of_the_default_tree_on_each_architecture(tmp_path_factory, arch, capsys):
    from explainer.testing import build_tiny_vlm

    vlm = build_tiny_vlm(arch, tmp_path_factory.mktemp(arch))
    folder = tmp_path_factory.mktemp("img")
    _images(folder, 1)
    assert main([str(folder / "1.png"), "--vlm", str(vlm), "--device", "cpu", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    kinds = [q["kind"] for q in record["questions"]]
    assert kinds[0] == "choice" and record["obj"] in ("airplane", "automobile", "bird", "cat", "deer", "dog",
                                                      "frog", "horse", "ship", "truck")
    asked = [q for q in record["questions"] if q["kind"] == "yes_no"]
    assert asked and all(0.0 <= q["p_yes"] <= 1.0 and 0.0 <= q["mass"] <= 1.0 for q in asked)
    assert record["counts"]["forward_passes"] < record["counts"]["yes_no"] + record["counts"]["choices"] + 1


def test_exact_packing_gives_the_row_path_records(tmp_path, tiny_models, capsys):
    """--packing exact (EXPLAIN_PACKING, config) through the whole command: the records of --packing rows."""
    vlm, det = tiny_models
    folder = tmp_path / "in"
    _images(folder, 2)
    runs = {}
    for packing in ("rows", "exact"):
        out = tmp_path / packing
        assert main(_cmd(folder, vlm, det, out, "--packing", packing, "--batch-images", "2")) == 0
        runs[packing] = {r["index"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert sorted(runs["exact"]) == [1, 2]
    for index, rows in runs["rows"].items():
        packed = runs["exact"][index]
        assert [(q["node_id"], q["answer"]) for q in packed["questions"]] == [(q["node_id"], q["answer"]) for q in rows["questions"]]
        # bfloat16 here (the CPU default where it is native); float32 agrees within 1e-4 (tests/vlm/test_packing.py)
        assert [q["p_yes"] for q in packed["questions"]] == pytest.approx([q["p_yes"] for q in rows["questions"]], abs=5e-2)
        assert packed["counts"]["tokens"] == rows["counts"]["tokens"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:  # argparse's own check of the choices
        main(_cmd(folder, vlm, det, tmp_path / "bad", "--packing", "tight"))
    assert exc.value.code == 2 and "--packing: invalid choice: 'tight'" in capsys.readouterr().err


def test_batch_images_gives_the_same_results_as_one_at_a_time(tmp_path, tiny_models, capsys):
    """--batch-images 3 walks three images together (continuous batching); every record is the one-image record."""
    vlm, det = tiny_models
    folder = tmp_path / "in"
    _images(folder, 4)
    runs = {}
    for k in (1, 3):
        out = tmp_path / f"k{k}"
        assert main(_cmd(folder, vlm, det, out, "--batch-images", str(k))) == 0
        runs[k] = {r["index"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert sorted(runs[3]) == [1, 2, 3, 4]
    for index, one in runs[1].items():
        many = runs[3][index]
        assert [(q["node_id"], q["answer"]) for q in many["questions"]] == [(q["node_id"], q["answer"]) for q in one["questions"]]
        # bfloat16 here (the CPU default where it is native): other batch shapes round differently; float32 agrees
        # within 1e-4 (tests/vlm/test_multi_image.py)
        assert [q["p_yes"] for q in many["questions"]] == pytest.approx([q["p_yes"] for q in one["questions"]], abs=5e-2)
        assert many["findings"] == one["findings"] and many["verdict"] == one["verdict"]
        assert many["counts"]["tokens"] == one["counts"]["tokens"]
    capsys.readouterr()
    assert main(_cmd(folder, vlm, det, tmp_path / "bad", "--batch-images", "0")) == 2
    assert "--batch-images: must be at least 1, not 0" in capsys.readouterr().err


def test_a_named_image_that_does_not_exist_is_refused_before_any_model(tmp_path, capsys, monkeypatch):
    import explainer.pipeline as pipeline

    def no_loading(*args, **kwargs):
        raise AssertionError("models were loaded for a run with nothing to explain")

    monkeypatch.setattr(pipeline.Pipeline, "load", no_loading)
    assert main([str(tmp_path / "imge.png"), "--device", "cpu"]) == 2
    assert capsys.readouterr().err.strip() == f"explain: error: {tmp_path / 'imge.png'}: no such file or folder"
    assert main([str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--no-vlm"]) == 2
    assert "a.png: no such file or folder (and 1 more named input(s) that do not exist)" in capsys.readouterr().err


def test_a_missing_image_beside_real_ones_is_recorded_and_the_batch_goes_on(tmp_path, capsys):
    folder = tmp_path / "in"
    _images(folder, 1)
    out = tmp_path / "out"
    code = main([str(folder / "1.png"), str(folder / "2.png"), "--no-vlm", "--device", "cpu", "--out", str(out)])
    assert code == 1
    assert "2.png: image not found" in capsys.readouterr().err
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == 2 and sum(1 for r in records if r.get("error")) == 1


_FRESH_MAIN = """
import sys
from explainer.cli import main
code = main(sys.argv[1:])
heavy = sorted(m for m in ("timm", "skops", "sklearn", "torchvision", "transformers") if m in sys.modules)
print("imported:", ",".join(heavy))
sys.exit(code)
"""


@pytest.mark.parametrize("flag", ["--detector", "--sr", "--mask"])
def test_a_stage_path_that_does_not_exist_is_refused_before_the_heavy_imports(tmp_path, flag):
    """A typo in --detector/--sr/--mask: one line, exit 2, without first importing timm, torchvision and
    scikit-learn (seconds in a fresh process), so in well under a second of work."""
    image = tmp_path / "1.png"
    Image.new("RGB", (32, 32)).save(image)
    missing = tmp_path / "typo.safetensors"
    run = subprocess.run([sys.executable, "-c", _FRESH_MAIN, str(image), flag, str(missing), "--device", "cpu"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip() == f"explain: error: {missing}: no such file or folder ({flag})"
    assert run.stdout.strip() == "imported:", run.stdout


def test_a_mask_named_by_its_stem_passes_the_early_check(tmp_path, capsys):
    """--mask runs/masks/best names best.safetensors + best.json: the early check must not refuse the stem;
    the mask loader then judges the files (here the .json is missing)."""
    image = tmp_path / "1.png"
    Image.new("RGB", (32, 32)).save(image)
    (tmp_path / "best.safetensors").write_bytes(b"")
    assert main([str(image), "--mask", str(tmp_path / "best"), "--no-vlm", "--device", "cpu"]) == 2
    assert "no mask checkpoint there (need best.safetensors and best.json)" in capsys.readouterr().err
