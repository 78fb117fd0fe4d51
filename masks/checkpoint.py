"""Mask C-GAN checkpoints: weights in safetensors, how to rebuild them in JSON.

A checkpoint is a stem: ``STEM.safetensors`` (generator.* and discriminator.*
tensors), ``STEM.json`` (model config, epoch, IoU history) and, for the
resumable ``last`` checkpoint only, ``STEM.optim.pt`` (Adam states, read back
with ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from explainer.errors import UsageError
from masks.config import ModelConfig
from masks.patchgan import PatchDiscriminator
from masks.unet import UnetGenerator

FORMAT = "explainer-mask-cgan"
VERSION = 1
BEST, LAST = "best", "last"


def part(stem: Path, ext: str) -> Path:
    """STEM + ext, without Path.with_suffix eating a dot inside the stem's name."""
    return stem.with_name(stem.name + ext)


def _atomic(path: Path, write) -> None:
    # Write then rename, so an interrupted save never leaves a half checkpoint.
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def save_checkpoint(
    stem: Path,
    generator: UnetGenerator,
    discriminator: PatchDiscriminator | None,
    meta: dict[str, Any],
    optim_state: dict[str, Any] | None = None,
) -> Path:
    stem.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"generator.{k}": v.detach().cpu().contiguous() for k, v in generator.state_dict().items()}
    if discriminator is not None:
        tensors.update({f"discriminator.{k}": v.detach().cpu().contiguous() for k, v in discriminator.state_dict().items()})
    weights = part(stem, ".safetensors")
    _atomic(weights, lambda p: save_file(tensors, str(p), metadata={"format": FORMAT}))
    if optim_state is not None:
        _atomic(part(stem, ".optim.pt"), lambda p: torch.save(optim_state, p))
    doc = {"format": FORMAT, "version": VERSION, "model": generator.config.to_dict(), **meta}
    _atomic(part(stem, ".json"), lambda p: p.write_text(json.dumps(doc, indent=2) + "\n"))
    return weights


def resolve(path: str | Path) -> Path:
    """A checkpoint given as a directory (-> its best), a .safetensors, a .json or a bare stem -> the stem."""
    p = Path(path)
    if p.is_dir():
        p = p / BEST
    if p.suffix in (".safetensors", ".json"):
        p = p.with_name(p.name[: -len(p.suffix)])
    if not part(p, ".json").is_file() or not part(p, ".safetensors").is_file():
        raise UsageError(f"{path}: no mask checkpoint there (need {p.name}.safetensors and {p.name}.json)")
    return p


def read_meta(stem: Path) -> dict[str, Any]:
    json_path = part(stem, ".json")
    try:
        meta = json.loads(json_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"{json_path}: cannot read checkpoint description ({exc.__class__.__name__})") from None
    if meta.get("format") != FORMAT:
        raise UsageError(f"{json_path}: not a mask checkpoint (format {meta.get('format')!r})")
    return meta


def _load_part(module: torch.nn.Module, tensors: dict[str, torch.Tensor], prefix: str, where: Path) -> None:
    part = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    try:
        module.load_state_dict(part)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise UsageError(f"{where}: weights do not match the described model ({first})") from None


def load_models(
    stem: Path, device: str = "cpu", with_discriminator: bool = False
) -> tuple[UnetGenerator, PatchDiscriminator | None, dict[str, Any]]:
    meta = read_meta(stem)
    try:
        config = ModelConfig.from_dict(meta["model"])
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"{part(stem, '.json')}: bad model description ({exc})") from None
    tensors = load_file(str(part(stem, ".safetensors")), device="cpu")
    generator = UnetGenerator(config)
    _load_part(generator, tensors, "generator.", part(stem, ".safetensors"))
    discriminator = None
    if with_discriminator:
        discriminator = PatchDiscriminator(config)
        _load_part(discriminator, tensors, "discriminator.", part(stem, ".safetensors"))
        discriminator.to(device)
    return generator.to(device), discriminator, meta


def load_optim_state(stem: Path) -> dict[str, Any]:
    path = part(stem, ".optim.pt")
    if not path.is_file():
        raise UsageError(f"{path}: optimizer state missing; cannot resume")
    return torch.load(path, map_location="cpu", weights_only=True)
