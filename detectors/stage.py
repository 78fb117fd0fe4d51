"""The detector stage the engine calls: SR -> classifier -> Grad-CAM box.

One :class:`DetectorResult` per input image. Without a classifier checkpoint
the stage still super-resolves, but it cannot say where to look, so it treats
the image as suspect, gives no verdict and no box, and says so in ``notes``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from detectors.classifier import Classifier, load_classifier
from detectors.data import to_lr
from detectors.gradcam import BOX_SIZE, GradCAM, box_around, draw_box, overlay, peak
from detectors.sr.load import SuperResolver, load_sr, pil_to_tensor, tensor_to_pil

Box = tuple[int, int, int, int]


def _is_cnn_checkpoint(path: Path) -> bool:
    from detectors.classifier import CONFIG_NAME

    return (path / CONFIG_NAME).is_file() if path.is_dir() else path.suffix in (".json", ".safetensors")


def _load_cnn(path: Path, device: str):
    return load_classifier(path, device)[0]


# How ``--detector PATH`` is loaded: the first kind whose ``claims(path)`` is true
# loads it. Other detector kinds (e.g. feature heads) add themselves with
# :func:`register_detector_kind`; a folder nobody claims falls to the CNN loader,
# whose error message says what it expected.
DETECTOR_KINDS: list[tuple[str, object, object]] = [("cnn", _is_cnn_checkpoint, _load_cnn)]


def register_detector_kind(name: str, claims, load) -> None:
    """``claims(Path) -> bool``; ``load(Path, device) -> model``. Registered kinds are tried first."""
    DETECTOR_KINDS.insert(0, (name, claims, load))


def load_detector(path: str | Path, device: str = "cpu"):
    p = Path(path)
    for _, claims, load in DETECTOR_KINDS:
        if claims(p):
            return load(p, device)
    return _load_cnn(p, device)


@dataclass
class DetectorResult:
    sr_image: Image.Image  # 128x128 (or the classifier's image_size)
    sr_method: str  # 'rrdbnet' | 'srvgg' | 'bicubic'
    verdict: str | None  # 'fake' | 'real' | None (no classifier)
    p_fake: float | None
    roi_box: Box | None  # (x0, y0, x1, y1) on sr_image, x1/y1 exclusive
    boxed_image: Image.Image  # sr_image with the red box, or sr_image itself when no box
    heatmap: np.ndarray | None  # (H, W) float32 in [0, 1]
    overlay: Image.Image | None
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per image, per step


class DetectorStage:
    def __init__(
        self,
        sr: SuperResolver,
        classifier: Classifier | None = None,
        device: str | torch.device = "cpu",
        cam_layer: str | None = None,
        lr_size: int = 32,
        image_size: int = 128,
        threshold: float = 0.5,
        batch_size: int = 32,
        box_size: int = BOX_SIZE,
    ) -> None:
        self.sr = sr.to(device)
        self.classifier = classifier.to(device).eval() if classifier is not None else None
        self.device = torch.device(device)
        if classifier is not None:
            lr_size, image_size = classifier.config.lr_size, classifier.config.image_size
            cam_layer = cam_layer or classifier.default_cam_layer()
        self.cam_layer = cam_layer
        self.lr_size, self.image_size = lr_size, image_size
        self.threshold, self.batch_size, self.box_size = threshold, batch_size, box_size

    @classmethod
    def from_paths(
        cls,
        sr: str | Path | None = None,
        classifier: str | Path | None = None,
        device: str = "cpu",
        cam_layer: str | None = None,
        **kwargs,
    ) -> "DetectorStage":
        """``sr``: Real-ESRGAN .pth or our .safetensors (None: bicubic);
        ``classifier``: checkpoint folder/.safetensors/.json from ``explain train detector``,
        or a head folder from ``explain train features`` (handled by detectors.features.stage)."""
        # --- feature heads (seeds 002/004): a separate stage with the same run() -> DetectorResult API.
        from detectors.features.stage import FeatureDetectorStage, is_feature_head

        if is_feature_head(classifier):
            return FeatureDetectorStage(classifier, device, sr=sr)  # type: ignore[return-value]
        # --- end feature heads
        model = load_detector(classifier, device) if classifier is not None else None
        return cls(load_sr(sr, device), model, device, cam_layer, **kwargs)

    def run(self, images: list[Image.Image]) -> list[DetectorResult]:
        results: list[DetectorResult] = []
        for i in range(0, len(images), self.batch_size):
            results += self._run_batch(images[i : i + self.batch_size])
        return results

    def _run_batch(self, images: list[Image.Image]) -> list[DetectorResult]:
        n = len(images)
        t0 = time.perf_counter()
        lr = torch.stack([pil_to_tensor(_to_lr(im, self.lr_size)) for im in images]).to(self.device)
        x = self.sr(lr)
        if x.shape[-1] != self.image_size:
            x = F.interpolate(x, size=(self.image_size,) * 2, mode="bicubic", align_corners=False, antialias=True).clamp_(0, 1)
        sr_images = [tensor_to_pil(t) for t in x]
        t_sr = (time.perf_counter() - t0) / n
        base_notes = []
        if self.sr.method == "bicubic":
            base_notes.append(f"super-resolution: bicubic ({self.sr.reason})")
        if self.classifier is None:
            note = "no classifier checkpoint: treating the image as suspect; no Grad-CAM box"
            return [
                DetectorResult(im, self.sr.method, None, None, None, im, None, None, base_notes + [note], {"sr": t_sr})
                for im in sr_images
            ]

        # One forward pass serves both the verdict and Grad-CAM (eval mode, so
        # the logits equal a plain no_grad forward); timings split at the backward.
        with GradCAM(self.classifier, self.cam_layer) as cam:
            cams = cam(x)
            p_fake = torch.sigmoid(cams.logits).cpu().numpy()
        t_cls = cam.last_timing["forward"] / n
        t_cam = cam.last_timing["cam"] / n

        results = []
        for k, im in enumerate(sr_images):
            p = float(p_fake[k])
            verdict = "fake" if p >= self.threshold else "real"
            notes = base_notes + [f"classifier: {verdict} (P(fake) = {p:.3f})"]
            if self.classifier.random_init:
                notes.append("classifier weights are untrained: the verdict means nothing")
            heat = cams.heatmaps[k]
            if cams.flat[k]:
                notes.append("Grad-CAM found nothing pointing to 'fake'; no box")
                box, boxed, ov = None, im, None
            else:
                box = box_around(peak(heat), im.size, self.box_size)
                boxed, ov = draw_box(im, box), overlay(im, heat)
            results.append(
                DetectorResult(
                    im, self.sr.method, verdict, p, box, boxed, None if box is None else heat, ov, notes,
                    {"sr": t_sr, "classifier": t_cls, "gradcam": t_cam},
                )
            )
        return results


def _to_lr(image: Image.Image, size: int) -> Image.Image:
    # The same resize as training (detectors.data.to_lr), so the classifier sees what it learned on.
    return to_lr(image.convert("RGB"), size)
