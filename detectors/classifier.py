"""Real/fake classifier: a backbone with one logit (sigmoid -> P(fake)).

Inputs are RGB in [0, 1]; the normalisation (and the optional grayscale
conversion) happen inside :class:`Classifier`, so callers, FGSM and Grad-CAM
all work in plain pixel space.

``input_norm``:
- ``image_mean`` (the default for new detectors): each image's own mean colour
  is subtracted before scaling. Generator traces are a few grey levels strong
  and the same in every channel, while photos' mean colours differ by a hundred
  grey levels: with the mean removed, RGB training learns such a trace as fast
  as grayscale (without it, tiny_cnn RGB sat at 0.58 accuracy after 10 epochs).
- ``imagenet``: the fixed ImageNet mean and std (checkpoints made before
  ``input_norm`` existed; also what ImageNet-pretrained weights expect).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from detectors.backbones import Ensemble, build_backbone, check_backbone_name
from detectors.checkpoint import load_strict, read_json, read_safetensors, write_json, write_safetensors
from explainer.errors import UsageError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# ITU-R BT.601 luma, the usual RGB -> gray.
LUMA = (0.299, 0.587, 0.114)
CHECKPOINT_FORMAT = "explainer-detector/1"
WEIGHTS_NAME = "detector.safetensors"
CONFIG_NAME = "detector.json"
OPTIMIZER_NAME = "optimizer.pt"
INPUT_NORMS = ("image_mean", "imagenet")

# Ranges a detector.json may ask for; checked before any network is built.
LR_SIZE_RANGE = (8, 512)
IMAGE_SIZE_RANGE = (16, 1024)


@dataclass
class ClassifierConfig:
    backbone: str = "densenet121"
    grayscale: bool = False
    image_size: int = 128  # what the classifier sees (after SR)
    lr_size: int = 32  # images are first resized to this, then super-resolved
    pretrained_file: str | None = None  # ImageNet init only; not needed to reload
    input_norm: str = "image_mean"

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "detector.json") -> "ClassifierConfig":
        """Validated: every type and range checked, one line naming the key otherwise."""
        out = cls(input_norm="imagenet")  # a description without input_norm predates it
        out.backbone = check_backbone_name(data.get("backbone"), f"{source}: backbone")
        out.grayscale = _bool(data, "grayscale", False, source)
        out.image_size = _int(data, "image_size", 128, IMAGE_SIZE_RANGE, source)
        out.lr_size = _int(data, "lr_size", 32, LR_SIZE_RANGE, source)
        norm = data.get("input_norm", "imagenet")
        if norm not in INPUT_NORMS:
            raise UsageError(f"{source}: input_norm must be one of {', '.join(INPUT_NORMS)}, got {str(norm)[:40]!r}")
        out.input_norm = norm
        pre = data.get("pretrained_file")
        if pre is not None and not isinstance(pre, str):
            raise UsageError(f"{source}: pretrained_file must be a string or null")
        out.pretrained_file = pre
        return out


def _bool(data: dict, key: str, default: bool, source: str) -> bool:
    value = data.get(key, default)
    if type(value) is not bool:  # "false" is a true string: refuse it rather than guess
        raise UsageError(f"{source}: {key} must be true or false (a JSON boolean), got {str(value)[:40]!r}")
    return value


def _int(data: dict, key: str, default: int, bounds: tuple[int, int], source: str) -> int:
    value = data.get(key, default)
    if type(value) is not int:
        raise UsageError(f"{source}: {key} must be an integer, got {str(value)[:40]!r}")
    lo, hi = bounds
    if not lo <= value <= hi:
        raise UsageError(f"{source}: {key} = {value} is outside the accepted range {lo}..{hi}")
    return value


def check_sizes(lr_size: int, image_size: int, source: str = "command line") -> None:
    _int({"lr_size": lr_size}, "lr_size", 32, LR_SIZE_RANGE, source)
    _int({"image_size": image_size}, "image_size", 128, IMAGE_SIZE_RANGE, source)


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
        if self.config.input_norm == "image_mean":
            x = (x - x.mean(dim=(2, 3), keepdim=True)) / self.std
        else:
            x = (x - self.mean) / self.std
        return self.backbone(x).reshape(-1)

    def default_cam_layer(self) -> str:
        return default_cam_layer(self.backbone, prefix="backbone.")


def default_cam_layer(backbone: nn.Module, prefix: str = "") -> str:
    """Deepest feature stage with stride <= 16: 8x8 at 128 px.

    For densenet121 that is ``features.denseblock3``; ``features.norm5`` (stride
    32) is only 4x4 at 128 px, so its peak can only land on 4 places and an 80 px
    box around it is barely better than the whole image.

    A vision transformer's last block feeds only its class token to the head, so
    the gradient on that block's patch tokens is zero: the map is taken at the
    input of the last block's attention (``blocks.N.norm1``), where the patch
    tokens still reach the class token. An ensemble uses its heaviest member.
    """
    info = getattr(backbone, "feature_info", None)
    entries = list(info) if info is not None else []
    if isinstance(backbone, Ensemble):
        heaviest = int(torch.argmax(backbone.weights().detach()))
        entries = [e for e in entries if e.get("member") == heaviest]
    entries = [e for e in entries if e.get("reduction", 1) <= 16]
    if not entries:
        raise UsageError("cannot choose a Grad-CAM layer for this backbone; pass one with --cam-layer")
    name = entries[-1]["module"]
    module = dict(backbone.named_modules()).get(name)
    if module is not None and hasattr(module, "attn") and hasattr(module, "norm1"):
        name += ".norm1"
    return prefix + name


def build_classifier(config: ClassifierConfig) -> Classifier:
    in_chans = 1 if config.grayscale else 3
    backbone, random_init = build_backbone(config.backbone, in_chans, config.image_size, config.pretrained_file)
    return Classifier(backbone, config, random_init=random_init)


def resolve_checkpoint(path: str | Path) -> tuple[Path, Path]:
    """A checkpoint is a folder, its .safetensors or its .json; return (weights, config)."""
    path = Path(path)
    if path.is_dir():
        return path / WEIGHTS_NAME, path / CONFIG_NAME
    if path.suffix == ".json":
        return path.with_suffix(".safetensors"), path
    return path, path.with_suffix(".json")


def save_classifier(out_dir: str | Path, model: Classifier, extra: dict[str, Any] | None = None,
                    weights_name: str = WEIGHTS_NAME) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_safetensors(out / weights_name, model.state_dict())
    # Record whether these weights were ever trained, so a reloaded random model
    # still says its verdict means nothing.
    meta = {"format": CHECKPOINT_FORMAT, **asdict(model.config), "random_init": bool(model.random_init), **(extra or {})}
    write_json(out / CONFIG_NAME, meta)
    return out / weights_name


def read_detector_meta(path: str | Path) -> tuple[Path, Path, dict[str, Any], ClassifierConfig]:
    """(weights, config path, raw meta, validated config); every check before anything is built."""
    weights, config_path = resolve_checkpoint(path)
    meta = read_json(config_path)
    if meta.get("format") != CHECKPOINT_FORMAT or "backbone" not in meta:
        raise UsageError(f"{config_path}: not a detector checkpoint description (format {str(meta.get('format'))[:40]!r})")
    config = ClassifierConfig.from_dict(meta, str(config_path))
    _bool(meta, "random_init", False, str(config_path))
    return weights, config_path, meta, config


def load_classifier(path: str | Path, device: str | torch.device = "cpu",
                    weights_name: str | None = None) -> tuple[Classifier, dict[str, Any]]:
    weights, config_path, meta, config = read_detector_meta(path)
    if weights_name is not None:
        weights = config_path.parent / weights_name
    config.pretrained_file = None  # the trained weights replace any ImageNet init
    model = build_classifier(config)
    load_strict(model, read_safetensors(weights), weights, f"backbone {config.backbone!r} (grayscale={config.grayscale})")
    model.random_init = meta.get("random_init", False)
    return model.eval().to(device), meta
