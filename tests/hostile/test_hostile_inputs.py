"""Things that are not regular files, given where explain expects a file: refused in one line, no hang."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image


ROOT = Path(__file__).resolve().parents[2]


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


def test_device_and_fifo_as_images_are_refused_and_the_batch_goes_on(run_cli, fifo, image, tmp_path):
    r = run_cli(["/dev/zero", fifo, image, "--no-vlm", "--out", tmp_path / "out"], timeout=60)
    assert r.returncode == 1, r  # two images failed, the other was explained
    assert "/dev/zero: image is not a regular file" in r.stderr, r
    assert f"{fifo}: image is not a regular file" in r.stderr, r
    assert "Traceback" not in r.stderr
    assert (tmp_path / "out" / "results.jsonl").read_text().count("\n") == 3


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


@pytest.mark.parametrize("special", ["/dev/zero", "fifo"])
def test_device_or_fifo_as_answers_file_is_refused(run_cli, special, fifo):
    target = str(fifo) if special == "fifo" else special
    r = run_cli(["tree", "walk", ROOT / "question_trees" / "cifake.yaml", "--answers", target], timeout=60)
    # the answers file is checked like a tree (FILE:LINE: problem lines, helper trees's format)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r
    assert f"{target}:1: (file): answers file is not a regular file" in r.stderr, r
