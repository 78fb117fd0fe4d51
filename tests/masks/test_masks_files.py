"""Mask files and the training data layout: refused with one clear line, exit code 2 from the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from explainer.cli import main
from explainer.errors import UsageError
from masks import load_mask_file
from masks.data import find_pairs


def _save(path: Path, img: Image.Image) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def _square(mode: str, size: int = 16, value=255) -> Image.Image:
    img = Image.new(mode, (size, size), 0)
    img.paste(value, (4, 4, 12, 12))
    return img


@pytest.mark.parametrize("mode,value", [("L", 255), ("1", 1), ("RGB", (255, 255, 255))])
def test_accepted_modes_give_the_same_mask(tmp_path: Path, mode: str, value) -> None:
    m = load_mask_file(_save(tmp_path / f"m_{mode}.png", _square(mode, value=value)), (16, 16))
    assert m.dtype == bool and m.shape == (16, 16) and m.sum() == 64 and m[4:12, 4:12].all()


def test_zero_one_masks_are_read_as_foreground(tmp_path: Path) -> None:
    m = load_mask_file(_save(tmp_path / "m.png", _square("L", value=1)), 16)
    assert m.sum() == 64


def test_wrong_size_is_refused_with_both_sizes(tmp_path: Path) -> None:
    path = _save(tmp_path / "m.png", _square("L", 64))
    with pytest.raises(UsageError) as err:
        load_mask_file(path, (128, 128))
    assert str(err.value) == f"{path}: mask is 64x64 but the image is 128x128"


@pytest.mark.parametrize("mode", ["P", "RGBA", "I;16", "LA", "CMYK"])
def test_other_modes_are_refused_naming_the_mode(tmp_path: Path, mode: str) -> None:
    path = tmp_path / f"m_{mode}.{'jpg' if mode == 'CMYK' else 'png'}"
    _save(path, Image.new(mode, (16, 16)))
    with pytest.raises(UsageError, match=f"mode '{mode}'") as err:
        load_mask_file(path, 16)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_rgb_with_unequal_channels_is_refused(tmp_path: Path) -> None:
    path = _save(tmp_path / "m.png", _square("RGB", value=(255, 0, 0)))
    with pytest.raises(UsageError, match="differing channels"):
        load_mask_file(path, 16)


def _pair(root: Path, name: str, image_size=(20, 20), mask_size=(20, 20)) -> None:
    _save(root / "images" / f"{name}.png", Image.new("RGB", image_size, (10, 200, 30)))
    _save(root / "masks" / f"{name}.png", Image.new("L", mask_size, 255))


def test_find_pairs_matches_by_stem_and_reports_unmasked(tmp_path: Path) -> None:
    _pair(tmp_path, "a")
    _pair(tmp_path, "b")
    _save(tmp_path / "images" / "c.jpg", Image.new("RGB", (8, 8)))
    found = find_pairs(tmp_path)
    assert [(i.name, m.name) for i, m in found.pairs] == [("a.png", "a.png"), ("b.png", "b.png")]
    assert [p.name for p in found.unmasked_images] == ["c.jpg"]


def _run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["train", "masks", *argv, "--no-progress", "--epochs", "1", "--ngf", "4", "--ndf", "4"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _assert_one_line_usage_error(code: int, err: str, needle: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("explain: error: ") and needle in lines[0], err


def test_cli_bad_directory_exits_2(tmp_path: Path, capsys) -> None:
    code, _, err = _run_cli(capsys, str(tmp_path / "missing"), "--out", str(tmp_path / "o"))
    _assert_one_line_usage_error(code, err, "not a directory")
    (tmp_path / "flat").mkdir()
    code, _, err = _run_cli(capsys, str(tmp_path / "flat"), "--out", str(tmp_path / "o"))
    _assert_one_line_usage_error(code, err, "expected images/ and masks/")


def test_cli_no_pairs_exits_2(tmp_path: Path, capsys) -> None:
    (tmp_path / "d" / "images").mkdir(parents=True)
    (tmp_path / "d" / "masks").mkdir()
    code, _, err = _run_cli(capsys, str(tmp_path / "d"), "--out", str(tmp_path / "o"))
    _assert_one_line_usage_error(code, err, "no image/mask pairs")


def test_cli_mask_without_image_exits_2(tmp_path: Path, capsys) -> None:
    _pair(tmp_path / "d", "a")
    _save(tmp_path / "d" / "masks" / "ghost.png", Image.new("L", (20, 20)))
    code, _, err = _run_cli(capsys, str(tmp_path / "d"), "--out", str(tmp_path / "o"))
    _assert_one_line_usage_error(code, err, "ghost.png: mask has no image")


def test_cli_wrong_size_mask_exits_2(tmp_path: Path, capsys) -> None:
    _pair(tmp_path / "d", "a")
    _pair(tmp_path / "d", "b", mask_size=(10, 20))
    code, _, err = _run_cli(capsys, str(tmp_path / "d"), "--out", str(tmp_path / "o"))
    _assert_one_line_usage_error(code, err, "b.png: mask is 10x20 but the image is 20x20")


def test_cli_trains_and_prints_iou_to_stdout(tmp_path: Path, capsys) -> None:
    for name in "abc":
        _pair(tmp_path / "d", name)
    code, out, _ = _run_cli(capsys, str(tmp_path / "d"), "--out", str(tmp_path / "o"), "--threads", "1")
    assert code == 0
    assert "epoch 1/1" in out and "held-out IoU" in out and out.strip().splitlines()[-1].startswith("done:")
    assert (tmp_path / "o" / "best.safetensors").is_file() and (tmp_path / "o" / "last.optim.pt").is_file()
    assert np.isfinite(float(out.split("held-out IoU ")[-1].split()[0].rstrip(",")))
