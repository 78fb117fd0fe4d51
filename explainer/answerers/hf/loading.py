"""Load any image-text-to-text model (hub id or local folder) as a :class:`VLMAnswerer`.

Failures a user can fix (no network and not cached, wrong path, a folder that
is not a model, a text-only architecture, 4-bit on a CPU, bitsandbytes
missing) become :class:`explainer.errors.UsageError` with one sentence saying
what is missing and how to supply it — never a traceback. Offline is detected
up front (``HF_HUB_OFFLINE``, the local cache, a 3-second reachability probe)
because the hub client otherwise retries for ~25 s before giving up.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from urllib.parse import urlparse

from explainer.answerers.hf.folder_checks import check_config_matches_weights, read_config_json
from explainer.answerers.hf.image_prep import SQUARE_NOTE, squares_images
from explainer.errors import UsageError

DEFAULT_CPU_MODEL = "HuggingFaceTB/SmolVLM-256M-Instruct"
DEFAULT_GPU_MODEL = "Qwen/Qwen2-VL-2B-Instruct"
QUANTIZE = (None, "4bit", "8bit")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
           "float16": "float16", "fp16": "float16", "half": "float16"}


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"cannot use device '{device}': torch sees no CUDA GPU here; use --device cpu")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise UsageError(f"unknown device '{device}': use auto, cpu or cuda")
    return device


def default_model(device: str = "auto") -> str:
    """SmolVLM-256M-Instruct on a CPU, Qwen2-VL-2B-Instruct on a GPU."""
    return DEFAULT_GPU_MODEL if resolve_device(device).startswith("cuda") else DEFAULT_CPU_MODEL


def _resolve_dtype(dtype, device: str):
    import torch

    if dtype is None:
        # bf16 on GPUs. On CPUs bf16 is 2-3x faster only with native bf16 instructions
        # (AVX512-BF16 / AMX, measured in docs/vlm.md) and much slower without: fp32 there.
        if device.startswith("cuda") or cpu_has_native_bf16():
            return torch.bfloat16
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    name = _DTYPES.get(str(dtype).lower())
    if name is None:
        raise UsageError(f"unknown dtype '{dtype}': use float32, bfloat16 or float16")
    return getattr(torch, name)


def cpu_has_native_bf16() -> bool:
    """True when the CPU advertises bf16 matrix instructions (Linux /proc/cpuinfo flags)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _hub_reachable(timeout: float = 3.0) -> bool:
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # cannot probe through a proxy cheaply; let the download try
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or "\\" in name or not _HUB_ID.match(name)


def _quantization_config(quantize: str | None, device: str, name: str, dtype):
    if quantize not in QUANTIZE:
        raise UsageError(f"unknown quantization '{quantize}': use 4bit or 8bit (or none)")
    if quantize is None:
        return None
    if not device.startswith("cuda"):
        raise UsageError(
            f"cannot load VLM '{name}' in {quantize}: bitsandbytes quantization needs a CUDA GPU and this run "
            f"is on the CPU; drop --quantize or run on a GPU"
        )
    try:
        import bitsandbytes  # noqa: F401  (optional 'gpu' extra)
    except ImportError:
        raise UsageError(
            f"cannot load VLM '{name}' in {quantize}: bitsandbytes is not installed; "
            f"pip install 'explainer[gpu]'"
        ) from None
    from transformers import BitsAndBytesConfig

    if quantize == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
    return BitsAndBytesConfig(load_in_8bit=True)


def _source(name: str) -> tuple[str, bool, Path | None]:
    """(what to pass to from_pretrained, local_files_only, the folder on disk if any) — or a UsageError."""
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UsageError(f"cannot load VLM '{name}': it is a file, not a model folder; pass the folder that holds config.json")
        if not (path / "config.json").exists():
            raise UsageError(
                f"cannot load VLM '{name}': the folder has no config.json, so it is not a saved Hugging Face "
                f"model; pass a folder written by save_pretrained or huggingface-cli download"
            )
        return str(path), True, path
    if _looks_like_path(name):
        raise UsageError(f"cannot load VLM '{name}': no such folder; check the path given with --vlm")
    cached = _cached_folder(name)
    if cached is not None:
        return name, True, cached
    if _offline():
        raise UsageError(
            f"cannot load VLM '{name}': it is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; "
            f"download it on a connected machine (huggingface-cli download {name}) or pass a local folder with --vlm PATH"
        )
    if not _hub_reachable():
        raise UsageError(
            f"cannot load VLM '{name}': it is not in the local Hugging Face cache and the hub cannot be reached; "
            f"download it on a connected machine (huggingface-cli download {name}) or pass a local folder with --vlm PATH"
        )
    return name, False, None


def _cached_folder(name: str) -> Path | None:
    """The snapshot folder of a hub id in the local cache, or None."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(name, "config.json")
        return Path(found).parent if isinstance(found, str) else None
    except Exception:  # an unexpected cache layout is just "not cached"
        return None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300].rstrip(".")


def load_vlm(
    id_or_path: str | os.PathLike | None = None,
    *,
    device: str = "auto",
    dtype=None,
    quantize: str | None = None,
    device_map: str | dict | None = None,
    mode: str = "cached",
    image_splitting: bool = False,
    max_batch: int = 16,
    packing: str = "rows",
):
    """Load a vision-language model and wrap it as the engine's answerer.

    ``id_or_path``: a Hugging Face id or a local folder; ``None`` picks the
    default for the device (:func:`default_model`). ``device``: ``auto``,
    ``cpu`` or ``cuda``. ``dtype``: default bf16 on CUDA and on CPUs with native
    bf16 instructions (AVX512-BF16/AMX), else float32.
    ``quantize``: ``4bit``/``8bit`` through bitsandbytes (CUDA only).
    ``device_map``: e.g. ``"auto"`` to spread a model larger than one GPU
    (accelerate). ``mode``: ``cached`` | ``plain`` | ``generate`` (see
    :mod:`explainer.answerers.hf.answerer`). ``packing``: ``rows`` (one padded
    row per question) | ``exact`` (an image's yes/no questions in one sequence
    after its prefix, kept apart by a 4D mask; refused where not verified). ``image_splitting``: Idefics3/SmolVLM only;
    off by default because the stock processor tiles even a 128 px image into
    17 × 64 tokens.
    """
    from explainer.answerers.hf.answerer import VLMAnswerer
    from explainer.answerers.hf.prefix_cache import EXACT_PACKING

    device = resolve_device(device)
    name = str(id_or_path) if id_or_path is not None else default_model(device)
    torch_dtype = _resolve_dtype(dtype, device)
    quant = _quantization_config(quantize, device, name, torch_dtype)
    source, local_only, folder = _source(name)
    if folder is not None:  # a FIFO, a huge or malformed config: refused before transformers reads it
        read_config_json(folder, name)

    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    try:
        config = AutoConfig.from_pretrained(source, local_files_only=local_only)
    except Exception as exc:  # transformers' own validation errors are not all ValueErrors
        raise UsageError(f"cannot load VLM '{name}': its config.json cannot be read ({_one_line(exc)})") from None
    model_type = getattr(config, "model_type", "")
    if model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        raise UsageError(
            f"cannot load VLM '{name}': its architecture '{model_type}' is not an image-text-to-text model; "
            f"pass a vision-language model such as {DEFAULT_CPU_MODEL}"
        )
    if packing == "exact" and model_type not in EXACT_PACKING:  # refused before any weights are read
        raise UsageError(f"cannot use --packing exact with VLM '{name}': exact packing is verified only for "
                         f"{', '.join(EXACT_PACKING)}, not {model_type!r}; use --packing rows")
    if folder is not None:  # pickled weights, or a config far larger than its weights: refused before building
        check_config_matches_weights(config, folder, name)
    # Safetensors only: a pickled checkpoint can run code when it is read.
    kwargs: dict = {"dtype": torch_dtype, "local_files_only": local_only, "use_safetensors": True}
    if quant is not None:
        kwargs["quantization_config"] = quant
        kwargs["device_map"] = device_map or {"": 0}
    elif device_map is not None:
        kwargs["device_map"] = device_map
    try:
        processor = AutoProcessor.from_pretrained(source, local_files_only=local_only)
        model = AutoModelForImageTextToText.from_pretrained(source, **kwargs)
    except (OSError, ValueError, KeyError, ImportError) as exc:
        raise UsageError(f"cannot load VLM '{name}': {_one_line(exc)}") from None
    if "device_map" not in kwargs:
        model = model.to(device)
    model.eval()

    notes = []
    image_processor = getattr(processor, "image_processor", None)
    if image_processor is not None and hasattr(image_processor, "do_image_splitting"):
        image_processor.do_image_splitting = image_splitting
        notes.append(f"image splitting {'on' if image_splitting else 'off'} ({model_type} processor)")
    if squares_images(processor):
        notes.append(SQUARE_NOTE)
    try:
        answerer = VLMAnswerer(model, processor, mode=mode, model_id=name, max_batch=max_batch, notes=notes,
                               packing=packing)
    except ValueError as exc:  # no chat template, no yes/no tokens, a template that hides the question
        raise UsageError(f"cannot use VLM '{name}' as an answerer: {_one_line(exc)}") from None
    token_note = answerer.yes_no_tokens.note()
    if token_note:
        answerer.notes.append(token_note)
    return answerer
