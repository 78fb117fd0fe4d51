"""Reading and writing checkpoint files, turning every failure into one line.

Weights go to safetensors (no code execution on load); the small JSON next to
them says how to rebuild the model; optimizer state goes to a ``.pt`` that only
holds tensors and plain containers, so ``torch.load(weights_only=True)`` reads it.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from explainer.errors import UsageError
from explainer.safe_io import atomic_write_text, check_regular_file, read_text_capped

# Weight files (detector, SR, optimizer state). The released RRDBNet is 67 MB and
# DenseNet121 28 MB; a "checkpoint" of several GB is refused before it is read.
MAX_CHECKPOINT_BYTES = 2 * 1024**3
# JSON sidecars (detector.json, sr.json) hold a config and a training history.
MAX_JSON_BYTES = 4 * 1024 * 1024


def _require_file(path: Path, max_bytes: int = MAX_CHECKPOINT_BYTES) -> None:
    if not path.exists():
        raise UsageError(f"{path}: no such file")
    check_regular_file(path, "checkpoint")
    size = path.stat().st_size
    if size > max_bytes:
        raise UsageError(f"{path}: checkpoint is {size:,} bytes, over the limit of {max_bytes:,} (MAX_CHECKPOINT_BYTES)")


def read_json(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path}: no such file")
    text = read_text_capped(path, MAX_JSON_BYTES, "checkpoint description")
    try:
        data = json.loads(text)
    except (RecursionError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path}: not valid JSON ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a JSON object")
    return data


def write_json(path: str | Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    _require_file(path)
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises its own error types
        raise UsageError(f"{path}: not a readable safetensors file ({type(exc).__name__})") from None


def _atomic(path: str | Path, write) -> None:
    """``write(tmp_path)`` then ``os.replace``: a kill leaves the old file or the new one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a checkpoint is meant to be shared
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_safetensors(path: str | Path, state: dict[str, torch.Tensor]) -> None:
    # safetensors refuses shared or non-contiguous storage; clone to be safe.
    tensors = {k: v.detach().contiguous().clone().cpu() for k, v in state.items()}
    _atomic(path, lambda tmp: save_file(tensors, tmp))


def write_torch(path: str | Path, obj: Any) -> None:
    """Only tensors and plain containers, so ``torch.load(weights_only=True)`` reads it back."""
    _atomic(path, lambda tmp: torch.save(obj, tmp))


def read_torch(path: str | Path) -> Any:
    """``torch.load`` with ``weights_only=True``: a pickle cannot run code."""
    path = Path(path)
    _require_file(path)
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UsageError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__})") from None


def load_strict(model: nn.Module, state: dict[str, torch.Tensor], path: str | Path, what: str) -> None:
    """Strict load; a mismatch becomes one line naming the file and counting the problems."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
        if shapes:
            k = shapes[0]
            parts.append(
                f"{len(shapes)} shape mismatches (e.g. {k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)})"
            )
        raise UsageError(f"{path}: weights do not match {what}: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)
