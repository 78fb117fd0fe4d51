"""FGSM: it must raise the loss and stay inside the epsilon ball and [0, 1]."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from detectors.classifier import ClassifierConfig, build_classifier
from detectors.fgsm import fgsm


@pytest.fixture(scope="module")
def model_and_batch():
    torch.manual_seed(0)
    model = build_classifier(ClassifierConfig(backbone="tiny_cnn")).eval()
    x = torch.rand(16, 3, 64, 64)
    y = (torch.arange(16) % 2).float()
    return model, x, y


def _loss(model, x, y):
    with torch.no_grad():
        return F.binary_cross_entropy_with_logits(model(x), y).item()


@pytest.mark.parametrize("random_start", [True, False])
def test_fgsm_raises_the_loss(model_and_batch, random_start):
    model, x, y = model_and_batch
    adv = fgsm(model, x, y, eps=8 / 255, random_start=random_start, generator=torch.Generator().manual_seed(0))
    assert _loss(model, adv, y) > _loss(model, x, y) + 1e-3
    # A random perturbation of the same size does much less: the gradient matters.
    noise = (x + (8 / 255) * torch.randint(0, 2, x.shape).float().mul(2).sub(1)).clamp(0, 1)
    assert _loss(model, adv, y) - _loss(model, x, y) > 2 * abs(_loss(model, noise, y) - _loss(model, x, y))


def test_fgsm_stays_in_the_ball_and_the_pixel_range(model_and_batch):
    model, x, y = model_and_batch
    eps = 8 / 255
    adv = fgsm(model, x, y, eps=eps, generator=torch.Generator().manual_seed(1))
    assert (adv - x).abs().max() <= eps + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1
    assert not adv.requires_grad
    assert (adv - x).abs().max() > eps / 2  # it did move


def test_fgsm_leaves_model_mode_and_grads_alone(model_and_batch):
    model, x, y = model_and_batch
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fgsm(model, x, y, eps=0.03)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN stats untouched
    assert all(p.grad is None for p in model.parameters())
    model.eval()


def test_fgsm_epsilon_range(model_and_batch):
    model, x, y = model_and_batch
    with pytest.raises(ValueError):
        fgsm(model, x, y, eps=1.5)
    assert torch.equal(fgsm(model, x, y, eps=0.0), x)
