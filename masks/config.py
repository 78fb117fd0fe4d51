"""Configuration dataclasses for the mask C-GAN (model shape and training)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


# Caps on what a checkpoint's JSON (or the command line) may ask to build. pix2pix's unet_128 is
# size 128, num_downs 7, ngf = ndf = 64: about 44 million parameters for both nets.
MAX_SIZE = 1024
MAX_NUM_DOWNS = 10  # 2**10 = MAX_SIZE
MAX_WIDTH = 1024  # ngf, ndf
MAX_CHANNELS = 4
MAX_PARAMETERS = 300_000_000  # generator + discriminator, 1.2 GB in float32


def parameter_count(config: "ModelConfig") -> int:
    """Parameters of the generator and discriminator ``config`` describes, counted on the meta device (no memory)."""
    import torch

    from masks.patchgan import PatchDiscriminator
    from masks.unet import UnetGenerator

    with torch.device("meta"):
        nets = (UnetGenerator(config), PatchDiscriminator(config))
    return sum(p.numel() for net in nets for p in net.parameters())


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the generator and discriminator.

    Stored in each checkpoint's JSON so a checkpoint can be rebuilt without
    knowing the command line that trained it.
    """

    size: int = 128  # square input/output side; unet_128 needs 2**num_downs == size
    num_downs: int = 7  # unet_128
    ngf: int = 64  # generator width (first layer's filters)
    ndf: int = 64  # discriminator width
    in_channels: int = 3
    out_channels: int = 1
    use_dropout: bool = True  # dropout 0.5 in the innermost ngf*8 blocks, as in pix2pix
    output: str = "sigmoid"  # "sigmoid" (mask in [0, 1]) or "tanh" (pix2pix image default, [-1, 1])

    def __post_init__(self) -> None:
        # A checkpoint's JSON may come from anyone: types and caps are checked here, before any layer exists.
        for name in ("size", "num_downs", "ngf", "ndf", "in_channels", "out_channels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an integer, not {type(value).__name__} {value!r}")
        if not isinstance(self.use_dropout, bool):
            raise ValueError(f"use_dropout must be true or false, not {type(self.use_dropout).__name__} {self.use_dropout!r}")
        if self.output not in ("sigmoid", "tanh"):
            raise ValueError(f"output must be 'sigmoid' or 'tanh', not {self.output!r}")
        if self.num_downs < 5:
            raise ValueError("num_downs must be at least 5 (pix2pix U-Net layout)")
        for name, cap in (("size", MAX_SIZE), ("num_downs", MAX_NUM_DOWNS), ("ngf", MAX_WIDTH), ("ndf", MAX_WIDTH),
                          ("in_channels", MAX_CHANNELS), ("out_channels", MAX_CHANNELS)):
            if getattr(self, name) > cap:
                raise ValueError(f"{name} is {getattr(self, name):,}, over the cap of {cap:,}")
        if 2**self.num_downs != self.size:
            raise ValueError(f"size {self.size} needs num_downs={self.size.bit_length() - 1}, got {self.num_downs}")
        if self.ngf < 1 or self.ndf < 1 or self.in_channels < 1 or self.out_channels < 1:
            raise ValueError("ngf, ndf, in_channels and out_channels must be positive")
        count = parameter_count(self)
        if count > MAX_PARAMETERS:
            raise ValueError(f"the described generator and discriminator have {count:,} parameters, "
                             f"over the cap of {MAX_PARAMETERS:,} (ngf={self.ngf}, ndf={self.ndf}, "
                             f"num_downs={self.num_downs})")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        if not isinstance(data, dict):
            raise ValueError(f"the model description must be a mapping, not {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class TrainConfig:
    """Optimisation settings; defaults follow pix2pix (Isola et al. 2017)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    epochs: int = 200
    batch_size: int = 4
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    lambda_l1: float = 100.0
    val_fraction: float = 0.2  # held-out share of the pairs, for IoU
    seed: int = 0
    augment: bool = True
    device: str = "cpu"
    threads: int | None = None  # torch.set_num_threads; None leaves torch's default

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["model"] = self.model.to_dict()
        return data
