"""The detector as one differentiable function of the image explain is given.

``explain`` resizes every image to ``lr_size`` (32 px), super-resolves it x4 and
classifies the result. An attacker controls the 32-px image, not the 128-px
upscale, so FGSM (in training and in ``eval detector``) perturbs the 32-px input
and differentiates through the upscale. Perturbing the upscale instead, as the
first version did, adds exactly the sub-source-pixel detail that bicubic
upscaling never produces (7/255 RMS at eps 8/255 against 0.55/255 on clean
upscales), which is what poisoned the BatchNorm statistics of the
trace-detecting channels.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from detectors.classifier import Classifier
from detectors.sr.load import SuperResolver


class LRPipeline(nn.Module):
    """(B, 3, lr, lr) in [0, 1] -> logits (B,): SR (frozen) -> resize -> classifier."""

    def __init__(self, classifier: Classifier, sr: SuperResolver) -> None:
        super().__init__()
        self.classifier = classifier
        self.scale = sr.scale
        self.sr_net = sr.net  # None: bicubic
        if self.sr_net is not None:
            for p in self.sr_net.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> "LRPipeline":
        super().train(mode)
        if self.sr_net is not None:
            self.sr_net.eval()  # the SR net is never trained here
        return self

    def upscale(self, x: torch.Tensor) -> torch.Tensor:
        """The same arithmetic as :class:`SuperResolver` plus the stage's resize, but differentiable."""
        if self.sr_net is None:
            x = F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)
        else:
            x = self.sr_net(x)
        x = x.clamp(0.0, 1.0)
        size = self.classifier.config.image_size
        if x.shape[-1] != size or x.shape[-2] != size:
            x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.upscale(x))


class batchnorm_stats_kept:
    """``with batchnorm_stats_kept(model):`` a forward pass in training mode whose
    BatchNorm running statistics are put back afterwards.

    ``--adv-batchnorm batch`` (the default): adversarial batches are normalised with their own
    batch statistics, as the clean batch next to them is, but their statistics
    never reach the running averages the deployed model normalises with. The
    restore is in place, so the adversarial backward pass must run inside the block.
    """

    def __init__(self, model: nn.Module) -> None:
        self.layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.saved: list[tuple[torch.Tensor | None, ...]] = []

    def __enter__(self) -> "batchnorm_stats_kept":
        self.saved = [
            tuple(None if t is None else t.clone() for t in (m.running_mean, m.running_var, m.num_batches_tracked))
            for m in self.layers
        ]
        return self

    def __exit__(self, *exc: object) -> None:
        with torch.no_grad():
            for m, saved in zip(self.layers, self.saved):
                for buf, old in zip((m.running_mean, m.running_var, m.num_batches_tracked), saved):
                    if buf is not None and old is not None:
                        buf.copy_(old)


class frozen_batchnorm:
    """``with frozen_batchnorm(model):`` BatchNorm layers normalise with their running
    statistics and leave them alone (eval mode); everything else stays in training mode.
    ``--adv-batchnorm running``: the adversarial half is normalised as
    the deployed model will normalise, and adds nothing to the statistics."""

    def __init__(self, model: nn.Module) -> None:
        self.layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.modes: list[bool] = []

    def __enter__(self) -> "frozen_batchnorm":
        self.modes = [m.training for m in self.layers]
        for m in self.layers:
            m.eval()
        return self

    def __exit__(self, *exc: object) -> None:
        for m, mode in zip(self.layers, self.modes):
            m.train(mode)
