"""FGSM with a random start ("fast adversarial training", Wong et al. 2020).

Pixel space is [0, 1]: start uniformly in +-eps, take one signed-gradient step
of 1.25*eps, project back to the eps-ball and clip to [0, 1]. The random start
avoids the catastrophic overfitting that plain FGSM training suffers.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

DEFAULT_EPS = 8 / 255
STEP_SCALE = 1.25


def fgsm(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float = DEFAULT_EPS,
    random_start: bool = True,
    step_scale: float = STEP_SCALE,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Return adversarial copies of ``x`` (B,3,H,W in [0,1]) for labels ``y`` (1 = fake)."""
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"FGSM epsilon must be in [0, 1], got {eps}")
    if eps == 0:
        return x.detach().clone()
    was_training = model.training
    # Eval mode: the attack must not move BatchNorm running statistics.
    model.eval()
    try:
        if random_start:
            noise = torch.rand(x.shape, generator=generator, device="cpu").to(x.device)
            delta = (noise * 2 - 1) * eps
        else:
            delta = torch.zeros_like(x)
        delta = ((x + delta).clamp(0, 1) - x).detach().requires_grad_(True)
        with torch.enable_grad():
            loss = F.binary_cross_entropy_with_logits(model(x + delta), y.float())
            (grad,) = torch.autograd.grad(loss, delta)
        step = step_scale * eps if random_start else eps
        delta = (delta.detach() + step * grad.sign()).clamp(-eps, eps)
        return (x + delta).clamp(0, 1).detach()
    finally:
        model.train(was_training)
