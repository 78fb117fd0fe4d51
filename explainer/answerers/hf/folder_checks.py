"""Checks on a model folder before transformers is allowed to build anything from it.

A shared model folder is untrusted input. Three things can go wrong before a
single question is asked, and each gets one line naming the folder:

* pickled weights (``pytorch_model.bin``, ``*.pt``): unpickling can run code,
  so only safetensors are loaded;
* a ``config.json`` that is not a small JSON object, or whose values
  transformers rejects (``hidden_size: "abc"``);
* a ``config.json`` whose sizes describe a far larger model than the weights
  hold (``hidden_size: 1000000``): transformers would allocate the missing
  parameters and exhaust memory. The config is instantiated on the meta device
  (no memory) and its parameter count compared with the weight files' headers.
"""

from __future__ import annotations

import json
from pathlib import Path

from explainer.errors import UsageError
from explainer.safe_io import read_text_capped

MAX_CONFIG_BYTES = 1024 * 1024  # real VLM configs are a few KB
# Parameters the config may describe beyond what the weight files hold (buffers, a head built
# from the config, rounding): more than this is a config that does not belong to these weights.
PARAMETER_SLACK = 1.05
PICKLED_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.pickle")


def read_config_json(folder: Path, name: str) -> dict:
    path = folder / "config.json"
    text = read_text_capped(path, MAX_CONFIG_BYTES, "model config")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"cannot load VLM '{name}': {path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise UsageError(f"cannot load VLM '{name}': {path}: expected a JSON object, got {type(data).__name__}")
    return data


def safetensors_files(folder: Path, name: str) -> list[Path]:
    """The folder's safetensors weight files; refuses a folder that holds only pickled weights."""
    found = sorted(folder.glob("*.safetensors"))
    if found:
        return found
    pickled = sorted(p.name for pattern in PICKLED_WEIGHTS for p in folder.glob(pattern))
    if pickled:
        raise UsageError(
            f"cannot load VLM '{name}': its weights are pickled ({', '.join(pickled[:3])}); explain loads only "
            f"safetensors because unpickling can run code. Convert them on a machine you trust "
            f"(load the model there and save_pretrained(..., safe_serialization=True))"
        )
    raise UsageError(f"cannot load VLM '{name}': the folder has no weight files (*.safetensors)")


def stored_parameters(files: list[Path], name: str) -> int:
    """Total number of values in the weight files, read from their headers only."""
    from safetensors import safe_open

    total = 0
    for path in files:
        try:
            with safe_open(str(path), framework="pt") as handle:
                for key in handle.keys():
                    n = 1
                    for dim in handle.get_slice(key).get_shape():
                        n *= int(dim)
                    total += n
        except Exception as exc:  # a corrupt header: safetensors raises its own error types
            raise UsageError(f"cannot load VLM '{name}': {path.name} is not a readable safetensors file ({exc})") from None
    return total


def described_parameters(config) -> int:
    """Parameters the model built from ``config`` would have, counted without allocating them."""
    import torch
    from transformers import AutoModelForImageTextToText

    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
        # Older transformers (5.0) do not tie the LM head to the embeddings in from_config: tie them
        # so a shared matrix is counted once, as it is stored once.
        if hasattr(model, "tie_weights"):
            model.tie_weights()
    return sum(p.numel() for p in model.parameters())


def check_config_matches_weights(config, folder: Path, name: str) -> None:
    files = safetensors_files(folder, name)
    stored = stored_parameters(files, name)
    try:
        described = described_parameters(config)
    except Exception as exc:  # transformers rejects the combination of values
        raise UsageError(f"cannot load VLM '{name}': its config.json describes no buildable model ({_first_line(exc)})") from None
    if described > stored * PARAMETER_SLACK:
        raise UsageError(
            f"cannot load VLM '{name}': config.json describes {described:,} parameters but the weights hold "
            f"{stored:,}; refusing to allocate the difference (is config.json from another model?)"
        )


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:300]
