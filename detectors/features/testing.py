"""Offline backbones and data for tests and benchmarks.

:func:`build_tiny_backbone` saves a random-weight CLIP, DINOv2 or SigLIP with its
real image processor class into a folder, exactly as ``save_pretrained`` leaves a
downloaded model, so the loading path under test is the user's path
(``AutoModel`` / ``AutoImageProcessor``). :data:`REAL_CONFIGS` are the public
configurations of the real models, for the throughput benchmark (random weights:
same shapes, same cost).

:func:`make_planted_dataset` writes a CIFAKE-layout folder where every fake
carries a small planted checkerboard patch: a separation that is known, and a
place the box must find.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

TINY_KINDS = ("clip", "dinov2", "siglip")

# Public vision configs (config.json of the hub repos): hidden, layers, heads, MLP, patch, input size.
REAL_CONFIGS = {
    "clip-vit-b32": ("clip", dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, patch_size=32, image_size=224), 512),
    "clip-vit-l14": ("clip", dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096, patch_size=14, image_size=224), 768),
    "dinov2-small": ("dinov2", dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536, patch_size=14, image_size=518), 0),
    "dinov2-base": ("dinov2", dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, patch_size=14, image_size=518), 0),
    "siglip": ("siglip", dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, patch_size=16, image_size=224), 0),
}


def _text_config(**extra) -> dict:
    return dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4, vocab_size=128,
                max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1, **extra)


def build_model_and_processor(kind: str, vision: dict, projection_dim: int = 0, crop: int | None = None):
    """A random-weight model and its processor, from a vision config (CLIP and SigLIP get a 1-layer text tower)."""
    import torch
    from transformers import (
        BitImageProcessor, CLIPConfig, CLIPImageProcessor, CLIPModel, Dinov2Config, Dinov2Model,
        SiglipConfig, SiglipImageProcessor, SiglipModel,
    )

    torch.manual_seed(0)
    size = crop or vision["image_size"]
    if kind == "clip":
        cfg = CLIPConfig(vision_config=vision, text_config=_text_config(), projection_dim=projection_dim or vision["hidden_size"])
        model = CLIPModel(cfg)
        proc = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    elif kind == "dinov2":
        model = Dinov2Model(Dinov2Config(**vision))
        # The real processor resizes to 256 and crops 224; a tiny one keeps the pixels as they are.
        resize = round(crop * 256 / 224) if crop is None else crop
        crop = crop or 224
        proc = BitImageProcessor(size={"shortest_edge": resize}, crop_size={"height": crop, "width": crop},
                                 do_convert_rgb=True, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    elif kind == "siglip":
        model = SiglipModel(SiglipConfig(vision_config=vision, text_config=_text_config()))
        proc = SiglipImageProcessor(size={"height": size, "width": size})
    else:
        raise ValueError(f"unknown kind {kind!r}; one of {TINY_KINDS}")
    return model.eval(), proc


def build_tiny_backbone(kind: str, out_dir: str | Path, image_size: int = 32, patch_size: int = 8, hidden: int = 32) -> Path:
    """Save a tiny random-weight ``kind`` model and its processor under ``out_dir``; returns the folder."""
    out = Path(out_dir)
    if (out / "config.json").is_file():
        return out
    vision = dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2, num_attention_heads=4,
                  image_size=image_size, patch_size=patch_size)
    model, proc = build_model_and_processor(kind, vision, projection_dim=16 if kind == "clip" else 0, crop=image_size)
    model.save_pretrained(out)
    proc.save_pretrained(out)
    return out


def planted_image(rng: np.random.Generator, size: int, fake: bool, patch: int = 8, strength: float = 60.0,
                  align: int = 1) -> tuple[Image.Image, tuple[int, int, int, int] | None]:
    """A smooth colour gradient with mild noise; a fake also gets a ``patch``-px checkerboard
    at a random place whose corner is a multiple of ``align`` (``patch >= size``: the whole image)."""
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    base = np.stack([rng.uniform(40, 200) + rng.uniform(-40, 40) * xx + rng.uniform(-40, 40) * yy for _ in range(3)], -1)
    base += rng.normal(0, 2.0, base.shape)
    box = None
    if fake:
        patch = min(patch, size)
        x0, y0 = (int(v) * align for v in rng.integers(0, (size - patch) // align + 1, 2))
        checker = ((np.indices((patch, patch)).sum(0) % 2) * 2 - 1)[..., None] * strength
        base[y0 : y0 + patch, x0 : x0 + patch] += checker
        box = (x0, y0, x0 + patch, y0 + patch)
    return Image.fromarray(base.clip(0, 255).astype(np.uint8)), box


def make_planted_dataset(root: str | Path, n_train: int = 20, n_test: int = 10, size: int = 32, seed: int = 0,
                         sources: tuple[str, ...] = ("REAL", "FAKE"), patch: int = 8, strength: float = 60.0,
                         align: int = 1) -> dict[str, tuple[int, int, int, int]]:
    """CIFAKE layout under ``root`` (``n_train``/``n_test`` images per source); returns each fake's planted box by path.

    With more than two ``sources``, source k plants the pattern at k times ``strength``
    (distinguishable sources for attribution tests).
    """
    rng = np.random.default_rng(seed)
    boxes: dict[str, tuple[int, int, int, int]] = {}
    for split, n in (("train", n_train), ("test", n_test)):
        for k, source in enumerate(sources):
            folder = Path(root) / split / source
            folder.mkdir(parents=True, exist_ok=True)
            fake = source != "REAL"
            for i in range(n):
                img, box = planted_image(rng, size, fake, patch, strength * max(k, 1), align)
                path = folder / f"{i}.png"
                img.save(path)
                if box:
                    boxes[str(path)] = box
    return boxes
