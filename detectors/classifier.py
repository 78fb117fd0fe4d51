"""Real/fake classifier: a timm backbone with one logit (sigmoid -> P(fake)).

Inputs are RGB in [0, 1]; the ImageNet normalisation (and the optional
grayscale conversion) happen inside :class:`Classifier`, so callers, FGSM and
Grad-CAM all work in plain pixel space.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from detectors.checkpoint import load_strict, read_json, read_safetensors, write_json, write_safetensors
from detectors.tiny_cnn import TinyCNN
from explainer.errors import UsageError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# ITU-R BT.601 luma, the usual RGB -> gray.
LUMA = (0.299, 0.587, 0.114)
CHECKPOINT_FORMAT = "explainer-detector/1"
WEIGHTS_NAME = "detector.safetensors"
CONFIG_NAME = "detector.json"
OPTIMIZER_NAME = "optimizer.pt"


@dataclass
class ClassifierConfig:
    backbone: str = "densenet121"
    grayscale: bool = False
    image_size: int = 128  # what the classifier sees (after SR)
    lr_size: int = 32  # images are first resized to this, then super-resolved
    pretrained_file: str | None = None  # ImageNet init only; not needed to reload

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ClassifierConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


class Classifier(nn.Module):
    def __init__(self, backbone: nn.Module, config: ClassifierConfig, random_init: bool) -> None:
        super().__init__()
        self.backbone = backbone
        self.config = config
        self.random_init = random_init
        if config.grayscale:
            mean, std = [sum(IMAGENET_MEAN) / 3], [sum(IMAGENET_STD) / 3]
        else:
            mean, std = list(IMAGENET_MEAN), list(IMAGENET_STD)
        # Not persistent: they follow from the config, not from training.
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("luma", torch.tensor(LUMA).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, H, W) in [0, 1] -> logits (B,), positive = fake."""
        if self.config.grayscale:
            x = (x * self.luma).sum(1, keepdim=True)
        x = (x - self.mean) / self.std
        return self.backbone(x).reshape(-1)

    def default_cam_layer(self) -> str:
        return default_cam_layer(self.backbone, prefix="backbone.")


def default_cam_layer(backbone: nn.Module, prefix: str = "") -> str:
    """Deepest feature stage with stride <= 16: 8x8 at 128 px.

    For densenet121 that is ``features.denseblock3``; ``features.norm5`` (stride
    32) is only 4x4 at 128 px, so its peak can only land on 4 places and an 80 px
    box around it is barely better than the whole image.
    """
    info = getattr(backbone, "feature_info", None)
    entries = list(info) if info is not None else []
    entries = [e for e in entries if e.get("reduction", 1) <= 16]
    if not entries:
        raise UsageError("cannot choose a Grad-CAM layer for this backbone; pass one with --cam-layer")
    return prefix + entries[-1]["module"]


def build_classifier(config: ClassifierConfig) -> Classifier:
    in_chans = 1 if config.grayscale else 3
    if config.backbone == "tiny_cnn":
        if config.pretrained_file:
            raise UsageError(f"{config.pretrained_file}: tiny_cnn has no ImageNet weights")
        return Classifier(TinyCNN(in_chans=in_chans, num_classes=1), config, random_init=True)
    kwargs: dict[str, Any] = dict(num_classes=1, in_chans=in_chans)
    pretrained = False
    if config.pretrained_file:
        path = Path(config.pretrained_file)
        if not path.is_file():
            raise UsageError(f"{path}: no such file (ImageNet weights for {config.backbone})")
        # timm reads the local file instead of the hub and drops the 1000-class head.
        kwargs["pretrained_cfg_overlay"] = dict(file=str(path))
        pretrained = True
    try:
        backbone = timm.create_model(config.backbone, pretrained=pretrained, **kwargs)
    except RuntimeError as exc:
        if "Unknown model" in str(exc):
            raise UsageError(f"unknown timm backbone {config.backbone!r}") from None
        if pretrained:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UsageError(f"{config.pretrained_file}: cannot load into {config.backbone}: {first}") from None
        raise
    except Exception as exc:
        if pretrained:
            raise UsageError(f"{config.pretrained_file}: cannot load into {config.backbone} ({type(exc).__name__})") from None
        raise
    return Classifier(backbone, config, random_init=not pretrained)


def resolve_checkpoint(path: str | Path) -> tuple[Path, Path]:
    """A checkpoint is a folder, its .safetensors or its .json; return (weights, config)."""
    path = Path(path)
    if path.is_dir():
        return path / WEIGHTS_NAME, path / CONFIG_NAME
    if path.suffix == ".json":
        return path.with_suffix(".safetensors"), path
    return path, path.with_suffix(".json")


def save_classifier(out_dir: str | Path, model: Classifier, extra: dict[str, Any] | None = None) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_safetensors(out / WEIGHTS_NAME, model.state_dict())
    # Record whether these weights were ever trained, so a reloaded random model
    # still says its verdict means nothing.
    meta = {"format": CHECKPOINT_FORMAT, **asdict(model.config), "random_init": bool(model.random_init), **(extra or {})}
    write_json(out / CONFIG_NAME, meta)
    return out / WEIGHTS_NAME


def load_classifier(path: str | Path, device: str | torch.device = "cpu") -> tuple[Classifier, dict[str, Any]]:
    weights, config_path = resolve_checkpoint(path)
    meta = read_json(config_path)
    if meta.get("format") != CHECKPOINT_FORMAT or "backbone" not in meta:
        raise UsageError(f"{config_path}: not a detector checkpoint description (format {meta.get('format')!r})")
    config = ClassifierConfig.from_dict(meta)
    config.pretrained_file = None  # the trained weights replace any ImageNet init
    model = build_classifier(config)
    load_strict(model, read_safetensors(weights), weights, f"backbone {config.backbone!r} (grayscale={config.grayscale})")
    model.random_init = bool(meta.get("random_init", False))
    return model.eval().to(device), meta
