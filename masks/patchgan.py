"""70x70 PatchGAN discriminator on (image, mask) pairs, as in pix2pix."""

from __future__ import annotations

import torch
from torch import nn

from masks.config import ModelConfig


class PatchDiscriminator(nn.Module):
    """ndf -> 2ndf -> 4ndf -> 8ndf -> 1, 4x4 convs; each output logit sees a 70x70 patch.

    Outputs logits (no Sigmoid): the loss is BCEWithLogits, which is the
    numerically stable form of pix2pix's vanilla GAN loss.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        ndf = config.ndf
        in_nc = config.in_channels + config.out_channels
        self.model = nn.Sequential(
            nn.Conv2d(in_nc, ndf, 4, stride=2, padding=1),  # no norm on the first layer
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf, ndf * 2, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(ndf * 2),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(ndf * 4),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * 4, ndf * 8, 4, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(ndf * 8),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * 8, 1, 4, stride=1, padding=1),
        )

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """image (N,3,H,W) in [-1,1], mask (N,1,H,W) in the generator's output range -> (N,1,h,w) logits."""
        return self.model(torch.cat([image, mask], 1))
