"""Which networks a detector may be built on, and how each is built.

A ``backbone`` string comes from the command line, a recipe or a shared
``detector.json``, so it is treated as hostile: only these are accepted

- a timm architecture name (``densenet121``, ``resnet18``, ``efficientnet_b0``,
  ``mobilenetv3_small_100``, ``convnext_atto``, ``vit_base_patch16_224``, ...),
  optionally with a pretrained tag (``.augreg_in21k``); never ``hf-hub:`` or
  ``local-dir:`` (those fetch from the network or read a folder named by the file);
- our own small nets: ``tiny_cnn``, ``custom_cnn`` (seed 001), ``tiny_vgg`` (seed 000's ensemble);
- ``ensemble:A+B[+C]`` of any of the above, e.g. ``ensemble:tiny_vgg+mobilenetv3_small_100``.

Every backbone is called like a timm model built with ``num_classes=1`` and
exposes ``feature_info`` (module name, stride) so the Grad-CAM layer rule of
:func:`detectors.classifier.default_cam_layer` applies to all of them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from detectors.tiny_cnn import CustomCNN, TinyCNN, TinyVGG
from explainer.errors import UsageError

LOCAL_BACKBONES = {"tiny_cnn": TinyCNN, "custom_cnn": CustomCNN, "tiny_vgg": TinyVGG}
ENSEMBLE_PREFIX = "ensemble:"
MAX_ENSEMBLE_MEMBERS = 4
MAX_BACKBONE_NAME = 120
_TIMM_NAME = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)?$")
ACCEPTED = "a timm architecture name (e.g. densenet121), tiny_cnn, custom_cnn, tiny_vgg, or ensemble:A+B"


def check_backbone_name(name: Any, source: str = "--backbone") -> str:
    """Return ``name`` if it is an accepted backbone; else one line saying what is accepted."""
    if not isinstance(name, str) or not name or len(name) > MAX_BACKBONE_NAME:
        raise UsageError(f"{source}: backbone must be {ACCEPTED}, got {str(name)[:60]!r}")
    if name.startswith(ENSEMBLE_PREFIX):
        members = name[len(ENSEMBLE_PREFIX):].split("+")
        if not 2 <= len(members) <= MAX_ENSEMBLE_MEMBERS:
            raise UsageError(f"{source}: {name!r}: an ensemble has 2 to {MAX_ENSEMBLE_MEMBERS} members")
        for member in members:
            if member.startswith(ENSEMBLE_PREFIX):
                raise UsageError(f"{source}: {name!r}: ensembles do not nest")
            check_backbone_name(member, source)
        return name
    if name in LOCAL_BACKBONES:
        return name
    if ":" in name or "/" in name:
        raise UsageError(
            f"{source}: {name!r} is refused: only {ACCEPTED} are accepted "
            "(hf-hub: and local-dir: backbones would fetch from the network or load a folder named by the file)"
        )
    arch = name.split(".")[0]
    if not _TIMM_NAME.match(name) or not timm.is_model(arch):
        raise UsageError(f"{source}: unknown backbone {name!r}; expected {ACCEPTED}")
    return name


class Ensemble(nn.Module):
    """Weighted sum of member logits; the weights (a softmax over learned scores)
    are trained with the members, as in seed 000's "weighted importance"."""

    def __init__(self, members: list[nn.Module], names: list[str]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.names = list(names)
        self.scores = nn.Parameter(torch.zeros(len(members)))
        self.feature_info = []
        for i, m in enumerate(members):
            for e in getattr(m, "feature_info", []):
                self.feature_info.append({**dict(e), "module": f"members.{i}.{e['module']}", "member": i})

    def weights(self) -> torch.Tensor:
        return torch.softmax(self.scores, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weights()
        return sum(w[i] * m(x).reshape(x.shape[0], -1) for i, m in enumerate(self.members))


def _timm(name: str, in_chans: int, image_size: int, pretrained_file: str | None) -> nn.Module:
    kwargs: dict[str, Any] = dict(num_classes=1, in_chans=in_chans)
    pretrained = False
    if pretrained_file:
        path = Path(pretrained_file)
        if not path.is_file():
            raise UsageError(f"{path}: no such file (ImageNet weights for {name})")
        # timm reads the local file instead of the hub and drops the 1000-class head.
        kwargs["pretrained_cfg_overlay"] = dict(file=str(path))
        pretrained = True
    try:
        try:
            # Transformers fix their position grid at build time: build them for the
            # size they will see (a 224-px ViT fed 128 px crashes with a size mismatch).
            return timm.create_model(name, pretrained=pretrained, img_size=image_size, **kwargs)
        except TypeError as exc:
            if "img_size" not in str(exc):
                raise
            return timm.create_model(name, pretrained=pretrained, **kwargs)
    except UsageError:
        raise
    except Exception as exc:
        first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        if pretrained:
            raise UsageError(f"{pretrained_file}: cannot load into {name}: {first}") from None
        raise UsageError(f"backbone {name!r} cannot be built for {image_size} px input: {first}") from None


def build_backbone(name: str, in_chans: int, image_size: int, pretrained_file: str | None = None) -> tuple[nn.Module, bool]:
    """(module, random_init). ``name`` must pass :func:`check_backbone_name`."""
    check_backbone_name(name)
    if name.startswith(ENSEMBLE_PREFIX):
        if pretrained_file:
            raise UsageError(f"{pretrained_file}: --pretrained-file is for a single backbone, not an ensemble")
        names = name[len(ENSEMBLE_PREFIX):].split("+")
        members = [build_backbone(n, in_chans, image_size)[0] for n in names]
        return Ensemble(members, names), True
    if name in LOCAL_BACKBONES:
        if pretrained_file:
            raise UsageError(f"{pretrained_file}: {name} has no ImageNet weights")
        return LOCAL_BACKBONES[name](in_chans=in_chans, num_classes=1), True
    return _timm(name, in_chans, image_size, pretrained_file), not pretrained_file
