"""``explain IMAGE... --report DIR``: one self-contained HTML page per image and an ``index.html``.

Pages embed their images as base64 PNG data URIs and carry their own CSS, so a
report folder can be mailed or opened offline. Templates are jinja2 with
autoescaping on: prompts and file names come from users and must not become markup.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import re
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import Environment, PackageLoader, StrictUndefined

from explainer.engine.regions import describe
from PIL import Image

import explainer
from explainer.outputs.names import printable
from explainer.safe_io import atomic_write_text

ORIGINAL_MAX = 512  # an original larger than this is shown downscaled (a 64 MP PNG has no place in a page)
THUMB_SIZE = 64
VERSION = getattr(explainer, "__version__", "")
_SOURCE_META = re.compile(r'<meta name="explainer-source" content="([^"]*)"')

_env = Environment(loader=PackageLoader("explainer", "outputs/templates"), autoescape=True, undefined=StrictUndefined,
                   trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)


def data_uri(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _fit(image: Image.Image, size: int) -> Image.Image:
    if max(image.size) <= size:
        return image
    small = image.copy()
    small.thumbnail((size, size), Image.Resampling.LANCZOS)
    return small


def _figure(title: str, image: Image.Image | None, caption: str) -> dict[str, Any]:
    if image is None:
        return {"title": title, "src": None, "caption": caption, "size": ""}
    return {"title": title, "src": data_uri(image), "caption": caption, "size": f"{image.width}×{image.height}"}


def _load_original(file: str) -> Image.Image | None:
    """The input as the pipeline saw it (RGB), or None when it can no longer be read."""
    from explainer.errors import UsageError
    from explainer.images import load_image

    try:
        return load_image(file).image
    except (UsageError, OSError):
        return None


def _figures(report, original: Image.Image | None) -> list[dict[str, Any]]:
    art = report.artifacts or {}
    sr, boxed, heat_overlay, mask = art.get("sr"), art.get("boxed"), art.get("overlay"), art.get("mask")
    figures = []
    if original is None:
        figures.append(_figure("original", None, "the input file could not be read back"))
    else:
        shown = _fit(original, ORIGINAL_MAX)
        note = "" if shown is original else f" (shown at {shown.width}×{shown.height})"
        figures.append(_figure("original", shown, f"{original.width}×{original.height} input{note}"))
    figures.append(_figure("super-resolved", sr, f"{report.sr_method or 'unknown'} ×4" if sr is not None
                           else "not produced"))
    if heat_overlay is not None:
        from detectors.gradcam import draw_box

        cam = draw_box(heat_overlay, tuple(report.roi_box)) if report.roi_box else heat_overlay
        figures.append(_figure("Grad-CAM", cam, f"box {tuple(report.roi_box)}" if report.roi_box else "no box"))
    elif boxed is not None and report.roi_box:
        figures.append(_figure("Grad-CAM box", boxed, f"box {tuple(report.roi_box)} (no heatmap kept)"))
    else:
        # an empty slot, not the SR image again: a duplicate would look like a heatmap that found nothing
        why = "no classifier checkpoint" if report.verdict is None else "Grad-CAM found nothing pointing to 'fake'"
        figures.append(_figure("Grad-CAM", None, f"no box: {why}"))
    if mask is not None and sr is not None:
        from masks import mask_overlay

        share = float(np.asarray(mask, bool).mean())
        figures.append(_figure("foreground mask", mask_overlay(sr, mask),
                               f"{report.mask_method or 'mask'}, object {share:.0%} of the image"))
    else:
        figures.append(_figure("foreground mask", None, "not produced"))
    located = {n: r for n, r in (getattr(report, "regions", None) or {}).items() if r.get("located") and r.get("box")}
    if located and sr is not None:  # the tree's regions, each box where the walk found it (the VLM's frame)
        from detectors.gradcam import draw_box

        shown = sr
        for info in located.values():
            shown = draw_box(shown, tuple(info["box"]), color=(0, 160, 255), width=1)
        figures.append(_figure("regions", shown, printable(", ".join(f"{n} {tuple(r['box'])}" for n, r in located.items()))))
    return figures


def _p_cell(q: dict[str, Any]) -> str:
    """P(yes); otherwise how the answer came about (the same words as the terminal view)."""
    if q.get("p_yes") is not None:
        return f"{q['p_yes']:.2f}"
    if q.get("kind") == "probe" or "value" in q:  # a pixel measurement, not a VLM answer
        return "measured " + (f"{q['value']:.3g}" if q.get("value") is not None else "n/a")
    if q.get("kind") == "inferred" or "kind" not in q:  # findings carry no kind: p_yes None means inferred
        return "inferred"
    return q["kind"].replace("_", "-")  # choices and follow-ups have no P(yes)


def _p(item: dict[str, Any]) -> dict[str, Any]:
    cell = _p_cell(item)
    return {"p": cell, "p_is_number": item.get("p_yes") is not None}  # words are shown muted


UNTRAINED = "classifier weights are untrained"


def _verdict(verdict: str | None, p_fake: float | None, notes=()) -> dict[str, str]:
    if verdict is None:
        return {"label": "no verdict", "css": "unknown", "detail": "no classifier checkpoint: treated as suspect"}
    detail = f"P(fake) = {p_fake:.2f}" if p_fake is not None else ""
    if any(UNTRAINED in n for n in notes):
        # a verdict from random weights must not look like one: say so where the eye lands
        return {"label": f"{verdict.upper()}?", "css": "unknown", "detail": f"{detail}: untrained classifier, meaningless"}
    return {"label": verdict.upper(), "css": verdict, "detail": detail}


def _timings(timings: dict[str, float]) -> list[dict[str, Any]]:
    # detector_sr, detector_classifier... are the parts of "detector": list them under it
    parts = [k for k in timings if k.startswith("detector_")]
    order = []
    for key in timings:
        if key in parts:
            continue
        order.append(key)
        if key == "detector":
            order += parts
    order += [k for k in parts if k not in order]
    return [{"stage": k.removeprefix("detector_") if k in parts else k.replace("_", " "),
             "ms": f"{timings[k] * 1000:.1f}", "sub": k in parts} for k in order]


def _counts(counts: dict[str, int]) -> str:
    names = {"yes_no": "yes/no", "choices": "choices", "follow_ups": "follow-ups", "inferred": "inferred",
             "probes": "measurements", "rounds": "rounds", "forward_passes": "forward passes", "tokens": "tokens"}
    return " · ".join(f"{v} {names.get(k, k)}" for k, v in counts.items())


def render_page(report, original: Image.Image | None = None, source: str | None = None) -> str:
    """The HTML page of one :class:`~explainer.pipeline.ImageReport`.

    ``original``: the loaded input; without it ``artifacts["original"]`` is used, then the file is read again.
    """
    if original is None:
        original = (report.artifacts or {}).get("original")
    if original is None and not report.error:
        original = _load_original(report.file)
    context = {
        "version": VERSION,
        "file": printable(report.file),
        "name": printable(Path(report.file).name),
        "source": source or _source_key(report.file),
        "error": printable(report.error) if report.error else None,
        "verdict": _verdict(report.verdict, report.p_fake, report.notes),
        "facts": [(k, v) for k, v in (
            ("class", report.obj), ("region", report.region),
            ("box", str(tuple(report.roi_box)) if report.roi_box else "none"),
            ("super-resolution", report.sr_method), ("mask", report.mask_method),
            ("index", None if report.index is None else str(report.index)),
            *((f"region {n}", printable(describe(n, r))) for n, r in (getattr(report, "regions", None) or {}).items()),
        ) if v],
        "figures": [] if report.error else _figures(report, original),
        "findings": [{"artifact": f.get("artifact", ""), "explanation": f.get("explanation", ""),
                      "detail": f.get("detail"), "region": f.get("region"),
                      **_p(f)} for f in report.findings],
        "skipped": report.skipped,
        "questions": [{"round": q.get("round", ""), "node_id": q.get("node_id", ""), "prompt": q.get("prompt", ""),
                       "answer": q.get("answer", ""), **_p(q), "note": q.get("note"),
                       "css": q.get("answer") if q.get("answer") in ("yes", "no") else ""}
                      for q in report.questions],
        "counts": _counts(report.counts),
        "timings": _timings(report.timings),
        "notes": [printable(n) for n in report.notes],
    }
    return _env.get_template("report.html.j2").render(**context)


INDEX_ARTIFACTS = 4  # names listed per row in the index; the page has them all


def render_index(rows: list[dict[str, Any]], title: str = "Batch report") -> str:
    """``rows``: results.jsonl-style records plus ``page`` (a relative link or None) and ``thumb`` (a data URI or None)."""
    done = [r for r in rows if not r.get("error")]
    errors = [r for r in rows if r.get("error")]
    summary = {"images": len(rows), "errors": len(errors),
               "fake": sum(r.get("verdict") == "fake" for r in done),
               "real": sum(r.get("verdict") == "real" for r in done),
               "unknown": sum(r.get("verdict") is None for r in done)}
    items = [{"file": printable(r["file"]), "name": printable(Path(r["file"]).name), "page": r.get("page"), "thumb": r.get("thumb"),
              "verdict": _verdict(r.get("verdict"), r.get("p_fake"), r.get("notes") or ()), "findings": len(r.get("findings") or []),
              "artifacts": list(dict.fromkeys(f.get("artifact", "") for f in r.get("findings") or [])),
              "skipped": r.get("skipped")} for r in done]
    failed = [{"file": printable(r["file"]), "page": r.get("page"), "error": printable(r["error"])} for r in errors]
    return _env.get_template("index.html.j2").render(
        title=title, summary=summary, items=items, errors=failed, limit=INDEX_ARTIFACTS,
        version=VERSION)


def _source_key(file: str) -> str:
    # printable: a name that is not UTF-8 must still fit in a UTF-8 page and compare equal when read back
    return printable(str(Path(file).resolve()))


PAGE_STEM_MAX = 80
RESERVED_STEMS = {"index"}  # index.html is the batch's page: an input named index.png must not take it
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def page_stem(file: str) -> tuple[str, bool]:
    """A page's file name stem made from an input's name, and whether it is the name itself.

    Only letters, digits, ``.``, ``_`` and ``-`` survive (so a link made from it is
    plain: no ``javascript:``, no ``?``/``#``, no ``..``); a stem that had to be
    changed, or that is reserved, always gets the hash of the source added.
    """
    stem = Path(file).stem
    safe = _UNSAFE.sub("_", stem)[:PAGE_STEM_MAX].lstrip(".-") or "image"
    return safe, safe == stem and safe.lower() not in RESERVED_STEMS


def _owner(page: Path) -> str | None:
    """The input file a page was written for (its ``explainer-source`` meta tag)."""
    try:
        with page.open(encoding="utf-8") as fh:
            head = fh.read(4096)
    except OSError:
        return None
    found = _SOURCE_META.search(head)
    return html.unescape(found.group(1)) if found else None


class ReportWriter:
    """Writes ``DIR/<stem>.html`` as each image finishes, and ``DIR/index.html`` at the end of the run.

    Two inputs with the same stem (``a/1.png``, ``b/1.png``) must not overwrite each
    other: each page names its source file, and a stem taken by another file gets
    ``<stem>-<hash>.html``. The same rule finds the pages of earlier (resumed) runs.
    """

    def __init__(self, directory: Path) -> None:
        from explainer.errors import UsageError

        if directory.exists() and not directory.is_dir():
            raise UsageError(f"{directory}: --report must be a directory")
        directory.mkdir(parents=True, exist_ok=True)
        self.dir = directory
        self.reports: dict[str, dict[str, Any]] = {}  # this run's records, by source key
        self.thumbs: dict[str, str | None] = {}

    def page_for(self, file: str, create: bool = False) -> Path | None:
        key = _source_key(file)
        stem, plain_ok = page_stem(file)
        plain = self.dir / f"{stem}.html"
        hashed = self.dir / f"{stem}-{hashlib.sha1(key.encode()).hexdigest()[:8]}.html"
        if plain_ok and plain.exists() and _owner(plain) == key:
            return plain
        if hashed.exists() and _owner(hashed) == key:
            return hashed
        if not create:
            return None
        return hashed if plain.exists() or not plain_ok else plain

    def add(self, report, original: Image.Image | None = None) -> Path:
        key = _source_key(report.file)
        if original is None:
            original = (report.artifacts or {}).get("original")
        if original is None and not report.error:
            original = _load_original(report.file)
        page = self.page_for(report.file, create=True)
        atomic_write_text(page, render_page(report, original, source=key))
        self.reports[key] = report.to_dict()
        self.thumbs[key] = data_uri(_fit(original, THUMB_SIZE)) if original is not None else None
        return page

    def write_index(self, records: list[dict[str, Any]] | None = None) -> Path:
        """``records``: every image of the run, earlier (resumed) ones included; default: this run's."""
        records = records if records is not None else list(self.reports.values())
        rows = []
        for r in records:
            key = _source_key(r["file"])
            page = self.page_for(r["file"])
            if key in self.thumbs:
                thumb = self.thumbs[key]
            else:  # done in an earlier run: its page exists, the thumbnail is made again from the file
                original = None if r.get("error") else _load_original(r["file"])
                thumb = data_uri(_fit(original, THUMB_SIZE)) if original is not None else None
            rows.append({**r, "page": page.name if page else None, "thumb": thumb})
        index = self.dir / "index.html"
        atomic_write_text(index, render_index(rows))
        return index
