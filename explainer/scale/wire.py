"""How an image's report travels from a Ray actor to the driver.

A record goes as the JSON text results.jsonl will hold (so the driver writes
exactly what the local engine writes), and the images an HTML report needs go
as one ``.npz`` of plain arrays, read back with ``allow_pickle=False``: the
driver never unpickles what a worker produced.
"""

from __future__ import annotations

import dataclasses
import io
import json
from typing import Any

import numpy as np
from PIL import Image

from explainer.pipeline import ImageReport

# The report artifacts worth shipping; "original" is left out: the driver reads its own input file again.
SHIPPED_ARTIFACTS = ("sr", "boxed", "overlay", "heatmap", "mask")
_FIELDS = {f.name for f in dataclasses.fields(ImageReport)} - {"artifacts"}


def encode_record(report: ImageReport) -> str:
    return json.dumps(report.to_dict())


def decode_record(text: str) -> ImageReport:
    record = json.loads(text)
    if not isinstance(record, dict) or not isinstance(record.get("file"), str):
        raise ValueError("a worker sent a record that is not a report")
    return ImageReport(**{k: v for k, v in record.items() if k in _FIELDS})


def encode_artifacts(artifacts: dict[str, Any]) -> bytes:
    """PIL images as ``img:<name>`` uint8 arrays, arrays as ``arr:<name>``; anything else stays behind."""
    arrays: dict[str, np.ndarray] = {}
    for name in SHIPPED_ARTIFACTS:
        value = artifacts.get(name)
        if isinstance(value, Image.Image):
            arrays[f"img:{name}"] = np.asarray(value.convert("RGB") if value.mode not in ("RGB", "L") else value)
        elif isinstance(value, np.ndarray) and value.dtype != object:
            arrays[f"arr:{name}"] = value
    if not arrays:
        return b""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def decode_artifacts(data: bytes) -> dict[str, Any]:
    if not data:
        return {}
    out: dict[str, Any] = {}
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        for key in npz.files:
            kind, _, name = key.partition(":")
            if name not in SHIPPED_ARTIFACTS:
                continue
            value = npz[key]
            out[name] = Image.fromarray(value) if kind == "img" else value
    return out
