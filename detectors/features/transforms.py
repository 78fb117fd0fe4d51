"""The image transforms of seed 002's robustness study, applied before the backbone's processor.

A transform is a short spec: ``none``, ``blur:SIGMA`` (Gaussian blur), ``jitter:S``
(brightness, contrast and saturation each scaled by a factor drawn in [1-S, 1+S]),
``jpeg:QUALITY`` (re-encoded once at that quality), or several joined by ``+``
(``blur:1+jitter:0.4``). Random parts draw from a generator seeded by the file's
name and the spec, so the same image always gets the same transform: features
can be cached and a train x test matrix is reproducible.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from explainer.errors import UsageError

KINDS = {"blur": (0.0, 20.0), "jitter": (0.0, 1.0), "jpeg": (1, 100)}
DEFAULT_ROBUSTNESS = ("none", "blur:1", "jitter:0.4", "jpeg:75")


@dataclass(frozen=True)
class Step:
    kind: str
    value: float


def parse_transform(spec: str) -> tuple[Step, ...]:
    spec = spec.strip().lower()
    if spec in ("", "none"):
        return ()
    steps = []
    for part in spec.split("+"):
        kind, _, value = part.strip().partition(":")
        if kind not in KINDS:
            raise UsageError(f"transform {spec!r}: unknown {kind!r}; use none, blur:SIGMA, jitter:S, jpeg:QUALITY")
        lo, hi = KINDS[kind]
        try:
            number = float(value) if value else {"blur": 1.0, "jitter": 0.4, "jpeg": 75}[kind]
        except ValueError:
            raise UsageError(f"transform {spec!r}: {value!r} is not a number") from None
        if not lo <= number <= hi:
            raise UsageError(f"transform {spec!r}: {kind} must be in [{lo}, {hi}]")
        steps.append(Step(kind, number))
    return tuple(steps)


def canonical(spec: str) -> str:
    steps = parse_transform(spec)
    return "+".join(f"{s.kind}:{s.value:g}" for s in steps) or "none"


def apply_transform(image: Image.Image, spec: str, seed_text: str) -> Image.Image:
    steps = parse_transform(spec)
    if not steps:
        return image
    seed = int.from_bytes(hashlib.sha256(f"{seed_text}|{canonical(spec)}".encode()).digest()[:8], "little")
    rng = np.random.default_rng(seed)
    out = image.convert("RGB")
    for step in steps:
        if step.kind == "blur":
            out = out.filter(ImageFilter.GaussianBlur(radius=step.value))
        elif step.kind == "jitter":
            for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
                out = enhancer(out).enhance(float(rng.uniform(1 - step.value, 1 + step.value)))
        elif step.kind == "jpeg":
            buf = io.BytesIO()
            out.save(buf, format="JPEG", quality=int(step.value))
            buf.seek(0)
            with Image.open(buf) as decoded:
                out = decoded.convert("RGB")
    return out
