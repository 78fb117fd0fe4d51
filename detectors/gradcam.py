"""Grad-CAM (Selvaraju et al. 2017) and the region-of-interest box drawn from it.

alpha_k = mean over positions of d(logit)/dA^k; map = ReLU(sum_k alpha_k A^k),
upsampled bilinearly to the input size, min-max normalised per image. The hook
lives only inside the ``with`` block so a model is never left instrumented.

Transformer layers give tokens (B, N, C) instead of maps (B, C, H, W): the
prefix tokens (class, register) are dropped and the patch tokens reshaped to
their square grid, as pytorch-grad-cam does for ViTs.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn
from torch.nn import functional as F

BOX_SIZE = 80
BOX_COLOR = (255, 0, 0)
BOX_WIDTH = 2


@dataclass
class CamOutput:
    heatmaps: np.ndarray  # (B, H, W) float32 in [0, 1]
    logits: torch.Tensor  # (B,)
    flat: np.ndarray  # (B,) bool: the map was all zero (no evidence for the target)


def resolve_module(model: nn.Module, layer: str | nn.Module) -> nn.Module:
    if isinstance(layer, nn.Module):
        return layer
    modules = dict(model.named_modules())
    if layer not in modules:
        raise KeyError(f"no module named {layer!r} in the model")
    return modules[layer]


class GradCAM:
    """``with GradCAM(model, 'backbone.features.denseblock3') as cam: out = cam(x)``."""

    def __init__(self, model: nn.Module, target_layer: str | nn.Module, prefix_tokens: int | None = None) -> None:
        self.model = model
        self.layer = resolve_module(model, target_layer)
        # For token layers: how many leading tokens are not patches (None: read it off the model).
        if prefix_tokens is None:
            prefix_tokens = next((int(m.num_prefix_tokens) for m in model.modules() if hasattr(m, "num_prefix_tokens")), None)
        self.prefix_tokens = prefix_tokens
        self._handle: torch.utils.hooks.RemovableHandle | None = None
        self._activation: torch.Tensor | None = None
        self.last_timing: dict[str, float] = {}

    def _hook(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        # Clone so a later in-place op cannot change what we differentiate against.
        out = output.clone()
        self._activation = out
        return out

    def __enter__(self) -> "GradCAM":
        self._handle = self.layer.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self._activation = None

    def __call__(self, x: torch.Tensor) -> CamOutput:
        if self._handle is None:
            raise RuntimeError("GradCAM must be used inside a 'with' block")
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.enable_grad():
                t0 = time.perf_counter()
                logits = self.model(x).reshape(-1)
                t1 = time.perf_counter()
                act = self._activation
                if act is None:
                    raise RuntimeError("the Grad-CAM layer did not run in the forward pass")
                # Samples are independent in eval mode, so one backward of the
                # sum gives every sample's own gradient. Only the part of the
                # graph after the layer is traversed.
                (grads,) = torch.autograd.grad(logits.sum(), act)
        finally:
            self.model.train(was_training)
        if act.ndim == 3:
            act, grads = self._tokens_to_map(act), self._tokens_to_map(grads)
        elif act.ndim != 4:
            raise RuntimeError(f"Grad-CAM needs a (B, C, H, W) map or (B, N, C) tokens, got shape {tuple(act.shape)}")
        alpha = grads.mean(dim=(2, 3), keepdim=True)
        cam = F.relu((alpha * act).sum(dim=1, keepdim=True)).detach()
        cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        lo = cam.amin(dim=(1, 2), keepdim=True)
        hi = cam.amax(dim=(1, 2), keepdim=True)
        span = hi - lo
        flat = (span <= 1e-12).reshape(-1)
        cam = torch.where(span > 1e-12, (cam - lo) / span.clamp_min(1e-12), torch.zeros_like(cam))
        self._activation = None
        # The forward pass doubles as the classification, so callers need not run the model twice.
        self.last_timing = {"forward": t1 - t0, "cam": time.perf_counter() - t1}
        return CamOutput(cam.float().cpu().numpy(), logits.detach(), flat.cpu().numpy())


    def _tokens_to_map(self, t: torch.Tensor) -> torch.Tensor:
        b, n, c = t.shape
        prefix = self.prefix_tokens if self.prefix_tokens is not None else n - math.isqrt(n) ** 2
        side = math.isqrt(n - prefix)
        if prefix < 0 or side * side != n - prefix:
            raise RuntimeError(f"cannot arrange {n} tokens ({prefix} prefix) on a square grid")
        return t[:, prefix:, :].transpose(1, 2).reshape(b, c, side, side)


def peak(heatmap: np.ndarray) -> tuple[int, int]:
    """(x, y) of the maximum; ties go to the first in row-major order."""
    y, x = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    return int(x), int(y)


def box_around(center: tuple[int, int], image_size: tuple[int, int], size: int = BOX_SIZE) -> tuple[int, int, int, int]:
    """size x size box centred on ``center``, shifted (not shrunk) to lie inside
    the image; (x0, y0, x1, y1) with x1/y1 exclusive. Smaller images get the whole image."""
    w, h = image_size
    cx, cy = center
    bw, bh = min(size, w), min(size, h)
    x0 = min(max(cx - bw // 2, 0), w - bw)
    y0 = min(max(cy - bh // 2, 0), h - bh)
    return x0, y0, x0 + bw, y0 + bh


def draw_box(image: Image.Image, box: tuple[int, int, int, int], color=BOX_COLOR, width: int = BOX_WIDTH) -> Image.Image:
    out = image.convert("RGB").copy()
    x0, y0, x1, y1 = box
    # PIL's rectangle is inclusive of x1/y1; ours are exclusive.
    ImageDraw.Draw(out).rectangle([x0, y0, x1 - 1, y1 - 1], outline=color, width=width)
    return out


def overlay(image: Image.Image, heatmap: np.ndarray, alpha: float = 0.45) -> Image.Image:
    """Heatmap in the JET colormap blended over the image, for reports."""
    base = np.asarray(image.convert("RGB"), dtype=np.float32)
    heat = cv2.resize(heatmap.astype(np.float32), (base.shape[1], base.shape[0]), interpolation=cv2.INTER_LINEAR)
    colored = cv2.applyColorMap((heat * 255).clip(0, 255).astype(np.uint8), cv2.COLORMAP_JET)
    colored = cv2.cvtColor(colored, cv2.COLOR_BGR2RGB).astype(np.float32)
    return Image.fromarray(((1 - alpha) * base + alpha * colored).round().clip(0, 255).astype(np.uint8))
