"""Grad-CAM: the maths, hook hygiene, and the box drawn from the peak."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torch import nn
from torch.nn import functional as F

from detectors.classifier import ClassifierConfig, build_classifier
from detectors.gradcam import GradCAM, box_around, draw_box, overlay, peak


class TwoLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, 2, 1)
        self.head = nn.Linear(4, 1)

    def forward(self, x):
        return self.head(F.relu(self.conv(x)).mean(dim=(2, 3)))


def all_hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._backward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_matches_hand_computed_gradcam():
    model = TwoLayer().eval()
    x = torch.rand(2, 3, 16, 16)
    with GradCAM(model, "conv") as cam:
        out = cam(x)
    # By hand: A = conv(x); dy/dA through relu+mean+linear.
    a = model.conv(x).detach().requires_grad_(True)
    y = model.head(F.relu(a).mean(dim=(2, 3))).sum()
    (g,) = torch.autograd.grad(y, a)
    m = F.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(1, keepdim=True)).detach()
    m = F.interpolate(m, size=(16, 16), mode="bilinear", align_corners=False)[:, 0]
    for k in range(2):
        if m[k].max() > m[k].min():
            ref = (m[k] - m[k].min()) / (m[k].max() - m[k].min())
            assert np.allclose(out.heatmaps[k], ref.numpy(), atol=1e-5)
    assert out.heatmaps.shape == (2, 16, 16)
    assert out.heatmaps.min() >= 0 and out.heatmaps.max() <= 1


def test_hooks_are_removed_on_exit_and_on_error():
    model = build_classifier(ClassifierConfig(backbone="tiny_cnn")).eval()
    before = all_hooks(model)
    with GradCAM(model, model.default_cam_layer()) as cam:
        assert all_hooks(model) == before + 1
        cam(torch.rand(1, 3, 64, 64))
    assert all_hooks(model) == before
    with pytest.raises(ZeroDivisionError):
        with GradCAM(model, model.default_cam_layer()):
            1 / 0
    assert all_hooks(model) == before
    with pytest.raises(RuntimeError):
        GradCAM(model, model.default_cam_layer())(torch.rand(1, 3, 64, 64))  # not entered


def test_does_not_leave_gradients_or_change_mode():
    model = build_classifier(ClassifierConfig(backbone="tiny_cnn")).train()
    with GradCAM(model, "backbone.features.block3") as cam:
        cam(torch.rand(2, 3, 64, 64))
    assert model.training
    assert all(p.grad is None for p in model.parameters())


def test_unknown_layer():
    with pytest.raises(KeyError):
        GradCAM(TwoLayer(), "nope")


def test_localises_a_planted_feature():
    """A hand-built detector of 'bright pixels' must point at the bright square."""
    model = nn.Sequential(nn.Conv2d(1, 1, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[0].bias.fill_(-0.5)
    x = torch.zeros(1, 1, 32, 32)
    x[:, :, 20:26, 4:10] = 1.0
    with GradCAM(model, model[1]) as cam:
        out = cam(x)
    px, py = peak(out.heatmaps[0])
    assert 4 <= px < 10 and 20 <= py < 26


def test_flat_map_is_flagged():
    model = TwoLayer()
    with torch.no_grad():
        model.head.weight.fill_(-1.0)  # every activation lowers the logit: ReLU gives 0
        model.conv.bias.fill_(1.0)
    with GradCAM(model, "conv") as cam:
        out = cam(torch.rand(1, 3, 8, 8))
    assert out.flat[0] and out.heatmaps[0].max() == 0


def test_peak():
    h = np.zeros((10, 20))
    h[7, 13] = 1
    assert peak(h) == (13, 7)


@settings(deadline=None)  # the CPU is shared; timing is not what is tested
@given(st.integers(0, 127), st.integers(0, 127))
def test_box_is_80_square_inside_the_image_and_contains_the_peak(x, y):
    x0, y0, x1, y1 = box_around((x, y), (128, 128))
    assert (x1 - x0, y1 - y0) == (80, 80)
    assert 0 <= x0 and 0 <= y0 and x1 <= 128 and y1 <= 128
    assert x0 <= x < x1 and y0 <= y < y1


def test_box_centred_when_room_and_whole_image_when_small():
    assert box_around((64, 64), (128, 128)) == (24, 24, 104, 104)
    assert box_around((0, 127), (128, 128)) == (0, 48, 80, 128)
    assert box_around((10, 10), (50, 40)) == (0, 0, 50, 40)


def test_draw_box_is_red_and_two_pixels_thick():
    img = Image.new("RGB", (128, 128), (0, 128, 0))
    out = draw_box(img, (24, 24, 104, 104))
    a = np.asarray(out)
    red = (a == [255, 0, 0]).all(-1)
    assert red[24, 50] and red[25, 50] and not red[26, 50] and not red[23, 50]  # top edge
    assert red[103, 50] and red[102, 50] and not red[101, 50]  # bottom edge
    assert red[50, 24] and red[50, 25] and red[50, 103] and not red[50, 104]
    assert red.sum() == 80 * 80 - 76 * 76
    assert np.asarray(img).max() == 128  # input untouched


def test_overlay_blends_heatmap():
    img = Image.new("RGB", (64, 64), (128, 128, 128))
    heat = np.zeros((64, 64), np.float32)
    heat[:32] = 1.0
    ov = np.asarray(overlay(img, heat)).astype(int)
    assert ov.shape == (64, 64, 3)
    assert ov[10, 10, 0] > ov[50, 10, 0]  # hot = red end of JET
    assert ov[50, 10, 2] > ov[10, 10, 2]  # cold = blue end
