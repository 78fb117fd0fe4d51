"""Image loading for training and evaluation.

Detector data uses the CIFAKE layout (``train/REAL``, ``train/FAKE``,
``test/REAL``, ``test/FAKE``; label 1 = fake). Images of any size are resized
to ``lr_size`` (32, like CIFAKE) and kept in memory as uint8; super-resolution
runs per batch on the training device, so SR weights are used exactly as at
inference time.

SR data: LR/HR pairs made by bicubic-downscaling *real* images only. A model
that never sees generator artifacts cannot learn to paint them in, so the SR
step does not manufacture the evidence the detector looks for.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from explainer.errors import UsageError

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
CLASS_DIRS = {"REAL": 0, "FAKE": 1}


def _find_dir(parent: Path, name: str) -> Path | None:
    for child in parent.iterdir() if parent.is_dir() else []:
        if child.is_dir() and child.name.upper() == name:
            return child
    return None


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def list_split(data_dir: str | Path, split: str) -> list[tuple[Path, int]]:
    """(path, label) for ``data_dir/split/{REAL,FAKE}``; folder names are case-insensitive."""
    root = Path(data_dir)
    if not root.is_dir():
        raise UsageError(f"{root}: no such folder")
    split_dir = _find_dir(root, split.upper())
    if split_dir is None:
        raise UsageError(f"{root}: no '{split}' folder (expected the CIFAKE layout {split}/REAL, {split}/FAKE)")
    folders = {name: _find_dir(split_dir, name) for name in CLASS_DIRS}
    for name, folder in folders.items():
        if folder is None:
            raise UsageError(f"{split_dir}: no {name} folder (expected {split}/REAL and {split}/FAKE)")
    items: list[tuple[Path, int]] = []
    for name, label in CLASS_DIRS.items():
        folder = folders[name]
        files = list_images(folder)
        if not files:
            raise UsageError(f"{folder}: no images")
        items += [(p, label) for p in files]
    return items


def read_rgb(path: Path) -> Image.Image:
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, UnidentifiedImageError) as exc:
        raise UsageError(f"{path}: cannot read image ({type(exc).__name__})") from None


def to_lr(image: Image.Image, lr_size: int) -> Image.Image:
    if image.size != (lr_size, lr_size):
        image = image.resize((lr_size, lr_size), Image.Resampling.BICUBIC, reducing_gap=None)
    return image


def load_split(data_dir: str | Path, split: str, lr_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """All images of one split as (N,3,lr,lr) uint8 and labels (N,) float."""
    items = list_split(data_dir, split)
    images = np.stack([np.asarray(to_lr(read_rgb(p), lr_size), dtype=np.uint8) for p, _ in items])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    y = torch.tensor([label for _, label in items], dtype=torch.float32)
    return x, y


def has_split(data_dir: str | Path, split: str) -> bool:
    root = Path(data_dir)
    return root.is_dir() and _find_dir(root, split.upper()) is not None


class SRPairs(torch.utils.data.Dataset):
    """Random HR crops of real images and their bicubic x``scale`` downscales."""

    def __init__(self, hr_dir: str | Path, patch: int = 128, scale: int = 4) -> None:
        root = Path(hr_dir)
        if not root.is_dir():
            raise UsageError(f"{root}: no such folder")
        self.files = list_images(root)
        if not self.files:
            raise UsageError(f"{root}: no images")
        if patch % scale:
            raise UsageError(f"--patch {patch} is not a multiple of the scale {scale}")
        self.patch, self.scale = patch, scale

    def __len__(self) -> int:
        return len(self.files)

    def pair(self, index: int, rng: random.Random) -> tuple[torch.Tensor, torch.Tensor]:
        hr = read_rgb(self.files[index])
        w, h = hr.size
        if min(w, h) < self.patch:
            # Small images are scaled up to one patch rather than skipped.
            f = self.patch / min(w, h)
            hr = hr.resize((max(self.patch, round(w * f)), max(self.patch, round(h * f))), Image.Resampling.BICUBIC)
            w, h = hr.size
        x0, y0 = rng.randint(0, w - self.patch), rng.randint(0, h - self.patch)
        hr = hr.crop((x0, y0, x0 + self.patch, y0 + self.patch))
        if rng.random() < 0.5:
            hr = hr.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        lr = hr.resize((self.patch // self.scale,) * 2, Image.Resampling.BICUBIC)
        return _to_tensor(lr), _to_tensor(hr)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.pair(index, random.Random())


def _to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()
