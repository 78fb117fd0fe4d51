"""File names are data: markup, bytes that are not UTF-8, `index`, `javascript:`, numbers that collide."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from PIL import Image


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    import torch

    from detectors.classifier import ClassifierConfig, build_classifier, save_classifier

    torch.manual_seed(0)
    return save_classifier(tmp_path_factory.mktemp("det"), build_classifier(ClassifierConfig(backbone="tiny_cnn"))).parent


NAMES = ["1.png", "01.png", "img_1.jpg", "2.png", "[red]3[blink].png", os.fsdecode(b"b\xff4.png"), "index.png",
         "javascript:alert(5).png"]


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    for i, name in enumerate(NAMES):
        Image.new("RGB", (40, 32), (30 * i, 90, 200 - 20 * i)).save(d / name, format="PNG")
    # EXIF orientation 6 (rotate): a 48x32 landscape file that is a portrait photo
    img = Image.new("RGB", (48, 32), (200, 30, 30))
    exif = img.getexif()
    exif[0x0112] = 6
    img.save(d / "6.jpg", exif=exif)
    (d / "[").mkdir()  # `[/].png`: a folder named `[` holding `].png`, given on the command line
    Image.new("RGB", (32, 32), (0, 0, 0)).save(d / "[" / "].png")
    return d


def test_names_are_printed_literally_and_pages_never_collide(run_cli, folder, detector, tmp_path):
    out, report = tmp_path / "out", tmp_path / "report"
    markup = str(folder / "[") + "/].png"
    r = run_cli([folder, markup, "--no-vlm", "--detector", detector, "--out", out, "--report", report], timeout=180)
    assert r.returncode == 0, r
    assert "Traceback" not in r.stderr and "MarkupError" not in r.stderr
    assert "[red]3[blink].png" in r.stdout and "[/].png" in r.stdout  # as named, not interpreted
    assert "b\\xff4.png" in r.stdout  # the undecodable byte shown, not dropped or crashing
    # index 1 is claimed by three files: a warning names them, none of them gets a task entry
    assert "warning: 3 images share 1 challenge index(es)" in r.stderr
    assert "index 1: 01.png, 1.png, img_1.jpg" in r.stderr
    task1 = json.loads((out / "task1.json").read_text())
    indexes = [t["index"] for t in task1]
    assert sorted(indexes) == [2, 3, 4, 5, 6]
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == 10 and all(r["error"] is None for r in records)
    upright = next(x for x in records if x["file"].endswith("6.jpg"))
    assert any("EXIF orientation (6)" in n for n in upright["notes"])
    # the report: index.html is the batch page, one page per input, every link plain and existing
    index = (report / "index.html").read_text(encoding="utf-8")
    links = re.findall(r'href="([^"]*)"', index)
    assert len(links) == 10 and len(set(links)) == 10
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+\.html", link) for link in links), links
    assert "index.html" not in links and any(link.startswith("index-") for link in links)  # index.png's own page
    assert all((report / link).is_file() for link in links)
    assert "b\\xff4.png" in index


def test_index_from_order_numbers_every_input(run_cli, folder, detector, tmp_path):
    out = tmp_path / "out"
    r = run_cli([folder, "--no-vlm", "--detector", detector, "--out", out, "--index-from", "order"], timeout=180)
    assert r.returncode == 0, r
    assert "share" not in r.stderr
    task1 = json.loads((out / "task1.json").read_text())
    assert sorted(t["index"] for t in task1) == list(range(1, 10))
    records = {Path(json.loads(line)["file"]).name: json.loads(line)["index"]
               for line in (out / "results.jsonl").read_text().splitlines()}
    assert records["1.png"] != records["01.png"] != records["img_1.jpg"]
