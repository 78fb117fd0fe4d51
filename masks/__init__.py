"""Foreground masks: a pix2pix C-GAN when a checkpoint is given, GrabCut otherwise.

Public API::

    from masks import MaskPredictor, MaskResult, region_of_box, mask_overlay, load_mask_file
    predictor = MaskPredictor.from_checkpoint(path_or_None, device="cpu")
    results = predictor.predict([pil_image, ...])

Torch is imported on first use of the C-GAN parts only through the submodules.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MaskPredictor", "MaskResult", "region_of_box", "object_fraction", "mask_overlay", "load_mask_file"]

_WHERE = {
    "MaskPredictor": "masks.predictor",
    "MaskResult": "masks.predictor",
    "region_of_box": "masks.regions",
    "object_fraction": "masks.regions",
    "mask_overlay": "masks.regions",
    "load_mask_file": "masks.maskfile",
}


def __getattr__(name: str) -> Any:
    # Lazy, so `import masks.cli` (done by `explain train --help`) does not import torch.
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'masks' has no attribute {name!r}")
