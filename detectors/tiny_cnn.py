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


class CustomCNN(nn.Module):
    """Seed 001's custom CNN: six conv stages widening 16 -> 512, each conv + ReLU,
    max-pool, BatchNorm and dropout, then global average pooling and one logit.

    At 128 px the stages end at 64, 32, 16, 8, 4 and 2 px; Grad-CAM takes the
    128-channel stage (stride 16, 8x8).
    """

    WIDTHS = (16, 32, 64, 128, 256, 512)

    def __init__(self, in_chans: int = 3, num_classes: int = 1, dropout: float = 0.2) -> None:
        super().__init__()
        self.features = nn.Sequential()
        self.feature_info = []
        cin = in_chans
        for i, cout in enumerate(self.WIDTHS):
            self.features.add_module(
                f"stage{i + 1}",
                nn.Sequential(
                    nn.Conv2d(cin, cout, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2), nn.BatchNorm2d(cout), nn.Dropout(dropout),
                ),
            )
            self.feature_info.append({"module": f"features.stage{i + 1}", "reduction": 2 ** (i + 1)})
            cin = cout
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head_drop = nn.Dropout(0.5)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.head_drop(self.pool(self.features(x)).flatten(1)))


class TinyVGG(nn.Module):
    """TinyVGG (the CNN Explainer net), one of the two shallow members of seed
    000's first ensemble: two blocks of conv-ReLU-conv-ReLU-maxpool with 10
    channels. Global average pooling instead of flatten keeps it size-agnostic;
    a stride-4 stem undoes the x4 super-resolution so the blocks see source
    pixels (its Grad-CAM layer is ``block2``, stride 16)."""

    def __init__(self, in_chans: int = 3, num_classes: int = 1, hidden: int = 10) -> None:
        super().__init__()

        def block(cin: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, hidden, 3, 1, 1), nn.ReLU(), nn.Conv2d(hidden, hidden, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2)
            )

        self.features = nn.Sequential()
        self.features.add_module("stem", nn.Sequential(nn.Conv2d(in_chans, hidden, 4, 4), nn.ReLU()))
        self.features.add_module("block1", block(hidden))
        self.features.add_module("block2", block(hidden))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(hidden, num_classes)
        self.feature_info = [
            {"module": "features.stem", "reduction": 4},
            {"module": "features.block1", "reduction": 8},
            {"module": "features.block2", "reduction": 16},
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))
