"""The HTML report (``explain ... --report DIR``): pages and index built from hand-made reports, then through the CLI."""

from __future__ import annotations

import base64
import io
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from explainer.cli import main
from explainer.pipeline import ImageReport
from explainer.outputs.report import ReportWriter, render_index, render_page

EVIL = 'Is there <script>alert("x")</script> & a red box? Answer yes or no.'


class Page(HTMLParser):
    """Just enough of the DOM: images, links, tables (rows of cell texts) by id, all text, tags seen."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.imgs: list[dict[str, str]] = []
        self.links: list[str] = []
        self.tables: dict[str, list[list[str]]] = {}
        self.tags: list[str] = []
        self.ids: dict[str, str] = {}  # element id -> its text
        self.text: list[str] = []
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._open_ids: list[tuple[str, str]] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "img":
            self.imgs.append(a)
        elif tag == "a":
            self.links.append(a["href"])
        elif tag == "table" and "id" in a:
            self._table = a["id"]
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table:
            self._cell = []
        if "id" in a and tag != "table":
            self._open_ids.append((tag, a["id"]))
            self.ids[a["id"]] = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[self._table][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "table":
            self._table = None
        if self._open_ids and self._open_ids[-1][0] == tag:
            self._open_ids.pop()

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)
        for _, i in self._open_ids:
            self.ids[i] += data

    def body_rows(self, table: str) -> list[list[str]]:
        return self.tables[table][1:]  # the first row is the header


def _decode(src: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix)
    return Image.open(io.BytesIO(base64.b64decode(src[len(prefix):])))


def _picture(size: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((size, size, 3)) * 255).astype("uint8"))


def _report(file: Path, with_original: bool = True, **kw) -> ImageReport:
    from detectors.gradcam import draw_box, overlay

    file.parent.mkdir(parents=True, exist_ok=True)
    original = _picture(32, sum(file.name.encode()))
    original.save(file)
    sr = original.resize((128, 128), Image.Resampling.BICUBIC)
    yy, xx = np.mgrid[:128, :128]
    mask = (yy - 64) ** 2 + (xx - 64) ** 2 < 40 ** 2
    heat = np.exp(-((yy - 40) ** 2 + (xx - 80) ** 2) / 400.0).astype(np.float32)
    box = [40, 0, 120, 80]
    report = ImageReport(
        file=str(file), index=7, verdict="fake", p_fake=0.91, obj="cat", region="face", roi_box=box,
        sr_method="rrdbnet", mask_method="grabcut",
        findings=[{"artifact": "Asymmetric features", "explanation": "The eyes differ in size.", "node_id": "eyes",
                   "region": "face", "detail": None, "p_yes": 0.82, "round": 3},
                  {"artifact": "Unnatural fur texture", "explanation": "The fur repeats.", "node_id": "fur",
                   "region": "face", "detail": "tiled", "p_yes": None, "round": 4}],
        questions=[{"round": 1, "node_id": "class", "kind": "choice", "prompt": "What is the main object?",
                    "answer": "cat", "p_yes": None},
                   {"round": 2, "node_id": "eyes_gate", "kind": "yes_no", "prompt": EVIL, "answer": "yes", "p_yes": 0.77},
                   {"round": 3, "node_id": "eyes", "kind": "yes_no", "prompt": "Do the eyes differ?", "answer": "yes",
                    "p_yes": 0.82},
                   {"round": 4, "node_id": "fur", "kind": "inferred", "prompt": "Is the fur tiled?", "answer": "yes",
                    "p_yes": None}],
        counts={"yes_no": 2, "choices": 1, "inferred": 1, "rounds": 4},
        timings={"detector_sr": 0.01, "detector": 0.05, "mask": 0.02, "questions": 0.3},
        notes=["the Grad-CAM box lies on the object (mask: grabcut)"],
        artifacts={"sr": sr, "boxed": draw_box(sr, tuple(box)), "overlay": overlay(sr, heat), "heatmap": heat,
                   "mask": mask},
    )
    if with_original:
        report.artifacts["original"] = original
    for k, v in kw.items():
        setattr(report, k, v)
    return report


def test_page_shows_images_verdict_questions_findings(tmp_path):
    report = _report(tmp_path / "cat_7.png")
    page = Page(render_page(report))
    # four images, all embedded PNGs: original 32 px, the rest at SR size
    assert [im["alt"] for im in page.imgs] == ["original", "super-resolved", "Grad-CAM", "foreground mask"]
    sizes = [_decode(im["src"]).size for im in page.imgs]
    assert sizes == [(32, 32), (128, 128), (128, 128), (128, 128)]
    # the Grad-CAM figure carries the red box: its top-left corner pixel is the box colour
    cam = np.asarray(_decode(page.imgs[2]["src"]).convert("RGB"))
    assert tuple(cam[0, 40]) == (255, 0, 0) and tuple(cam[79, 119]) == (255, 0, 0)
    text = " ".join(" ".join(page.text).split())
    assert "FAKE" in text and "P(fake) = 0.91" in text
    assert "cat" in text and "face" in text and "(40, 0, 120, 80)" in text
    rows = page.body_rows("questions")
    assert rows == [["1", "class", "What is the main object?", "cat", "choice"],
                    ["2", "eyes_gate", EVIL, "yes", "0.77"],
                    ["3", "eyes", "Do the eyes differ?", "yes", "0.82"],
                    ["4", "fur", "Is the fur tiled?", "yes", "inferred"]]
    findings = page.body_rows("findings")
    assert [f[0] for f in findings] == ["Asymmetric features", "Unnatural fur texture"]
    assert findings[0][1] == "The eyes differ in size." and findings[1][3] == "inferred"
    timings = [r[0] for r in page.body_rows("timings")]
    assert timings == ["detector", "sr", "mask", "questions"]  # the detector's parts under it
    assert "the Grad-CAM box lies on the object" in page.ids["notes"]
    assert "skipped" not in page.ids and "error" not in page.ids


def test_user_text_is_escaped_not_markup(tmp_path):
    report = _report(tmp_path / "x.png")
    html = render_page(report)
    page = Page(html)
    assert "script" not in page.tags  # the prompt's <script> is text, not an element
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert EVIL in page.body_rows("questions")[1]


def test_skipped_questions_and_no_classifier(tmp_path):
    skipped = "VLM questions skipped: --no-vlm was given"
    report = _report(tmp_path / "3.png", verdict=None, p_fake=None, roi_box=None, findings=[], questions=[],
                     counts={}, skipped=skipped)
    report.artifacts.update(overlay=None, heatmap=None)
    page = Page(render_page(report))
    assert page.ids["skipped"].strip() == skipped
    assert "questions" not in page.tables and "findings" not in page.tables
    # no Grad-CAM: an empty slot saying why, not the SR image shown twice
    assert [im["alt"] for im in page.imgs] == ["original", "super-resolved", "foreground mask"]
    assert "no box: no classifier checkpoint" in " ".join(page.text)
    assert "no verdict" in " ".join(page.text)


def test_measured_probes_are_not_called_inferred(tmp_path):
    report = _report(tmp_path / "6.png")
    report.questions.append({"round": 0, "node_id": "smoothness_probe", "kind": "probe", "prompt": "laplacian_var on the "
                             "background", "answer": "yes", "p_yes": None, "value": 0.01234, "note": "flat region"})
    report.questions.append({"round": 0, "node_id": "grid_probe", "kind": "probe", "prompt": "fft_peak on the object",
                             "answer": "unknown", "p_yes": None, "value": None, "note": None})
    report.findings.append({"artifact": "Artificial smoothness", "explanation": "Too smooth.", "node_id": "smoothness_probe",
                            "region": "background", "detail": None, "p_yes": None, "round": 0, "value": 0.01234})
    page = Page(render_page(report))
    rows = page.body_rows("questions")
    assert rows[-2] == ["0", "smoothness_probe", "laplacian_var on the background (flat region)", "yes", "measured 0.0123"]
    assert rows[-1][-1] == "measured n/a"
    assert page.body_rows("findings")[-1][-1] == "measured 0.0123"


def test_original_read_back_from_file_or_said_missing(tmp_path):
    report = _report(tmp_path / "5.png", with_original=False)
    page = Page(render_page(report))
    assert _decode(page.imgs[0]["src"]).size == (32, 32)  # read again from report.file
    Path(report.file).unlink()
    page = Page(render_page(report))
    assert page.imgs[0]["alt"] == "super-resolved"
    assert "could not be read back" in " ".join(page.text)


def test_large_original_is_downscaled(tmp_path):
    report = _report(tmp_path / "big.png")
    page = Page(render_page(report, original=_picture(1500, 1).resize((1500, 1000))))
    assert _decode(page.imgs[0]["src"]).size == (512, 341)
    assert "1500×1000 input (shown at 512×341)" in " ".join(page.text)


def test_minimal_report_renders_under_strict_undefined(tmp_path):
    page = Page(render_page(ImageReport(file=str(tmp_path / "none.png"), index=None)))
    assert page.imgs == [] and "no verdict" in " ".join(page.text)


def test_index_links_every_page_and_lists_errors(tmp_path):
    out = tmp_path / "report"
    writer = ReportWriter(out)
    good = [_report(tmp_path / "in" / f"{i}.png") for i in (1, 2)]
    bad = ImageReport(file=str(tmp_path / "in" / "3.png"), index=3, error="in/3.png: not an image")
    pages = [writer.add(r) for r in [*good, bad]]
    assert [p.name for p in pages] == ["1.html", "2.html", "3.html"]
    error_page = Page(pages[2].read_text())
    assert error_page.ids["error"].strip() == "error: in/3.png: not an image"
    index = Page(writer.write_index().read_text())
    rows = index.body_rows("images")
    assert len(rows) == 2 and rows[0][1].startswith("1.png") and rows[0][2].startswith("FAKE") and rows[0][3] == "2"
    assert index.links == ["1.html", "2.html", "3.html"]
    assert all((out / link).exists() for link in index.links)
    assert len(index.imgs) == 2 and all(_decode(im["src"]).size == (32, 32) for im in index.imgs)
    assert index.body_rows("errors") == [[str(tmp_path / "in" / "3.png"), "in/3.png: not an image"]]
    assert "3 image(s): 2 fake, 0 real, 0 without a verdict, 1 failed" in " ".join(" ".join(index.text).split())


def test_same_stem_in_two_folders_gets_two_pages(tmp_path):
    writer = ReportWriter(tmp_path / "report")
    a, b = _report(tmp_path / "a" / "1.png"), _report(tmp_path / "b" / "1.png", verdict="real", p_fake=0.1)
    page_a, page_b = writer.add(a), writer.add(b)
    assert page_a.name == "1.html" and page_b.name.startswith("1-") and page_a != page_b
    assert writer.add(a) == page_a  # a rerun writes the same page again
    index = Page(writer.write_index().read_text())
    assert index.links == ["1.html", page_b.name]
    assert "REAL" in " ".join(Page(page_b.read_text()).text)


def test_page_owner_survives_odd_file_names(tmp_path):
    writer = ReportWriter(tmp_path / "report")
    report = _report(tmp_path / 'we"ird <name>.png')
    page = writer.add(report)
    assert writer.page_for(report.file) == page


def test_resumed_index_includes_earlier_pages(tmp_path):
    out = tmp_path / "report"
    first = _report(tmp_path / "in" / "1.png")
    ReportWriter(out).add(first)
    # a later run (new writer) sees the first image only as a results.jsonl record
    second = _report(tmp_path / "in" / "2.png")
    writer = ReportWriter(out)
    writer.add(second)
    index = Page(writer.write_index([first.to_dict(), second.to_dict()]).read_text())
    assert index.links == ["1.html", "2.html"]
    assert len(index.imgs) == 2  # the earlier image's thumbnail is made again from its file
    # a record whose page was never written is listed without a link
    index = Page(render_index([{**first.to_dict(), "page": None, "thumb": None}]))
    assert index.links == [] and "(no page)" in " ".join(index.text)


def test_cli_writes_index_and_page(tmp_path, capsys):
    img = tmp_path / "in" / "4.png"
    img.parent.mkdir()
    _picture(32, 4).save(img)
    out = tmp_path / "report"
    assert main([str(img), "--no-vlm", "--device", "cpu", "--report", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["4.html", "index.html"]
    page = Page((out / "4.html").read_text())
    assert "VLM questions skipped: --no-vlm was given" in page.ids["skipped"]
    assert [im["alt"] for im in page.imgs] == ["original", "super-resolved", "foreground mask"]
    assert Page((out / "index.html").read_text()).links == ["4.html"]
    assert f"wrote {out / 'index.html'}" in capsys.readouterr().err


def test_cli_resume_keeps_earlier_images_in_index(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    _picture(32, 1).save(folder / "1.png")
    common = ["--no-vlm", "--device", "cpu", "--out", str(tmp_path / "out"), "--report", str(tmp_path / "report")]
    assert main([str(folder / "1.png"), *common]) == 0
    _picture(32, 2).save(folder / "2.png")
    (folder / "3.png").write_text("not an image")
    assert main([str(folder), *common, "--resume"]) == 1
    index = Page((tmp_path / "report" / "index.html").read_text())
    assert index.links == ["1.html", "2.html", "3.html"]
    assert "not an image" in index.body_rows("errors")[0][1]


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (apt-get install -y chromium)")
def test_page_loads_in_headless_chromium(tmp_path):
    page = tmp_path / "report" / "1.html"
    ReportWriter(page.parent).add(_report(tmp_path / "1.png"))
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    dom = Page(result.stdout)  # the DOM after Chromium parsed it: the same pieces survive
    assert [im["alt"] for im in dom.imgs] == ["original", "super-resolved", "Grad-CAM", "foreground mask"]
    assert len(dom.body_rows("questions")) == 4 and "script" not in dom.tags


def test_untrained_classifier_verdict_is_flagged():
    from explainer.outputs.report import _verdict

    flagged = _verdict("real", 0.47, ["classifier weights are untrained: the verdict means nothing"])
    assert flagged["label"] == "REAL?" and "untrained" in flagged["detail"] and flagged["css"] == "unknown"
    assert _verdict("real", 0.47, [])["label"] == "REAL"
