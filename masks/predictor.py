"""The pipeline's entry point: foreground masks from a trained C-GAN, or GrabCut without one."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from masks import checkpoint as ckpt
from masks.data import to_tensor_image
from masks.grabcut import NOTE as GRABCUT_NOTE
from masks.grabcut import GrabCutConfig, grabcut_mask
from masks.unet import UnetGenerator


@dataclass
class MaskResult:
    mask: np.ndarray  # bool, H x W at the input image's size; True on the object
    method: str  # 'cgan' or 'grabcut'
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0  # time spent on this image (a batch's time is shared equally)


class MaskPredictor:
    """Use ``MaskPredictor.from_checkpoint(path_or_None)``; ``predict(images)`` returns one MaskResult each."""

    def __init__(
        self,
        generator: UnetGenerator | None = None,
        device: str = "cpu",
        batch_size: int = 16,
        threshold: float = 0.5,
        grabcut: GrabCutConfig = GrabCutConfig(),
        meta: dict[str, Any] | None = None,
        source: str | None = None,
    ) -> None:
        self.generator = generator.to(device).eval() if generator is not None else None
        self.device = device
        self.batch_size = batch_size
        self.threshold = threshold
        self.grabcut = grabcut
        self.meta = meta or {}
        self.source = source

    @classmethod
    def from_checkpoint(
        cls, path: str | Path | None, device: str = "cpu", batch_size: int = 16, threshold: float = 0.5
    ) -> "MaskPredictor":
        """path: a training output directory (uses its best), a .safetensors/.json, or None for GrabCut."""
        if path is None:
            return cls(None, device, batch_size, threshold)
        stem = ckpt.resolve(path)
        generator, _, meta = ckpt.load_models(stem, device)
        return cls(generator, device, batch_size, threshold, meta=meta, source=str(stem))

    @property
    def method(self) -> str:
        return "grabcut" if self.generator is None else "cgan"

    def predict(self, images: Sequence[Image.Image]) -> list[MaskResult]:
        if self.generator is None:
            return [self._grabcut(img) for img in images]
        results: list[MaskResult] = []
        for start in range(0, len(images), self.batch_size):
            results.extend(self._cgan(list(images[start:start + self.batch_size])))
        return results

    def predict_one(self, image: Image.Image) -> MaskResult:
        return self.predict([image])[0]

    def _grabcut(self, image: Image.Image) -> MaskResult:
        t0 = time.perf_counter()
        mask = grabcut_mask(image, self.grabcut)
        return self._finish(MaskResult(mask, "grabcut", [GRABCUT_NOTE], time.perf_counter() - t0))

    @torch.no_grad()
    def _cgan(self, images: list[Image.Image]) -> list[MaskResult]:
        assert self.generator is not None
        t0 = time.perf_counter()
        size = self.generator.config.size
        # Same preprocessing as training: RGB, squashed to size x size with bicubic.
        batch = torch.stack([
            to_tensor_image(np.asarray(img.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)))
            for img in images
        ]).to(self.device)
        prob = self.generator.probability(batch)
        masks = []
        for p, img in zip(prob, images):
            w, h = img.size
            if (w, h) != (size, size):
                p = F.interpolate(p[None], size=(h, w), mode="bilinear", align_corners=False)[0]
            masks.append((p[0] > self.threshold).cpu().numpy())
        each = (time.perf_counter() - t0) / len(images)
        epoch, iou = self.meta.get("epoch"), self.meta.get("val_iou")
        note = f"mask from C-GAN checkpoint {self.source} (epoch {epoch}, held-out IoU {iou:.3f})" if iou is not None \
            else f"mask from C-GAN checkpoint {self.source}"
        return [self._finish(MaskResult(m, "cgan", [note], each)) for m in masks]

    @staticmethod
    def _finish(result: MaskResult) -> MaskResult:
        if not result.mask.any():
            result.notes.append("no foreground found: the whole image counts as background")
        elif result.mask.all():
            result.notes.append("everything was marked foreground: the whole image counts as the object")
        return result
