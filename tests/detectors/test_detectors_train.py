"""Training and evaluation through the CLI entry point on planted-artifact data."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from detectors.evaluate import EvalConfig, evaluate_detector
from detectors.gradcam import peak
from detectors.metrics import METRIC_NAMES
from detectors.stage import DetectorStage
from explainer.cli import main

SCALE = 4  # 32 px source -> 128 px classifier input


def read_meta(out) -> dict:
    return json.loads((out / "detector.json").read_text())


def _peak_hit_rate(checkpoint, fakes, cam_layer=None) -> tuple[float, int]:
    stage = DetectorStage.from_paths(classifier=checkpoint, cam_layer=cam_layer)
    results = stage.run([im for im, _ in fakes])
    detected = [(r, loc) for r, (_, loc) in zip(results, fakes) if r.verdict == "fake"]
    hits = 0
    for r, (x0, y0, x1, y1) in detected:
        if r.heatmap is None:
            continue
        px, py = peak(r.heatmap)
        # The peak within the patch, give or take one 16-px Grad-CAM cell.
        hits += SCALE * x0 - 16 <= px < SCALE * x1 + 16 and SCALE * y0 - 16 <= py < SCALE * y1 + 16
    return hits / max(len(detected), 1), len(detected)


def test_training_reaches_90_percent_held_out(trained_tiny, planted):
    root, _ = planted
    result = evaluate_detector(EvalConfig(str(root), str(trained_tiny), fgsm_eps=0, progress=False))
    assert result["n"] == 120
    assert result["clean"]["accuracy"] >= 0.9
    meta = read_meta(trained_tiny)
    assert meta["backbone"] == "tiny_cnn" and meta["image_size"] == 128
    n = meta["epoch"]
    assert [h["adversarial"] for h in meta["history"]] == [False, False] + [True] * (n - 2)  # from the 3rd epoch on
    assert torch.load(trained_tiny / "optimizer.pt", weights_only=True)["epoch"] == n
    # Every hyperparameter truly used is recorded.
    hp = meta["hyperparameters"]
    assert hp["lr"] == 1e-3 and hp["epochs"] == 10 and hp["batch_size"] == 32 and hp["backbone"] == "tiny_cnn"
    assert hp["fgsm_eps"] == pytest.approx(1 / 255) and hp["val_fraction"] == 0.1 and hp["seed"] == 0
    assert 1 <= meta["best_epoch"] <= n and "val" in meta["history"][0]


def test_gradcam_peak_falls_in_the_planted_patch(trained_tiny, fake_images):
    rate, detected = _peak_hit_rate(trained_tiny, fake_images)
    assert detected >= 50  # of 60 fakes
    assert rate >= 0.8


def test_eval_prints_all_six_metrics_clean_and_fgsm(trained_tiny, planted, capsys):
    root, _ = planted
    assert main(["eval", "detector", str(root), "--checkpoint", str(trained_tiny), "--no-progress"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}
    for name in METRIC_NAMES:
        assert name in lines and len(lines[name]) == 2, out  # clean and FGSM columns
        assert all(0.0 <= float(v) <= 1.0 for v in lines[name])
    assert "FGSM 0.0039" in out  # the training budget, 1/255
    assert "real" in out and "fake" in out and "confusion" in out
    for name in ("roc.png", "pr.png", "confusion.png"):  # default plots folder: next to the checkpoint
        png = trained_tiny / "eval-test" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000

    assert main(["eval", "detector", str(root), "--checkpoint", str(trained_tiny / "detector.safetensors"),
                 "--json", "--no-progress", "--fgsm-eps", "16/255", "--fgsm-sweep", "1/255,4/255",
                 "--plots", "none"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data["clean"]) == set(METRIC_NAMES) == set(data["fgsm"])
    assert data["fgsm_eps"] == pytest.approx(16 / 255)
    assert data["clean"]["accuracy"] >= 0.9
    assert data["sr_method"] == "bicubic"
    # Per-class report and confusion matrix agree with the accuracy.
    (tn, fp), (fn, tp) = data["report"]["confusion_matrix"]
    assert tn + fp == fn + tp == 60 and (tn + tp) / 120 == pytest.approx(data["clean"]["accuracy"])
    assert data["report"]["per_class"]["fake"]["recall"] == pytest.approx(tp / 60)
    # A larger budget never helps the detector (same seed, same images).
    sweep = {round(r["eps_255"]): r["accuracy"] for r in data["fgsm_sweep"]}
    assert set(sweep) == {1, 4} and sweep[4] <= sweep[1] + 0.02 and data["fgsm"]["accuracy"] <= sweep[4] + 0.02


def test_resume_continues_exactly(tiny_data, tmp_path):
    common = ["train", "detector", str(tiny_data), "--backbone", "tiny_cnn", "--batch-size", "4",
              "--image-size", "64", "--lr", "1e-3", "--no-progress"]
    assert main(common + ["--out", str(tmp_path / "straight"), "--epochs", "2"]) == 0
    assert main(common + ["--out", str(tmp_path / "split"), "--epochs", "2", "--stop-after-epochs", "1"]) == 0
    assert read_meta(tmp_path / "split")["epoch"] == 1
    assert main(common + ["--out", str(tmp_path / "split"), "--epochs", "2", "--resume"]) == 0
    for name in ("last.safetensors", "detector.safetensors"):
        a = load_file(str(tmp_path / "straight" / name))
        b = load_file(str(tmp_path / "split" / name))
        assert a.keys() == b.keys()
        assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a), name
    split, straight = read_meta(tmp_path / "split"), read_meta(tmp_path / "straight")
    assert split["epoch"] == 2 and split["hyperparameters"] == straight["hyperparameters"]
    assert split["hyperparameters"]["lr"] == 1e-3
    # Without --resume an existing run is not overwritten.
    assert main(common + ["--out", str(tmp_path / "split"), "--epochs", "1"]) == 2


def test_resume_uses_the_recorded_hyperparameters_and_says_so(tiny_data, tmp_path, capsys):
    common = ["train", "detector", str(tiny_data), "--backbone", "tiny_cnn", "--batch-size", "4",
              "--image-size", "64", "--no-progress", "--out", str(tmp_path / "r")]
    assert main(common + ["--epochs", "1", "--lr", "2e-3", "--fgsm-eps", "1/255"]) == 0
    capsys.readouterr()
    assert main(common + ["--epochs", "2", "--resume", "--lr", "0.1"]) == 0
    err = capsys.readouterr().err
    assert "ignored --lr 0.1 (the run uses 0.002)" in err
    meta = read_meta(tmp_path / "r")
    assert meta["lr"] == 2e-3 and meta["hyperparameters"]["lr"] == 2e-3 and meta["epochs"] == 2
    assert meta["hyperparameters"]["fgsm_eps"] == pytest.approx(1 / 255)


def test_usage_errors_exit_2(tmp_path, capsys):
    assert main(["train", "detector", str(tmp_path / "missing"), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "missing: no such folder" in capsys.readouterr().err
    (tmp_path / "d" / "train" / "REAL").mkdir(parents=True)
    assert main(["train", "detector", str(tmp_path / "d"), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "no FAKE folder" in capsys.readouterr().err
    assert main(["eval", "detector", str(tmp_path / "d"), "--checkpoint", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(tmp_path / "nope") in err
    with pytest.raises(SystemExit):
        main(["train", "detector", str(tmp_path / "d"), "--fgsm-eps", "2"])


@pytest.mark.slow
def test_densenet121_default_recipe_learns_and_localises(planted, fake_images, tmp_path):
    """The default backbone and recipe, from random weights (tens of minutes on 2 cores)."""
    root, _ = planted
    out = tmp_path / "dn"
    assert main(["train", "detector", str(root), "--out", str(out), "--no-progress"]) == 0
    result = evaluate_detector(EvalConfig(str(root), str(out), fgsm_eps=0, progress=False))
    assert result["clean"]["accuracy"] >= 0.9
    rate, detected = _peak_hit_rate(out, fake_images)
    assert detected >= 50 and rate >= 0.8


def test_edited_detector_json_on_resume_is_one_line(tiny_data, tmp_path, capsys):
    out = tmp_path / "r"
    common = ["train", "detector", str(tiny_data), "--backbone", "tiny_cnn", "--batch-size", "4",
              "--image-size", "64", "--no-progress", "--out", str(out)]
    assert main(common + ["--epochs", "1"]) == 0
    good = read_meta(out)
    edits = [
        ({"hyperparameters": {**good["hyperparameters"], "lr": "fast"}}, "hyperparameters.lr has the wrong type"),
        ({"hyperparameters": {**good["hyperparameters"], "augment": "flip"}}, "hyperparameters.augment has the wrong type"),
        ({"hyperparameters": {**good["hyperparameters"], "fgsm_eps": 5.0}}, "--fgsm-eps 5.0: must be in [0, 1]"),
        ({"hyperparameters": {k: v for k, v in good["hyperparameters"].items() if k != "seed"}}, "hyperparameters.seed is missing"),
        ({"hyperparameters": [1, 2]}, "no 'hyperparameters' record"),
        ({"image_size": 10**6}, "image_size = 1000000"),
    ]
    for edit, fragment in edits:
        (out / "detector.json").write_text(json.dumps({**good, **edit}))
        capsys.readouterr()
        assert main(common + ["--epochs", "2", "--resume"]) == 2
        err = capsys.readouterr().err.strip()
        assert fragment in err and err.count("\n") == 0 and "Traceback" not in err, err
