"""Frozen feature extractors: Hugging Face vision models and timm models behind one small API.

A backbone spec names one model or several joined by ``+`` (their features are
concatenated, as in seed 002's multi-backbone runs):

* an alias from :data:`ALIASES` (``clip-vit-b32``, ``dinov2-small``, ``siglip``...),
  which stands for a Hugging Face id;
* a Hugging Face id or a local folder saved with ``save_pretrained``: loaded with
  ``AutoModel`` and the model's own ``AutoImageProcessor``; safetensors only;
* ``timm:NAME`` or ``timm:NAME=WEIGHTS``: a timm model with its own eval transform,
  weights from a local ``.safetensors`` (or a ``.pth`` read with ``weights_only=True``);
* ``dino-resnet50=WEIGHTS``: timm's ResNet-50 with the DINO weights released by
  facebookresearch/dino (``dino_resnet50_pretrain.pth``, torchvision key names).

Every backbone gives ``embed(pixels) -> (B, D)`` and, for the gradient box,
``embed_with_tokens(pixels)`` which also returns the activation the box is drawn
from (the tokens entering the last transformer block, or a CNN's last feature
map) as a leaf that requires grad. Nothing here downloads silently into a cache
the user did not ask for: a hub id that is not available offline fails with one
line saying how to get the weights.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from explainer.errors import UsageError
from explainer.safe_io import check_regular_file

ALIASES: dict[str, str] = {
    "clip-vit-b32": "openai/clip-vit-base-patch32",
    "clip-vit-b16": "openai/clip-vit-base-patch16",
    "clip-vit-l14": "openai/clip-vit-large-patch14",  # UnivFD's backbone
    "dinov2-small": "facebook/dinov2-small",
    "dinov2-base": "facebook/dinov2-base",
    "dino-vitb16": "facebook/dino-vitb16",  # seed 002's DINO ViT-B/16
    "siglip": "google/siglip-base-patch16-224",
}
DINO_RESNET50 = "dino-resnet50"
DINO_RESNET50_HINT = (
    "dino-resnet50 needs the DINO weights file released by facebookresearch/dino "
    "(dino_resnet50_pretrain.pth): --backbone dino-resnet50=PATH"
)
# A weights file bigger than this is refused before it is read (ViT-g is ~4.5 GB in fp32).
MAX_WEIGHTS_BYTES = 8 * 1024**3
# Images per forward pass; features are small, activations are not.
DEFAULT_BATCH = 32


@dataclass
class TokenActivation:
    """What the gradient box is drawn from: ``grid`` positions of ``values`` (B, gh*gw, C) or a map (B, C, gh, gw)."""

    values: torch.Tensor  # leaf tensor with requires_grad
    grid: tuple[int, int]

    def patch_tokens(self, grad: torch.Tensor | None = None) -> torch.Tensor:
        t = self.values if grad is None else grad
        if t.dim() == 4:  # CNN map: (B, C, H, W) -> (B, H*W, C)
            return t.flatten(2).transpose(1, 2)
        n = self.grid[0] * self.grid[1]
        return t[:, -n:, :]  # CLS and register tokens come first in every ViT we load


class Backbone:
    """One frozen model. Subclasses set ``model``, ``mean``/``std`` and implement the three methods."""

    kind = "base"

    def __init__(self, spec: str, ref: str, model: nn.Module, device: str | torch.device = "cpu") -> None:
        self.spec, self.ref = spec, ref
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.mean: tuple[float, ...] = (0.0, 0.0, 0.0)
        self.std: tuple[float, ...] = (1.0, 1.0, 1.0)
        self._dim: int | None = None
        self.fingerprint: dict[str, Any] = {}

    # -- the API every backbone has
    def preprocess(self, images: list[Image.Image]) -> torch.Tensor:
        raise NotImplementedError

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def embed_with_tokens(self, pixels: torch.Tensor) -> tuple[torch.Tensor, TokenActivation | None]:
        raise NotImplementedError

    # -- shared
    @property
    def dim(self) -> int:
        if self._dim is None:
            size = self.input_size()
            probe = Image.new("RGB", (size, size), (128, 128, 128))
            self._dim = int(self.features([probe]).shape[1])
        return self._dim

    def input_size(self) -> int:
        return 224

    @torch.no_grad()
    def features(self, images: list[Image.Image]) -> np.ndarray:
        pixels = self.preprocess(images).to(self.device)
        return self.embed(pixels).float().cpu().numpy()

    def view(self, pixels: torch.Tensor) -> list[Image.Image]:
        """The preprocessed inputs as images: what the model saw, where the box is drawn."""
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        x = (pixels.detach().cpu().float() * std + mean).clamp(0, 1)
        arr = (x.permute(0, 2, 3, 1).numpy() * 255.0).round().astype(np.uint8)
        return [Image.fromarray(a) for a in arr]

    def describe(self) -> dict[str, Any]:
        return {"spec": self.spec, "kind": self.kind, "ref": self.ref, **self.fingerprint}

    def cache_key(self) -> str:
        return hashlib.sha256(json.dumps(self.describe(), sort_keys=True, default=str).encode()).hexdigest()[:20]


def _last_block(model: nn.Module) -> nn.Module | None:
    """The last block of the vision transformer's layer list (never the text tower's)."""
    best = None
    for name, module in model.named_modules():
        if not isinstance(module, (nn.ModuleList, nn.Sequential)) or len(module) == 0 or "text" in name:
            continue
        if name.endswith(("encoder.layers", "encoder.layer", "blocks")):
            best = module[-1]
    return best


class _TokenCapture:
    """Replaces the input of the last transformer block by a leaf that requires grad.

    The backbone's weights are frozen, so nothing before that block needs a
    graph: the backward pass only runs through the last block and the head.
    """

    def __init__(self, block: nn.Module) -> None:
        self.block = block
        self.leaf: torch.Tensor | None = None

    def _hook(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if args:
            self.leaf = args[0].detach().requires_grad_(True)
            return (self.leaf, *args[1:]), kwargs
        self.leaf = kwargs["hidden_states"].detach().requires_grad_(True)
        return args, {**kwargs, "hidden_states": self.leaf}

    def __enter__(self) -> "_TokenCapture":
        self._handle = self.block.register_forward_pre_hook(self._hook, with_kwargs=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.remove()


class HFBackbone(Backbone):
    kind = "hf"

    def __init__(self, spec: str, ref: str, model: nn.Module, processor: Any, device="cpu") -> None:
        super().__init__(spec, ref, model, device)
        self.processor = processor
        self.mean = tuple(getattr(processor, "image_mean", None) or (0.0, 0.0, 0.0))
        self.std = tuple(getattr(processor, "image_std", None) or (1.0, 1.0, 1.0))
        config = getattr(model.config, "vision_config", model.config)
        self.patch_size = getattr(config, "patch_size", None)
        proc = processor.to_dict() if hasattr(processor, "to_dict") else {}
        proc.pop("processor_class", None)
        self.fingerprint = {"model_type": model.config.model_type, "processor": proc,
                            "revision": getattr(model.config, "_commit_hash", None), "weights": _folder_weights(ref)}
        self._block = _last_block(model)

    def input_size(self) -> int:
        probe = self.processor(images=[Image.new("RGB", (64, 64))], return_tensors="pt")["pixel_values"]
        return int(probe.shape[-1])

    def preprocess(self, images: list[Image.Image]) -> torch.Tensor:
        return self.processor(images=[im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"]

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        m = self.model
        out = m.get_image_features(pixel_values=pixels) if hasattr(m, "get_image_features") else m(pixel_values=pixels)
        if isinstance(out, torch.Tensor):
            return out.flatten(1)
        pooled = getattr(out, "pooler_output", None)
        if pooled is None:
            pooled = out.last_hidden_state.mean(dim=1)
        return pooled.flatten(1)

    def embed_with_tokens(self, pixels: torch.Tensor) -> tuple[torch.Tensor, TokenActivation | None]:
        if self._block is None or not self.patch_size:
            with torch.no_grad():
                return self.embed(pixels), None
        with _TokenCapture(self._block) as cap, torch.enable_grad():
            feats = self.embed(pixels)
        grid = (pixels.shape[-2] // self.patch_size, pixels.shape[-1] // self.patch_size)
        if cap.leaf is None or cap.leaf.dim() != 3 or cap.leaf.shape[1] < grid[0] * grid[1]:
            return feats.detach(), None
        return feats, TokenActivation(cap.leaf, grid)


def _folder_weights(ref: str) -> list[list] | None:
    """Size and mtime of a local folder's weight files: new weights in the same folder must not reuse old features."""
    folder = Path(ref)
    if not folder.is_dir():
        return None
    return [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in sorted(folder.glob("*.safetensors"))]


class TimmBackbone(Backbone):
    kind = "timm"

    def __init__(self, spec: str, ref: str, model: nn.Module, device="cpu", weights: str | None = None) -> None:
        import timm.data

        super().__init__(spec, ref, model, device)
        cfg = timm.data.resolve_data_config({}, model=model)
        self.transform = timm.data.create_transform(**cfg, is_training=False)
        self.mean, self.std = tuple(cfg["mean"]), tuple(cfg["std"])
        self._size = int(cfg["input_size"][-1])
        self.fingerprint = {"data_config": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}}
        if weights:
            st = os.stat(weights)
            self.fingerprint["weights"] = {"path": str(Path(weights).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        self._block = _last_block(model)
        self._prefix = int(getattr(model, "num_prefix_tokens", 0) or 0)

    def input_size(self) -> int:
        return self._size

    def preprocess(self, images: list[Image.Image]) -> torch.Tensor:
        return torch.stack([self.transform(im.convert("RGB")) for im in images])

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(pixels), pre_logits=True).flatten(1)

    def embed_with_tokens(self, pixels: torch.Tensor) -> tuple[torch.Tensor, TokenActivation | None]:
        with torch.no_grad():
            fmap = self.model.forward_features(pixels)
        if fmap.dim() == 4:  # CNN: Grad-CAM on the last feature map
            leaf = fmap.detach().requires_grad_(True)
            with torch.enable_grad():
                feats = self.model.forward_head(leaf, pre_logits=True).flatten(1)
            return feats, TokenActivation(leaf, (fmap.shape[-2], fmap.shape[-1]))
        if self._block is None:
            return self.embed(pixels).detach(), None
        with _TokenCapture(self._block) as cap, torch.enable_grad():
            feats = self.embed(pixels)
        n = cap.leaf.shape[1] - self._prefix
        grid = getattr(getattr(self.model, "patch_embed", None), "grid_size", None)
        if grid is None or grid[0] * grid[1] != n:
            side = int(math.isqrt(n))
            if side * side != n:
                return feats.detach(), None
            grid = (side, side)
        return feats, TokenActivation(cap.leaf, (int(grid[0]), int(grid[1])))


class ConcatBackbone(Backbone):
    """Several backbones, features concatenated in order. Each member is cached on its own."""

    kind = "concat"

    def __init__(self, members: list[Backbone]) -> None:
        self.members = members
        self.spec = "+".join(m.spec for m in members)
        self.ref = self.spec
        self.device = members[0].device
        self._dim = None
        self.fingerprint = {"members": [m.describe() for m in members]}

    @torch.no_grad()
    def features(self, images: list[Image.Image]) -> np.ndarray:
        return np.concatenate([m.features(images) for m in self.members], axis=1)

    def input_size(self) -> int:
        return self.members[0].input_size()


# ----------------------------------------------------------------------------- loading


def split_spec(spec: str) -> list[str]:
    parts = [p.strip() for p in spec.split("+")]
    if not spec.strip() or any(not p for p in parts):
        raise UsageError(f"--backbone {spec!r}: empty name (join several backbones with '+')")
    return parts


def short_name(spec: str) -> str:
    """A readable name for tables and file names: aliases as they are, folders by their last part, no weights paths."""
    names = []
    for part in split_spec(spec):
        name = part.split("=")[0]
        names.append(Path(name).name if ("/" in name and Path(name).expanduser().exists()) else name)
    return "+".join(names)


def load_backbone(spec: str, device: str = "cpu") -> Backbone:
    parts = split_spec(spec)
    if len(parts) > 1:
        return ConcatBackbone([_load_one(p, device) for p in parts])
    return _load_one(parts[0], device)


def _load_one(spec: str, device: str) -> Backbone:
    name, _, weights = spec.partition("=")
    if name == DINO_RESNET50:
        if not weights:
            raise UsageError(DINO_RESNET50_HINT)
        return _load_timm(spec, "resnet50", weights, device)
    if name.startswith("timm:"):
        return _load_timm(spec, name[5:], weights or None, device)
    if weights:
        raise UsageError(f"--backbone {spec!r}: '=WEIGHTS' is for timm:NAME and dino-resnet50 only")
    return _load_hf(spec, ALIASES.get(name, name), device)


def _resolve_hf(spec: str, ref: str) -> tuple[str, bool]:
    """(what to give from_pretrained, local_files_only); a UsageError at once when the weights cannot be had.

    Without this check an offline machine spends a minute in download retries before failing.
    """
    local = Path(ref).expanduser()
    if local.exists():
        if not local.is_dir() or not (local / "config.json").is_file():
            raise UsageError(f"backbone {spec!r}: {local} is not a model folder (expected config.json from save_pretrained)")
        check_regular_file(local / "config.json", "model config")
        return str(local.resolve()), True
    if ref.startswith(("/", ".", "~")) or ref.count("/") != 1:
        raise UsageError(f"backbone {spec!r}: no such folder, alias or Hugging Face id")
    from huggingface_hub import try_to_load_from_cache

    try:
        if isinstance(try_to_load_from_cache(ref, "config.json"), str):
            return ref, True
    except Exception:  # an unexpected cache layout is just "not cached"
        pass
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    if offline or not _hub_reachable():
        raise UsageError(
            f"backbone {spec!r}: {ref} is not in the local Hugging Face cache and the hub cannot be reached; "
            f"download it on a connected machine (huggingface-cli download {ref}) or pass the local folder"
        )
    return ref, False


def _hub_reachable(timeout: float = 3.0) -> bool:
    import socket
    from urllib.parse import urlparse

    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # a proxy cannot be probed cheaply; let the download try
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((host.hostname, host.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _load_hf(spec: str, ref: str, device: str) -> HFBackbone:
    from transformers import AutoImageProcessor, AutoModel

    source, local_only = _resolve_hf(spec, ref)
    try:
        # safetensors only: a pickled pytorch_model.bin could run code when loaded.
        model = AutoModel.from_pretrained(source, use_safetensors=True, local_files_only=local_only)
        processor = AutoImageProcessor.from_pretrained(source, local_files_only=local_only)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"backbone {spec!r}: cannot load {source}: {first[:200]}") from None
    return HFBackbone(spec, source, model, processor, device)


def _load_timm(spec: str, name: str, weights: str | None, device: str) -> TimmBackbone:
    import timm

    if name not in timm.list_models():
        raise UsageError(f"backbone {spec!r}: {name!r} is not a timm model name")
    model = timm.create_model(name, pretrained=False, num_classes=0)
    if weights is None:
        raise UsageError(
            f"backbone {spec!r}: no weights given and none can be downloaded here; "
            f"use --backbone timm:{name}=PATH with a local .safetensors or .pth"
        )
    state = _read_weights(Path(weights).expanduser())
    state = state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UsageError(f"{weights}: not a state dict of tensors")
    state = {k.removeprefix("module.").removeprefix("backbone."): v for k, v in state.items()}
    own = model.state_dict()
    # Classifier heads are dropped (we take features); everything else must match exactly.
    state = {k: v for k, v in state.items() if not k.startswith(("fc.", "head.", "classifier."))}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    bad = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or bad:
        example = (missing or unexpected or bad)[0]
        raise UsageError(
            f"{weights}: weights do not match timm {name}: {len(missing)} missing, {len(unexpected)} unexpected, "
            f"{len(bad)} mis-shaped keys (e.g. {example})"
        )
    model.load_state_dict(state, strict=True)
    return TimmBackbone(spec, name, model, device, weights=str(weights))


def _read_weights(path: Path) -> dict:
    check_regular_file(path, "weights file")
    size = path.stat().st_size
    if size > MAX_WEIGHTS_BYTES:
        raise UsageError(f"{path}: weights file is {size:,} bytes, over the limit of {MAX_WEIGHTS_BYTES:,}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # safetensors and torch raise many types
        raise UsageError(f"{path}: not a readable weights file ({type(exc).__name__})") from None
