"""The hostile detector and SR inputs of issue 11, every case in process (fast);
tests/hostile/test_hostile_detectors.py runs one of each kind through the
command line in a subprocess under a memory limit."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from PIL import Image
from safetensors.torch import save_file

from explainer.cli import main

# The case tables live with the subprocess tests; loaded by path (no package, no conftest import).
_spec = importlib.util.spec_from_file_location(
    "hostile_detector_cases", Path(__file__).resolve().parents[1] / "hostile" / "test_hostile_detectors.py"
)
cases = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = cases  # dataclasses look their module up there
_spec.loader.exec_module(cases)


def _one_line_error(capsys, *fragments: str) -> str:
    """The error is one ``explain: error:`` line (notes such as '--no-vlm was given' may precede it)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    errors = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(errors) == 1, err
    for fragment in fragments:
        assert fragment in errors[0], (fragment, err)
    return errors[0]


@pytest.mark.parametrize("state, fragments", cases.SR_CASES, ids=cases.SR_IDS)
def test_sr_caps(tmp_path, capsys, state, fragments):
    path = tmp_path / "evil.safetensors"
    save_file(state, str(path))
    img = tmp_path / "1.png"
    Image.new("RGB", (32, 32)).save(img)
    assert main([str(img), "--no-vlm", "--sr", str(path)]) == 2
    _one_line_error(capsys, str(path), *fragments)


@pytest.mark.parametrize("meta, fragments", cases.JSON_CASES, ids=cases.JSON_IDS)
def test_detector_json_validation(tmp_path, capsys, meta, fragments):
    d = cases._detector_dir(tmp_path, **meta)
    img = tmp_path / "1.png"
    Image.new("RGB", (32, 32)).save(img)
    assert main([str(img), "--no-vlm", "--detector", str(d)]) == 2
    _one_line_error(capsys, "detector.json", *fragments)


@pytest.mark.parametrize("bad", ["hf-hub:timm/resnet18.a1_in1k", "local-dir:/etc", "../../etc/passwd", "resnet18;rm", ""])
def test_backbone_option(tmp_path, capsys, bad):
    data = cases._tiny_dataset(tmp_path / "data", n=2)
    assert main(["train", "detector", str(data), "--backbone", bad, "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    _one_line_error(capsys, "backbone")
    assert not (tmp_path / "o").exists()


def test_edited_sr_json(tmp_path, capsys):
    hr = tmp_path / "hr"
    hr.mkdir()
    Image.new("RGB", (32, 32), (10, 200, 30)).save(hr / "a.png")
    out = tmp_path / "sr"
    common = ["train", "sr", str(hr), "--patch", "16", "--batch-size", "1", "--out", str(out), "--no-progress"]
    assert main(common + ["--arch", "srvgg", "--num-block", "1", "--epochs", "1"]) == 0
    good = json.loads((out / "sr.json").read_text())
    edits = [
        ({"kwargs": {**good["kwargs"], "num_conv": 10**9}}, "MAX_SRVGG_CONVS"),
        ({"kwargs": {**good["kwargs"], "num_feat": "64"}}, "num_feat must be an integer"),
        ({"kwargs": {**good["kwargs"], "evil": 1}}, "unknown argument 'evil'"),
        ({"kwargs": "rrdbnet"}, "kwargs must be an object"),
        ({"arch": "evil"}, "arch must be rrdbnet or srvgg"),
        ({"epoch": "1"}, "epoch must be an integer"),
        ({"lr": "fast"}, "lr must be"),
        ({"history": None}, "history must be"),
        ({"format": None}, "not an SR checkpoint description"),
    ]
    for edit, fragment in edits:
        (out / "sr.json").write_text(json.dumps({**good, **edit}))
        capsys.readouterr()
        assert main(common + ["--resume", "--epochs", "2"]) == 2
        _one_line_error(capsys, "sr.json", fragment)
    (out / "sr.json").write_text("{not json")
    capsys.readouterr()
    assert main(common + ["--resume", "--epochs", "2"]) == 2
    _one_line_error(capsys, "sr.json", "not valid JSON")
    # The untouched description resumes, with the run's own learning rate recorded.
    (out / "sr.json").write_text(json.dumps(good))
    assert main(common + ["--resume", "--epochs", "2", "--lr", "0.5"]) == 0
    assert json.loads((out / "sr.json").read_text())["lr"] == good["lr"]
