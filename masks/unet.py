"""pix2pix U-Net generator: 128x128 RGB in, 1-channel foreground mask out.

Built recursively from the innermost block outwards, as in the pix2pix
reference code, so skip connections pair each down layer with its mirror.
"""

from __future__ import annotations

import torch
from torch import nn

from masks.config import ModelConfig


class UnetSkipBlock(nn.Module):
    """down -> [submodule] -> up, with the input concatenated to the output (the skip)."""

    def __init__(
        self,
        outer_nc: int,
        inner_nc: int,
        input_nc: int | None = None,
        submodule: nn.Module | None = None,
        outermost: bool = False,
        innermost: bool = False,
        use_dropout: bool = False,
        final: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.outermost = outermost
        input_nc = outer_nc if input_nc is None else input_nc
        # BatchNorm follows each conv, so the convs need no bias.
        downconv = nn.Conv2d(input_nc, inner_nc, kernel_size=4, stride=2, padding=1, bias=False)
        downrelu = nn.LeakyReLU(0.2, True)
        downnorm = nn.BatchNorm2d(inner_nc)
        uprelu = nn.ReLU(True)
        upnorm = nn.BatchNorm2d(outer_nc)

        if outermost:
            downconv = nn.Conv2d(input_nc, inner_nc, kernel_size=4, stride=2, padding=1)
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1)
            layers: list[nn.Module] = [downconv, submodule, uprelu, upconv, final]  # type: ignore[list-item]
        elif innermost:
            # 1x1 bottleneck: no norm on the way down (one value per channel per image).
            upconv = nn.ConvTranspose2d(inner_nc, outer_nc, kernel_size=4, stride=2, padding=1, bias=False)
            layers = [downrelu, downconv, uprelu, upconv, upnorm]
        else:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1, bias=False)
            layers = [downrelu, downconv, downnorm, submodule, uprelu, upconv, upnorm]  # type: ignore[list-item]
            if use_dropout:
                layers.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):
    """unet_128 for num_downs=7: 128 -> 1x1 bottleneck -> 128.

    Output activation: Sigmoid by default, so the output is the foreground
    probability and the L1 target is the 0/1 mask itself (threshold 0.5).
    pix2pix uses Tanh because its targets are images in [-1, 1]; ``output='tanh'``
    is kept for that layout, and :meth:`probability` maps either to [0, 1].
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        ngf = config.ngf
        block = UnetSkipBlock(ngf * 8, ngf * 8, innermost=True)
        for _ in range(config.num_downs - 5):
            block = UnetSkipBlock(ngf * 8, ngf * 8, submodule=block, use_dropout=config.use_dropout)
        block = UnetSkipBlock(ngf * 4, ngf * 8, submodule=block)
        block = UnetSkipBlock(ngf * 2, ngf * 4, submodule=block)
        block = UnetSkipBlock(ngf, ngf * 2, submodule=block)
        final = nn.Sigmoid() if config.output == "sigmoid" else nn.Tanh()
        self.model = UnetSkipBlock(
            config.out_channels, ngf, input_nc=config.in_channels, submodule=block, outermost=True, final=final
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 3, size, size) in [-1, 1] -> raw output in the activation's range."""
        return self.model(x)

    def to_unit(self, out: torch.Tensor) -> torch.Tensor:
        """Map the raw output to a foreground probability in [0, 1]."""
        return out if self.config.output == "sigmoid" else (out + 1) / 2

    def from_unit(self, mask: torch.Tensor) -> torch.Tensor:
        """Map a 0/1 mask into the output's range (the L1 target and the D's input)."""
        return mask if self.config.output == "sigmoid" else mask * 2 - 1

    def probability(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_unit(self.forward(x))


def init_weights(net: nn.Module, gain: float = 0.02) -> None:
    """pix2pix init: conv weights ~ N(0, 0.02), BatchNorm weights ~ N(1, 0.02), biases 0."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)
