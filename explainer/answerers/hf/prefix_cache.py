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
padding. Rows of one batch may belong to different images (several images
walked together): their prefix caches are stacked, each padded after its end to
the longest and masked there, and each row's positions follow its own prefix.
Several images are encoded in one pass when their prefixes have the same
shapes (no padding, so nothing changes for any of them). Qwen2-VL uses multimodal rotary positions: text after the image is at
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


# model_type → exact packing (several questions in one sequence after the prefix, a 4D mask keeping them apart)
# verified against the row path by tests/vlm/test_packing.py (SmolVLM / SmolVLM-256M are model type idefics3;
# "smolvlm", SmolVLM2's type, has no test model here, so it is not listed). Only attention implementations that take an
# arbitrary additive 4D mask can run it (flash-attention takes none; flex wants a BlockMask).
EXACT_PACKING = ("llava", "idefics3", "qwen2_vl", "qwen2_5_vl")
PACKING_ATTENTION = ("sdpa", "eager")


def packing_support(model) -> tuple[bool, str]:
    """(supported?, reason) for exact packing on this loaded model."""
    model_type = model.config.model_type
    if model_type not in EXACT_PACKING:
        return False, (f"exact packing is verified only for {', '.join(EXACT_PACKING)}; "
                       f"model type {model_type!r} is not")
    attn = getattr(getattr(model, "config", None), "_attn_implementation", None) or "eager"
    text_config = getattr(model.config, "text_config", None)
    attn = getattr(text_config, "_attn_implementation", None) or attn
    if attn not in PACKING_ATTENTION:
        return False, (f"exact packing needs an attention implementation that takes a 4D mask "
                       f"({', '.join(PACKING_ATTENTION)}); this model uses {attn!r}")
    return True, ""


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


@dataclass
class Rows:
    """Where each row of a batch stands: its own image's prefix length and (M-RoPE) position offset.

    Rows of one batch may sit on different images' prefixes (walking several
    images together): the stacked cache is as wide as the longest prefix, a
    shorter one is padded after its end and masked out, and every row's own
    tokens take positions ``length, length + 1, ...`` of its own prefix.
    """

    positions: str  # "linear" or "mrope"
    lengths: torch.Tensor  # (B,) prefix length per row
    deltas: torch.Tensor | None = None  # (B,) M-RoPE offset per row
    width: int = 0  # the stacked prefix width (longest prefix)

    def select(self, rows: torch.Tensor) -> "Rows":
        deltas = None if self.deltas is None else self.deltas[rows]
        return Rows(self.positions, self.lengths[rows], deltas, self.width)


def to_device(inputs: dict, device, dtype) -> dict:
    out = {}
    for key, value in inputs.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device)
            if value.is_floating_point():
                value = value.to(dtype)
        out[key] = value
    return out


_CACHE_ARG: dict[type, str] = {}


def cache_kwargs(module, cache) -> dict:
    """``{"cache": cache}`` where the installed transformers takes it, else ``{"past_key_values": cache}``.

    transformers renamed the argument (``past_key_values`` is deprecated for
    Idefics3Model.forward and the other VLM models, to be removed in 5.40);
    older releases only know ``past_key_values``. Read from the signature once per class.
    """
    kind = type(module)
    if kind not in _CACHE_ARG:
        import inspect

        try:
            params = inspect.signature(kind.forward).parameters
        except (TypeError, ValueError):  # pragma: no cover - a forward without a signature
            params = {}
        _CACHE_ARG[kind] = "cache" if "cache" in params else "past_key_values"
    return {_CACHE_ARG[kind]: cache, "use_cache": True}


@torch.inference_mode()
def encode_prefix(model, inputs: dict, raw_ids: list[int]) -> Prefix:
    """Run the prefix (with the image) through the model and keep its KV cache."""
    return encode_prefixes(model, inputs, [raw_ids])[0]


@torch.inference_mode()
def encode_prefixes(model, inputs: dict, raw_ids: list[list[int]]) -> list[Prefix]:
    """Encode B prefixes of the same length (a batch of images, no padding) in one pass; one Prefix per row.

    Rows never pad: images whose prefixes differ in length go in different
    calls (see :func:`same_shape_groups`), so each row's keys are exactly what
    it gets alone.
    """
    from transformers import DynamicCache

    model_type = model.config.model_type
    cache = DynamicCache(config=model.config)
    base = model.model
    if hasattr(base, "rope_deltas"):
        base.rope_deltas = None  # force a fresh M-RoPE index for these images
    base(**inputs, **cache_kwargs(base, cache))
    positions = EXACT_REUSE.get(model_type, "linear")
    deltas = base.rope_deltas.detach().clone() if positions == "mrope" else None
    length = int(inputs["input_ids"].shape[1])
    if len(raw_ids) == 1:
        return [Prefix(cache=cache, length=length, raw_ids=raw_ids[0], positions=positions, rope_deltas=deltas)]
    out = []
    for b, ids in enumerate(raw_ids):
        row = copy.deepcopy(cache)
        row.batch_select_indices(torch.tensor([b], device=model.device))
        delta = None if deltas is None else deltas.reshape(-1)[b].reshape(1, 1)
        out.append(Prefix(cache=row, length=length, raw_ids=ids, positions=positions, rope_deltas=delta))
    return out


def same_shape_groups(encoded: list[dict]) -> list[list[int]]:
    """Indices of processor outputs that can be concatenated along dim 0 without padding."""
    groups: dict[tuple, list[int]] = {}
    for i, enc in enumerate(encoded):
        key = tuple(sorted((k, tuple(v.shape[1:]), str(v.dtype)) for k, v in enc.items() if isinstance(v, torch.Tensor)))
        groups.setdefault(key + (int(enc["input_ids"].shape[1]),), []).append(i)
    return list(groups.values())


def concat_inputs(encoded: list[dict]) -> dict:
    """One batch from single-image processor outputs of the same shapes (every tensor stacks on dim 0:
    batch-major inputs and Qwen2-VL's flattened patches with their grid rows alike)."""
    first = encoded[0]
    return {k: torch.cat([e[k] for e in encoded], 0) if isinstance(v, torch.Tensor) else v for k, v in first.items()}


def position_ids(rows: Rows, starts: torch.Tensor, length: int) -> torch.Tensor:
    """Positions of ``length`` new tokens per row, row ``i`` starting at ``starts[i]`` (index in its own prefix)."""
    pos = starts[:, None] + torch.arange(length, device=starts.device)[None, :]
    if rows.positions == "mrope":
        return (pos + rows.deltas.to(pos.device)[:, None])[None].expand(3, -1, -1)
    return pos


def stacked_cache(model, prefixes: list[Prefix]):
    """A fresh cache whose row ``i`` holds ``prefixes[i]`` (right-padded to the longest), its mask and :class:`Rows`.

    The prefixes' own caches stay intact. Rows that share a prefix object share
    its keys (gathered by index, one copy per row as batching needs).
    """
    from transformers import DynamicCache

    device = model.device
    unique: list[Prefix] = []
    index: dict[int, int] = {}
    for p in prefixes:
        if id(p) not in index:
            index[id(p)] = len(unique)
            unique.append(p)
    pick = torch.tensor([index[id(p)] for p in prefixes], device=device)
    lengths = torch.tensor([p.length for p in prefixes], dtype=torch.long, device=device)
    width = max(p.length for p in unique)
    positions = unique[0].positions
    deltas = None
    if positions == "mrope":
        deltas = torch.stack([p.rope_deltas.to(device).reshape(-1)[0] for p in prefixes])
    if len(unique) == 1:
        cache = copy.deepcopy(unique[0].cache)
        if len(prefixes) > 1:
            cache.batch_repeat_interleave(len(prefixes))
    else:
        cache = DynamicCache(config=model.config)
        for layer_idx, layers in enumerate(zip(*(p.cache.layers for p in unique))):
            keys = _pad_stack([layer.keys for layer in layers], width)
            values = _pad_stack([layer.values for layer in layers], width)
            cache.update(keys[pick], values[pick], layer_idx)
    mask = (torch.arange(width, device=device)[None, :] < lengths[:, None]).long()
    return cache, mask, Rows(positions, lengths, deltas, width)


def _pad_stack(tensors: list[torch.Tensor], width: int) -> torch.Tensor:
    """(1, H, L_i, D) tensors → (N, H, width, D), zeros after each one's end (masked out)."""
    first = tensors[0]
    out = first.new_zeros((len(tensors), first.shape[1], width, first.shape[3]))
    for i, t in enumerate(tensors):
        out[i, :, : t.shape[2]] = t[0]
    return out


def repeated_cache(prefix: Prefix, batch: int):
    """A private copy of the prefix cache with ``batch`` rows (the prefix cache itself stays intact)."""
    cache = copy.deepcopy(prefix.cache)
    if batch > 1:
        cache.batch_repeat_interleave(batch)
    return cache


@torch.inference_mode()
def run_suffixes(model, prefix: Prefix | list[Prefix], rows: list[list[int]], pad_id: int):
    """One batched forward of right-padded ``rows``, row ``i`` on its prefix (one Prefix for all, or one per row).

    Returns ``(hidden, cache, mask, layout)``: last-layer hidden states ``(B, S, H)``
    (apply the LM head only to the positions you need), the grown cache, the
    attention mask so far and the rows' :class:`Rows`, for further decoding steps.
    """
    device = model.device
    prefixes = prefix if isinstance(prefix, list) else [prefix] * len(rows)
    batch = len(rows)
    width = max(len(r) for r in rows)
    cache, prefix_mask, layout = stacked_cache(model, prefixes)
    ids = torch.full((batch, width), pad_id, dtype=torch.long, device=device)
    suffix_mask = torch.zeros((batch, width), dtype=torch.long, device=device)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long, device=device)
        suffix_mask[i, : len(row)] = 1
    mask = torch.cat([prefix_mask, suffix_mask], dim=1)
    out = model.model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=position_ids(layout, layout.lengths, width),
        **cache_kwargs(model.model, cache),
    )
    return out.last_hidden_state, cache, mask, layout


@dataclass
class Packed:
    """Where the questions of a packed batch sit: ``rows`` packed sequences, one per distinct prefix."""

    owner: list[int]  # per question: its packed row
    last: list[int]  # per question: the position of its last token in that row
    tokens: int  # real tokens in the batch (padding excluded)


def pack(prefixes: list[Prefix], rows: list[list[int]]) -> tuple[list[Prefix], list[list[int]], list[list[int]], Packed]:
    """Group questions by prefix (first-seen order): (distinct prefixes, packed ids, segment per token, layout)."""
    order: dict[int, int] = {}
    unique: list[Prefix] = []
    ids: list[list[int]] = []
    segments: list[list[int]] = []
    owner, last = [], []
    for q, (p, row) in enumerate(zip(prefixes, rows)):
        if not row:
            raise ValueError("a packed question has no tokens")
        b = order.setdefault(id(p), len(unique))
        if b == len(unique):
            unique.append(p)
            ids.append([])
            segments.append([])
        ids[b].extend(row)
        segments[b].extend([q] * len(row))
        owner.append(b)
        last.append(len(ids[b]) - 1)
    return unique, ids, segments, Packed(owner, last, sum(map(len, rows)))


def packed_mask(prefix_mask: torch.Tensor, segments: torch.Tensor, dtype) -> torch.Tensor:
    """The additive 4D mask ``(B, 1, S, width + S)`` of a packed batch.

    A question's token sees its row's prefix (not the padding after a shorter
    prefix) and the earlier tokens of its own question only. Padding tokens
    (segment -1) see the prefix only, so no query row is fully masked (NaN).
    """
    batch, length = segments.shape
    prefix_ok = prefix_mask.bool()[:, None, :].expand(batch, length, prefix_mask.shape[1])
    seg_q, seg_k = segments[:, :, None], segments[:, None, :]
    causal = torch.ones((length, length), dtype=torch.bool, device=segments.device).tril()
    own = (seg_q == seg_k) & (seg_q >= 0) & causal[None]
    allowed = torch.cat([prefix_ok, own], dim=2)[:, None]
    mask = torch.zeros(allowed.shape, dtype=dtype, device=segments.device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min)


@torch.inference_mode()
def run_packed(model, prefixes: list[Prefix], rows: list[list[int]], pad_id: int):
    """One forward with the questions of each prefix packed into ONE sequence after it (exact, no padding
    between questions): a 4D mask keeps every question to its prefix and its own earlier tokens, and
    positions restart after the prefix for every question (M-RoPE positions for Qwen2-VL).

    Rows of different prefixes (several images) are one packed sequence per prefix, right-padded to the
    longest. The prefixes' caches stay intact (the forward writes into a stacked copy, dropped here).
    Returns ``(hidden at each question's last token (N, H), Packed)``.
    """
    device = model.device
    unique, ids, segments, layout = pack(prefixes, rows)
    cache, prefix_mask, rows_at = stacked_cache(model, unique)
    batch, width = len(unique), max(map(len, ids))
    input_ids = torch.full((batch, width), pad_id, dtype=torch.long, device=device)
    seg = torch.full((batch, width), -1, dtype=torch.long, device=device)
    offset = torch.zeros((batch, width), dtype=torch.long, device=device)  # index inside its own question
    for b, (row_ids, row_seg) in enumerate(zip(ids, segments)):
        input_ids[b, : len(row_ids)] = torch.tensor(row_ids, dtype=torch.long, device=device)
        seg[b, : len(row_seg)] = torch.tensor(row_seg, dtype=torch.long, device=device)
    for q, row in enumerate(rows):
        b, end = layout.owner[q], layout.last[q] + 1
        offset[b, end - len(row) : end] = torch.arange(len(row), device=device)
    pos = rows_at.lengths[:, None] + offset
    if rows_at.positions == "mrope":
        pos = (pos + rows_at.deltas.to(device)[:, None])[None].expand(3, -1, -1)
    out = model.model(
        input_ids=input_ids,
        attention_mask=packed_mask(prefix_mask, seg, model.dtype),
        position_ids=pos,
        **cache_kwargs(model.model, cache),
    )
    hidden = out.last_hidden_state
    pick_b = torch.tensor(layout.owner, device=hidden.device)
    pick_t = torch.tensor(layout.last, device=hidden.device)
    return hidden[pick_b, pick_t], layout


@torch.inference_mode()
def decode_step(model, layout: Rows, cache, mask: torch.Tensor, tokens: torch.Tensor, starts: torch.Tensor):
    """Feed one new token per row (``tokens`` shape (B,)) at positions ``starts`` (index in each row's prefix)."""
    mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
    out = model.model(
        input_ids=tokens[:, None],
        attention_mask=mask,
        position_ids=position_ids(layout, starts, 1),
        **cache_kwargs(model.model, cache),
    )
    return out.last_hidden_state[:, -1], mask
