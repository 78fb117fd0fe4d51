"""Detector stage: x4 super-resolution, real/fake classifier, Grad-CAM region of interest.

Heavy modules (torch, timm) load on first use of a name below, so importing
``detectors.cli`` for argument parsing stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DetectorStage": "detectors.stage",
    "DetectorResult": "detectors.stage",
    "GradCAM": "detectors.gradcam",
    "RRDBNet": "detectors.sr.rrdbnet",
    "SRVGGNetCompact": "detectors.sr.srvgg",
    "SuperResolver": "detectors.sr.load",
    "load_sr": "detectors.sr.load",
    "Classifier": "detectors.classifier",
    "ClassifierConfig": "detectors.classifier",
    "build_classifier": "detectors.classifier",
    "load_classifier": "detectors.classifier",
    "fgsm": "detectors.fgsm",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'detectors' has no attribute {name!r}")
