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
from PIL import Image

from explainer.errors import UsageError
from explainer.images import load_image

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
    """One image as RGB through :func:`explainer.images.load_image` (pixel cap,
    decompression bombs, truncation and odd modes refused in one line)."""
    return load_image(path).image


def to_lr(image: Image.Image, lr_size: int) -> Image.Image:
    if image.size != (lr_size, lr_size):
        image = image.resize((lr_size, lr_size), Image.Resampling.BICUBIC, reducing_gap=None)
    return image


def load_split(data_dir: str | Path, split: str, lr_size: int = 32, warn=None) -> tuple[torch.Tensor, torch.Tensor]:
    """All images of one split as (N,3,lr,lr) uint8 and labels (N,) float.

    A file that cannot be read (corrupt, a decompression bomb, not an image) is
    skipped with a one-line warning through ``warn`` and the rest go on; a split
    that loses a whole class is an error.
    """
    items = list_split(data_dir, split)
    images, labels = [], []
    for path, label in items:
        try:
            images.append(np.asarray(to_lr(read_rgb(path), lr_size), dtype=np.uint8))
        except UsageError as exc:
            if warn is not None:
                warn(f"skipped: {exc}")
            continue
        labels.append(label)
    for name, label in CLASS_DIRS.items():
        if label not in labels:
            raise UsageError(f"{data_dir}: no readable {split}/{name} images")
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    y = torch.tensor(labels, dtype=torch.float32)
    return x, y


def validation_split(y: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, validation indices): ``fraction`` of each class, seeded, at least one per class."""
    if not 0.0 < fraction < 1.0:
        raise UsageError(f"--val-fraction {fraction}: must be between 0 and 1")
    gen = torch.Generator().manual_seed(seed * 7_919 + 1)
    train_idx, val_idx = [], []
    for label in (0.0, 1.0):
        idx = torch.nonzero(y == label).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        k = max(1, int(round(fraction * len(idx))))
        if k >= len(idx):
            raise UsageError(f"--val-fraction {fraction}: leaves no {'fake' if label else 'real'} training images")
        val_idx.append(idx[:k])
        train_idx.append(idx[k:])
    return torch.cat(train_idx).sort().values, torch.cat(val_idx).sort().values


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
        self.root = root
        self.bad: set[Path] = set()

    def __len__(self) -> int:
        return len(self.files)

    def pair(self, index: int, rng: random.Random, warn=None) -> tuple[torch.Tensor, torch.Tensor]:
        # A file that cannot be read is skipped (warned about once) and the next one used.
        for step in range(len(self.files)):
            path = self.files[(index + step) % len(self.files)]
            if path in self.bad:
                continue
            try:
                hr = read_rgb(path)
                break
            except UsageError as exc:
                self.bad.add(path)
                if warn is not None:
                    warn(f"skipped: {exc}")
        else:
            raise UsageError(f"{self.root}: no readable images")
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
