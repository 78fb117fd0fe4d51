"""Things that are not regular files, given where explain expects a file: refused in one line, no hang."""

from __future__ import annotations

import os

import pytest
from PIL import Image


@pytest.fixture
def image(tmp_path):
    p = tmp_path / "1.png"
    Image.new("RGB", (32, 32), (120, 80, 40)).save(p)
    return p


@pytest.fixture
def fifo(tmp_path):
    p = tmp_path / "pipe"
    os.mkfifo(p)
    return p


@pytest.mark.parametrize("special", ["/dev/zero", "fifo"])
def test_device_or_fifo_as_image_is_refused(run_cli, special, fifo, image, tmp_path):
    target = str(fifo) if special == "fifo" else special
    r = run_cli([target, str(image), "--no-vlm", "--out", tmp_path / "out"], timeout=60)
    assert r.returncode == 1, r  # one image failed, the other was explained
    assert f"{target}: image is not a regular file" in r.stderr, r
    assert "Traceback" not in r.stderr
    assert (tmp_path / "out" / "results.jsonl").read_text().count("\n") == 2


@pytest.mark.parametrize("special", ["/dev/zero", "fifo"])
def test_device_or_fifo_as_config_is_refused(run_cli, special, fifo, image):
    target = str(fifo) if special == "fifo" else special
    r = run_cli([image, "--no-vlm", "--config", target], timeout=60)
    r.assert_one_line_error(2, target, "config file is not a regular file")


def test_oversized_config_is_refused_before_reading(run_cli, image, tmp_path):
    big = tmp_path / "big.yaml"
    with big.open("wb") as fh:
        fh.truncate(64 * 1024 * 1024)  # sparse: costs no disk, would cost memory if read
    r = run_cli([image, "--no-vlm", "--config", big], mem_limit_mb=4096, timeout=60)
    r.assert_one_line_error(2, str(big), "over the limit")
