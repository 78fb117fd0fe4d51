"""A very small CNN, selectable as ``--backbone tiny_cnn``.

It exists so that training-to-accuracy tests and quick experiments finish in
seconds on a shared laptop CPU, where DenseNet121 takes minutes. The 4x4
stride-4 stem undoes the x4 super-resolution cheaply (one feature pixel per
source pixel). Same call convention as a timm model built with
``num_classes=1``; the default Grad-CAM layer (deepest with stride <= 16) is
``features.block4``, 8x8 at 128 px.
"""

from __future__ import annotations

import torch
from torch import nn


def _block(cin: int, cout: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2 if stride < kernel else 0, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),  # not in-place: Grad-CAM reads these activations
    )


class TinyCNN(nn.Module):
    def __init__(self, in_chans: int = 3, num_classes: int = 1, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential()
        self.features.add_module("stem", _block(in_chans, width, 4, 4))  # /4
        self.features.add_module("block2", _block(width, width, 3, 1))  # /4
        self.features.add_module("block3", _block(width, 2 * width, 3, 2))  # /8
        self.features.add_module("block4", _block(2 * width, 2 * width, 3, 2))  # /16
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(2 * width, num_classes)
        # Mirrors timm's feature_info so the default Grad-CAM layer rule applies.
        self.feature_info = [
            {"module": "features.block2", "reduction": 4},
            {"module": "features.block3", "reduction": 8},
            {"module": "features.block4", "reduction": 16},
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))
