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
PATCH_HR = 12 * SCALE


def read_meta(out) -> dict:
    return json.loads((out / "detector.json").read_text())


def _peak_hit_rate(checkpoint, fakes, cam_layer=None) -> tuple[float, int]:
    stage = DetectorStage.from_paths(classifier=checkpoint, cam_layer=cam_layer)
    results = stage.run([im for im, _ in fakes])
    detected = [(r, loc) for r, (_, loc) in zip(results, fakes) if r.verdict == "fake"]
    hits = 0
    for r, (x0, y0) in detected:
        if r.heatmap is None:
            continue
        px, py = peak(r.heatmap)
        hits += SCALE * x0 <= px < SCALE * x0 + PATCH_HR and SCALE * y0 <= py < SCALE * y0 + PATCH_HR
    return hits / max(len(detected), 1), len(detected)


def test_training_reaches_95_percent_held_out(trained_tiny, synth_data):
    root, _ = synth_data
    result = evaluate_detector(EvalConfig(str(root), str(trained_tiny), fgsm_eps=0, progress=False))
    assert result["n"] == 100
    assert result["clean"]["accuracy"] >= 0.95
    meta = read_meta(trained_tiny)
    assert meta["backbone"] == "tiny_cnn" and meta["epoch"] == 4 and meta["image_size"] == 128
    assert [h["adversarial"] for h in meta["history"]] == [False, True, False, True]  # every other epoch
    assert torch.load(trained_tiny / "optimizer.pt", weights_only=True)["epoch"] == 4


def test_gradcam_peak_falls_in_the_planted_patch(trained_tiny, fake_images):
    rate, detected = _peak_hit_rate(trained_tiny, fake_images)
    assert detected >= 45  # of 50 fakes
    assert rate >= 0.8


def test_eval_prints_all_six_metrics_clean_and_fgsm(trained_tiny, synth_data, capsys):
    root, _ = synth_data
    assert main(["eval", "detector", str(root), "--checkpoint", str(trained_tiny), "--no-progress"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}
    for name in METRIC_NAMES:
        assert name in lines and len(lines[name]) == 2, out  # clean and FGSM columns
        assert all(0.0 <= float(v) <= 1.0 for v in lines[name])
    assert "FGSM 0.0314" in out

    assert main(["eval", "detector", str(root), "--checkpoint", str(trained_tiny / "detector.safetensors"),
                 "--json", "--no-progress", "--fgsm-eps", "16/255"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data["clean"]) == set(METRIC_NAMES) == set(data["fgsm"])
    assert data["fgsm_eps"] == pytest.approx(16 / 255)
    assert data["clean"]["accuracy"] >= 0.95
    assert data["sr_method"] == "bicubic"


def test_resume_continues_exactly(tiny_data, tmp_path):
    common = ["train", "detector", str(tiny_data), "--backbone", "tiny_cnn", "--batch-size", "4",
              "--image-size", "64", "--lr", "1e-3", "--no-progress"]
    assert main(common + ["--out", str(tmp_path / "straight"), "--epochs", "2"]) == 0
    assert main(common + ["--out", str(tmp_path / "split"), "--epochs", "1"]) == 0
    assert read_meta(tmp_path / "split")["epoch"] == 1
    assert main(common + ["--out", str(tmp_path / "split"), "--epochs", "2", "--resume"]) == 0
    a = load_file(str(tmp_path / "straight" / "detector.safetensors"))
    b = load_file(str(tmp_path / "split" / "detector.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)
    assert read_meta(tmp_path / "split")["epoch"] == 2
    # Without --resume an existing run is not overwritten.
    assert main(common + ["--out", str(tmp_path / "split"), "--epochs", "1"]) == 2


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
def test_densenet121_reaches_95_percent_and_localises(synth_data, fake_images, tmp_path):
    """The default backbone, from random weights (about 3 min on 2 cores)."""
    root, _ = synth_data
    out = tmp_path / "dn"
    assert main(["train", "detector", str(root), "--out", str(out), "--epochs", "3", "--lr", "1e-3",
                 "--batch-size", "32", "--no-progress"]) == 0
    result = evaluate_detector(EvalConfig(str(root), str(out), fgsm_eps=0, progress=False))
    assert result["clean"]["accuracy"] >= 0.95
    rate, detected = _peak_hit_rate(out, fake_images)
    assert detected >= 45 and rate >= 0.8
