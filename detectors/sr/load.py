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

# Caps on the architecture a weights file (or sr.json) may ask for, checked
# before anything is allocated: a 7 KB file whose key names say
# ``body.99999999.rdb1.conv1.weight`` must not build a hundred-million-block net.
# The released models: RRDBNet 23 blocks, 64 features, growth 32 (16.7 M
# parameters); SRVGGNetCompact 32 convs, 64 features (1.2 M).
MAX_RRDB_BLOCKS = 64
MAX_SRVGG_CONVS = 128
MAX_SR_FEATURES = 256
MAX_SR_GROWTH = 256
MAX_SR_PARAMETERS = 100_000_000
SR_KWARGS = {
    "rrdbnet": {"num_in_ch": (1, 4), "num_out_ch": (1, 4), "scale": (1, 4), "num_feat": (1, MAX_SR_FEATURES),
                "num_block": (0, MAX_RRDB_BLOCKS), "num_grow_ch": (1, MAX_SR_GROWTH)},
    "srvgg": {"num_in_ch": (1, 4), "num_out_ch": (1, 4), "num_feat": (1, MAX_SR_FEATURES),
              "num_conv": (0, MAX_SRVGG_CONVS), "upscale": (1, 4)},
}
_CAP_NAMES = {"num_block": "MAX_RRDB_BLOCKS", "num_conv": "MAX_SRVGG_CONVS", "num_feat": "MAX_SR_FEATURES",
              "num_grow_ch": "MAX_SR_GROWTH"}


def sr_parameter_count(arch: str, kw: dict[str, int]) -> int:
    """Parameters the constructor would allocate (weights + biases), computed without building it."""
    if arch == "rrdbnet":
        f, g, cin = kw["num_feat"], kw["num_grow_ch"], kw["num_in_ch"] * {4: 1, 2: 4, 1: 16}.get(kw["scale"], 1)
        rdb = sum((f + i * g) * 9 * g + g for i in range(4)) + (f + 4 * g) * 9 * f + f
        return (cin * 9 * f + f) + kw["num_block"] * 3 * rdb + 4 * (f * 9 * f + f) + f * 9 * kw["num_out_ch"] + kw["num_out_ch"]
    f, n = kw["num_feat"], kw["num_conv"]
    out = kw["num_out_ch"] * kw["upscale"] ** 2
    return (kw["num_in_ch"] * 9 * f + f) + n * (f * 9 * f + f) + (n + 1) * f + f * 9 * out + out


def check_sr_kwargs(arch: str, kwargs: dict[str, Any], source: str, keys: dict[str, str] | None = None) -> None:
    """Types, ranges and the total size, each failure naming the key (or the
    state-dict key it was read from) and the cap."""
    spec = SR_KWARGS[arch]
    keys = keys or {}
    for name, value in kwargs.items():
        if name not in spec and name != "act_type":
            raise UsageError(f"{source}: unknown argument {name!r} for {arch}")
    for name, (lo, hi) in spec.items():
        value = kwargs.get(name)
        where = keys.get(name, name)
        if type(value) is not int:
            raise UsageError(f"{source}: {where}: {name} must be an integer, got {str(value)[:40]!r}")
        if not lo <= value <= hi:
            cap = f" ({_CAP_NAMES[name]})" if name in _CAP_NAMES and value > hi else ""
            raise UsageError(f"{source}: {where} implies {name} = {value}, outside {lo}..{hi}{cap}")
    if arch == "rrdbnet" and kwargs["scale"] not in (1, 2, 4):
        raise UsageError(f"{source}: scale must be 1, 2 or 4")
    if arch == "srvgg" and kwargs.get("act_type", "prelu") not in ("relu", "prelu", "leakyrelu"):
        raise UsageError(f"{source}: act_type must be relu, prelu or leakyrelu")
    total = sr_parameter_count(arch, kwargs)
    if total > MAX_SR_PARAMETERS:
        raise UsageError(f"{source}: the {arch} these settings describe has {total:,} parameters, over the cap of "
                         f"{MAX_SR_PARAMETERS:,} (MAX_SR_PARAMETERS)")


def _conv(state: dict[str, torch.Tensor], key: str, path: str | Path) -> torch.Tensor:
    t = state[key]
    if t.ndim != 4:
        raise UsageError(f"{path}: {key} has shape {tuple(t.shape)}; a convolution weight has 4 dimensions")
    return t


def _index(key: str, path: str | Path) -> int:
    part = key.split(".")[1] if key.count(".") >= 1 else ""
    if not part.isdigit() or len(part) > 9:
        if part.isdigit():
            return 10**9  # an absurd index: the caps below name the key
        raise UsageError(f"{path}: unexpected key {key[:80]!r} (body.<index>... expected)")
    return int(part)


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
        w = _conv(state, "conv_first.weight", path)
        in_ch = int(w.shape[1])
        scale = {3: 4, 12: 2, 48: 1}.get(in_ch)
        if scale is None:
            raise UsageError(f"{path}: conv_first takes {in_ch} channels; expected 3, 12 or 48")
        blocks = {_index(k, path): k for k in state if k.startswith("body.")}
        kwargs = dict(
            num_in_ch=3,
            num_out_ch=int(_conv(state, "conv_last.weight", path).shape[0]) if "conv_last.weight" in state else 3,
            scale=scale,
            num_feat=int(w.shape[0]),
            num_block=(max(blocks) + 1) if blocks else 0,
            num_grow_ch=int(_conv(state, "body.0.rdb1.conv1.weight", path).shape[0]) if "body.0.rdb1.conv1.weight" in state else 32,
        )
        keys = {"num_feat": "conv_first.weight", "num_block": blocks[max(blocks)] if blocks else "body.*",
                "num_grow_ch": "body.0.rdb1.conv1.weight", "num_out_ch": "conv_last.weight"}
        check_sr_kwargs("rrdbnet", kwargs, str(path), keys)
        return "rrdbnet", kwargs
    if "body.0.weight" in state and state["body.0.weight"].ndim == 4:
        first = _conv(state, "body.0.weight", path)
        indices = {_index(k, path): k for k in state if k.startswith("body.")}
        last = max(indices)
        if last > 2 * MAX_SRVGG_CONVS + 2:
            raise UsageError(f"{path}: key {indices[last][:80]!r} implies num_conv = {(last - 2) // 2}, over the cap of "
                             f"{MAX_SRVGG_CONVS} (MAX_SRVGG_CONVS)")
        if f"body.{last}.weight" not in state or state[f"body.{last}.weight"].ndim != 4:
            raise UsageError(f"{path}: body.{last}.weight is missing or not a convolution")
        in_ch = int(first.shape[1])
        out_ch = int(state[f"body.{last}.weight"].shape[0])
        upscale = math.isqrt(out_ch // in_ch) if in_ch else 0
        if upscale * upscale * in_ch != out_ch or in_ch == 0:
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
        keys = {"num_feat": "body.0.weight", "num_conv": indices[last], "num_in_ch": "body.0.weight",
                "num_out_ch": "body.0.weight", "upscale": f"body.{last}.weight"}
        check_sr_kwargs("srvgg", kwargs, str(path), keys)
        return "srvgg", kwargs
    raise UsageError(f"{path}: not Real-ESRGAN weights (no conv_first.* or body.0.* keys)")


def build_sr_net(arch: str, kwargs: dict[str, Any]) -> nn.Module:
    check_sr_kwargs(arch, kwargs, f"{arch} settings")
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
