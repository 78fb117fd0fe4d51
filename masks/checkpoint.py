"""Mask C-GAN checkpoints: weights in safetensors, how to rebuild them in JSON.

A checkpoint is a stem: ``STEM.safetensors`` (generator.* and discriminator.*
tensors), ``STEM.json`` (model config, epoch, IoU history) and, for the
resumable ``last`` checkpoint only, ``STEM.optim.pt`` (Adam states, read back
with ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import json
import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from explainer.errors import UsageError
from explainer.safe_io import check_regular_file, read_text_capped
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
        meta = json.loads(read_text_capped(json_path, MAX_META_BYTES, "checkpoint description"))
    except json.JSONDecodeError as exc:
        raise UsageError(f"{json_path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(meta, dict):
        raise UsageError(f"{json_path}: a checkpoint description is a JSON object, not {type(meta).__name__}")
    if meta.get("format") != FORMAT:
        raise UsageError(f"{json_path}: not a mask checkpoint (format {meta.get('format')!r})")
    for key, kinds in (("epoch", int), ("history", list), ("best_iou", (int, float)), ("train", dict)):
        if key in meta and (not isinstance(meta[key], kinds) or isinstance(meta[key], bool)):
            raise UsageError(f"{json_path}: {key}: wrong type ({type(meta[key]).__name__})")
    return meta


MAX_META_BYTES = 4 * 1024 * 1024  # a description with a 10,000-epoch history is ~2 MB


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
        # types and caps checked here, before anything is allocated (see masks.config's MAX_* constants)
        config = ModelConfig.from_dict(meta.get("model"))
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{part(stem, '.json')}: model: {exc}") from None
    try:
        tensors = load_file(str(check_regular_file(part(stem, ".safetensors"), "weights")), device="cpu")
    except UsageError:
        raise
    except Exception as exc:  # safetensors raises its own error types for a file that is not safetensors
        raise UsageError(f"{part(stem, '.safetensors')}: not a safetensors file ({type(exc).__name__})") from None
    generator = UnetGenerator(config)
    _load_part(generator, tensors, "generator.", part(stem, ".safetensors"))
    discriminator = None
    if with_discriminator:
        discriminator = PatchDiscriminator(config)
        _load_part(discriminator, tensors, "discriminator.", part(stem, ".safetensors"))
        discriminator.to(device)
    return generator.to(device), discriminator, meta


def load_optim_state(stem: Path) -> dict[str, Any]:
    """The Adam states of ``last``: plain tensors only (``weights_only=True``); anything else is refused in one line."""
    path = part(stem, ".optim.pt")
    if not path.is_file():
        raise UsageError(f"{path}: optimizer state missing; cannot resume")
    check_regular_file(path, "optimizer state")
    try:
        with warnings.catch_warnings():  # torch's warnings about a file's pickle protocol talk of unsafe loading
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - UnpicklingError, RuntimeError (not a zip), EOFError...
        # never repeat torch's advice to load with weights_only=False: that runs the file's code
        kind = "holds Python objects besides tensors" if isinstance(exc, pickle.UnpicklingError) else "cannot be read"
        raise UsageError(f"{path}: refused: the optimizer state {kind} ({type(exc).__name__}); "
                         "only tensors are loaded from a checkpoint. Start a new run without --resume") from None
    if not isinstance(state, dict) or not all(isinstance(state.get(k), dict) for k in ("generator", "discriminator")):
        raise UsageError(f"{path}: not an optimizer state of a mask checkpoint (needs 'generator' and 'discriminator')")
    return state
