"""Super-resolution front end: load Real-ESRGAN-style weights, or fall back to bicubic.

The architecture is read off the state-dict keys, so the released
``RealESRGAN_x4plus.pth`` / ``realesr-general-x4v3.pth`` and our own
safetensors checkpoints (from ``explain train sr``) load the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from detectors.checkpoint import load_strict, read_safetensors, read_torch
from detectors.sr.rrdbnet import RRDBNet
from detectors.sr.srvgg import SRVGGNetCompact
from explainer.errors import UsageError

NO_WEIGHTS_REASON = "no SR weights given"


def unwrap_state_dict(obj: Any, path: str | Path) -> dict[str, torch.Tensor]:
    """Released files wrap the weights: prefer ``params_ema`` (the EMA generator
    the authors evaluate), else ``params``, else take the dict as it is."""
    if not isinstance(obj, dict):
        raise UsageError(f"{path}: expected a state dict, found {type(obj).__name__}")
    for key in ("params_ema", "params"):
        if key in obj:
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UsageError(f"{path}: no tensors found (expected params_ema, params or a bare state dict)")
    return obj


def infer_architecture(state: dict[str, torch.Tensor], path: str | Path) -> tuple[str, dict[str, Any]]:
    """Return ('rrdbnet'|'srvgg', constructor kwargs) from the key names and shapes."""
    if "conv_first.weight" in state:
        w = state["conv_first.weight"]
        in_ch = int(w.shape[1])
        scale = {3: 4, 12: 2, 48: 1}.get(in_ch)
        if scale is None:
            raise UsageError(f"{path}: conv_first takes {in_ch} channels; expected 3, 12 or 48")
        blocks = {int(k.split(".")[1]) for k in state if k.startswith("body.")}
        kwargs = dict(
            num_in_ch=3,
            num_out_ch=int(state["conv_last.weight"].shape[0]) if "conv_last.weight" in state else 3,
            scale=scale,
            num_feat=int(w.shape[0]),
            num_block=(max(blocks) + 1) if blocks else 0,
            num_grow_ch=int(state["body.0.rdb1.conv1.weight"].shape[0]) if "body.0.rdb1.conv1.weight" in state else 32,
        )
        return "rrdbnet", kwargs
    if "body.0.weight" in state and state["body.0.weight"].ndim == 4:
        first = state["body.0.weight"]
        idx = sorted({int(k.split(".")[1]) for k in state if k.startswith("body.")})
        last = idx[-1]
        in_ch = int(first.shape[1])
        out_ch = int(state[f"body.{last}.weight"].shape[0])
        upscale = math.isqrt(out_ch // in_ch)
        if upscale * upscale * in_ch != out_ch:
            raise UsageError(f"{path}: last conv has {out_ch} channels, not 3*scale^2")
        # An activation with parameters at index 1 means PReLU (the released models).
        act = "prelu" if "body.1.weight" in state else "relu"
        kwargs = dict(
            num_in_ch=in_ch,
            num_out_ch=in_ch,
            num_feat=int(first.shape[0]),
            num_conv=(last - 2) // 2,
            upscale=upscale,
            act_type=act,
        )
        return "srvgg", kwargs
    raise UsageError(f"{path}: not Real-ESRGAN weights (no conv_first.* or body.0.* keys)")


def build_sr_net(arch: str, kwargs: dict[str, Any]) -> nn.Module:
    if arch == "rrdbnet":
        return RRDBNet(**kwargs)
    if arch == "srvgg":
        return SRVGGNetCompact(**kwargs)
    raise ValueError(f"unknown SR architecture {arch!r}")


def sr_scale(arch: str, kwargs: dict[str, Any]) -> int:
    return int(kwargs.get("scale", 4)) if arch == "rrdbnet" else int(kwargs.get("upscale", 4))


def read_sr_state(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    return unwrap_state_dict(read_torch(path), path)


@dataclass
class SuperResolver:
    """Upscales batches in [0, 1]. ``method`` says what actually ran."""

    method: str = "bicubic"
    scale: int = 4
    net: nn.Module | None = None
    reason: str | None = NO_WEIGHTS_REASON
    path: str | None = None
    arch_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        if self.net is None:
            return torch.device("cpu")
        return next(self.net.parameters()).device

    def to(self, device: str | torch.device) -> "SuperResolver":
        if self.net is not None:
            self.net.to(device)
        return self

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.net is None:
            out = F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)
        else:
            self.net.eval()
            out = self.net(x.to(self.device)).to(x.device)
        # Bicubic overshoots and the nets are unbounded; the classifier expects [0, 1].
        return out.clamp_(0.0, 1.0)

    def upscale_pil(self, images: list[Image.Image]) -> list[Image.Image]:
        batch = torch.stack([pil_to_tensor(im) for im in images])
        return [tensor_to_pil(t) for t in self(batch)]


def load_sr(path: str | Path | None, device: str | torch.device = "cpu") -> SuperResolver:
    """Load SR weights (.pth release format or our .safetensors); ``None`` gives bicubic."""
    if path is None:
        return SuperResolver()
    path = Path(path)
    state = read_sr_state(path)
    arch, kwargs = infer_architecture(state, path)
    net = build_sr_net(arch, kwargs)
    load_strict(net, state, path, f"{arch} {kwargs}")
    net.eval().to(device)
    return SuperResolver(method=arch, scale=sr_scale(arch, kwargs), net=net, reason=None, path=str(path), arch_kwargs=kwargs)


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    arr = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def tensor_to_pil(t: torch.Tensor) -> Image.Image:
    arr = (t.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255.0).round().astype(np.uint8)
    return Image.fromarray(arr)
