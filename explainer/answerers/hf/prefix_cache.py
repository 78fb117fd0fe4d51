"""Encode the shared prefix (image + template head) once; run question suffixes on its KV cache.

Reuse is exact only where the prefix's keys/values do not depend on what
follows it, i.e. causal attention over the whole sequence. That holds for
LLaVA, Idefics3/SmolVLM and Qwen2-VL/2.5-VL (checked by tests/vlm against the
plain path). It does not hold for PaliGemma or Gemma-3 (image and prompt
attend to each other bidirectionally): those, and any architecture not listed
here, use the plain path.

Batching: the prefix cache is copied and repeated B times
(``DynamicCache.batch_repeat_interleave``), suffixes are right-padded, the
attention mask is prefix ones + suffix mask, and position ids are passed
explicitly so every row's real tokens sit at ``P, P+1, ...`` whatever the
padding. Qwen2-VL uses multimodal rotary positions: text after the image is at
``index + rope_deltas`` on all three axes, with ``rope_deltas`` read from the
prefix pass.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch

# model_type → how its text positions are formed after a cached prefix.
EXACT_REUSE = {
    "llava": "linear",
    "idefics3": "linear",
    "smolvlm": "linear",
    "qwen2_vl": "mrope",
    "qwen2_5_vl": "mrope",
}
# Known not to be exact, with the reason shown to the user.
NOT_EXACT = {
    "paligemma": "image and prompt attend to each other bidirectionally",
    "gemma3": "image tokens attend to each other bidirectionally",
}


def reuse_support(model_type: str) -> tuple[bool, str]:
    """(exact?, reason) for prefix KV-cache reuse with this architecture."""
    if model_type in EXACT_REUSE:
        return True, ""
    if model_type in NOT_EXACT:
        return False, f"prefix reuse is not exact for {model_type} ({NOT_EXACT[model_type]})"
    return False, f"prefix reuse is not verified for model type {model_type!r}"


@dataclass
class Prefix:
    """The encoded prefix of one image."""

    cache: Any  # a transformers Cache holding the prefix keys/values (batch 1)
    length: int  # P: tokens in the prefix, image tokens included
    raw_ids: list[int]  # the prefix's ids before the processor expands the image placeholder
    positions: str = "linear"
    rope_deltas: torch.Tensor | None = None  # Qwen2-VL: (1, 1) offset of text positions
    extras: dict = field(default_factory=dict)


def to_device(inputs: dict, device, dtype) -> dict:
    out = {}
    for key, value in inputs.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device)
            if value.is_floating_point():
                value = value.to(dtype)
        out[key] = value
    return out


@torch.inference_mode()
def encode_prefix(model, inputs: dict, raw_ids: list[int]) -> Prefix:
    """Run the prefix (with the image) through the model and keep its KV cache."""
    from transformers import DynamicCache

    model_type = model.config.model_type
    cache = DynamicCache(config=model.config)
    base = model.model
    if hasattr(base, "rope_deltas"):
        base.rope_deltas = None  # force a fresh M-RoPE index for this image
    base(**inputs, past_key_values=cache, use_cache=True)
    positions = EXACT_REUSE.get(model_type, "linear")
    rope_deltas = None
    if positions == "mrope":
        rope_deltas = base.rope_deltas.detach().clone()
    return Prefix(
        cache=cache,
        length=int(inputs["input_ids"].shape[1]),
        raw_ids=raw_ids,
        positions=positions,
        rope_deltas=rope_deltas,
    )


def position_ids(prefix: Prefix, starts: torch.Tensor, length: int) -> torch.Tensor:
    """Positions of ``length`` new tokens per row, row ``i`` starting at ``starts[i]`` (absolute index)."""
    pos = starts[:, None] + torch.arange(length, device=starts.device)[None, :]
    if prefix.positions == "mrope":
        delta = prefix.rope_deltas.to(pos.device).reshape(-1)[0]
        return (pos + delta)[None].expand(3, -1, -1)
    return pos


def repeated_cache(prefix: Prefix, batch: int):
    """A private copy of the prefix cache with ``batch`` rows (the prefix cache itself stays intact)."""
    cache = copy.deepcopy(prefix.cache)
    if batch > 1:
        cache.batch_repeat_interleave(batch)
    return cache


@torch.inference_mode()
def run_suffixes(model, prefix: Prefix, rows: list[list[int]], pad_id: int):
    """One batched forward of right-padded ``rows`` on a copy of the prefix cache.

    Returns ``(hidden, cache, mask)``: last-layer hidden states ``(B, S, H)``
    (apply the LM head only to the positions you need), the grown cache and
    the attention mask so far, for further decoding steps.
    """
    device = model.device
    batch = len(rows)
    width = max(len(r) for r in rows)
    ids = torch.full((batch, width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((batch, prefix.length + width), dtype=torch.long, device=device)
    mask[:, : prefix.length] = 1
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long, device=device)
        mask[i, prefix.length : prefix.length + len(row)] = 1
    starts = torch.full((batch,), prefix.length, dtype=torch.long, device=device)
    cache = repeated_cache(prefix, batch)
    out = model.model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=position_ids(prefix, starts, width),
        past_key_values=cache,
        use_cache=True,
    )
    return out.last_hidden_state, cache, mask


@torch.inference_mode()
def decode_step(model, prefix: Prefix, cache, mask: torch.Tensor, tokens: torch.Tensor, starts: torch.Tensor):
    """Feed one new token per row (``tokens`` shape (B,)) at absolute positions ``starts``."""
    mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
    out = model.model(
        input_ids=tokens[:, None],
        attention_mask=mask,
        position_ids=position_ids(prefix, starts, 1),
        past_key_values=cache,
        use_cache=True,
    )
    return out.last_hidden_state[:, -1], mask
