"""Configuration dataclasses for the mask C-GAN (model shape and training)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


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
        if 2**self.num_downs != self.size:
            raise ValueError(f"size {self.size} needs num_downs={self.size.bit_length() - 1}, got {self.num_downs}")
        if self.num_downs < 5:
            raise ValueError("num_downs must be at least 5 (pix2pix U-Net layout)")
        if self.output not in ("sigmoid", "tanh"):
            raise ValueError(f"output must be 'sigmoid' or 'tanh', not {self.output!r}")
        if self.ngf < 1 or self.ndf < 1:
            raise ValueError("ngf and ndf must be positive")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
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
