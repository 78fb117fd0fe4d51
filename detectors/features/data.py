"""Which images, with which labels: the CIFAKE layout for real/fake, a folder per source for attribution.

Binary (the default): ``DATA/train/{REAL,FAKE}`` and ``DATA/test/{REAL,FAKE}``,
labels real = 0, fake = 1 (as ``explain train detector``).

Attribution (``--attribution``, seed 004): ``DATA/train/<SOURCE>/`` and
``DATA/test/<SOURCE>/`` with one folder per source (``REAL``, ``GAN``,
``DIFFUSION``, ...), or ``DATA/<SOURCE>/`` without splits. Classes are the folder
names in lower case, ``real`` first when present.

A dataset without a ``test`` split is split here: a seeded, stratified
``test_fraction`` of each class is held out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from detectors.data import _find_dir, has_split, list_images, list_split
from explainer.errors import UsageError

# A cap on the images one run lists, so a mistaken root (``/``) fails fast instead of walking the disk.
MAX_IMAGES = 1_000_000


@dataclass
class Split:
    paths: list[Path]
    labels: np.ndarray  # int64 class indices
    classes: list[str]

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, keep: np.ndarray) -> "Split":
        return Split([p for p, k in zip(self.paths, keep) if k], self.labels[keep], self.classes)


def _attribution_split(folder: Path) -> Split:
    sources = sorted((d for d in folder.iterdir() if d.is_dir()), key=lambda d: (d.name.lower() != "real", d.name.lower()))
    sources = [d for d in sources if d.name.lower() not in ("train", "test")]
    if len(sources) < 2:
        raise UsageError(f"{folder}: attribution needs at least two source folders (e.g. REAL, GAN, DIFFUSION)")
    paths: list[Path] = []
    labels: list[int] = []
    for k, d in enumerate(sources):
        files = list_images(d)
        if not files:
            raise UsageError(f"{d}: no images")
        paths += files
        labels += [k] * len(files)
        if len(paths) > MAX_IMAGES:
            raise UsageError(f"{folder}: more than {MAX_IMAGES:,} images; point at a smaller folder")
    return Split(paths, np.asarray(labels, dtype=np.int64), [d.name.lower() for d in sources])


def _binary_split(root: Path, split: str) -> Split:
    items = list_split(root, split)
    if len(items) > MAX_IMAGES:
        raise UsageError(f"{root}: more than {MAX_IMAGES:,} images; point at a smaller folder")
    return Split([p for p, _ in items], np.asarray([y for _, y in items], dtype=np.int64), ["real", "fake"])


def load_splits(data_dir: str | Path, attribution: bool = False, test_fraction: float = 0.2, seed: int = 0) -> tuple[Split, Split]:
    """(train, test) for a dataset folder."""
    root = Path(data_dir)
    if not root.is_dir():
        raise UsageError(f"{root}: no such folder")
    if has_split(root, "train"):
        read = (lambda s: _attribution_split(_find_dir(root, s.upper()))) if attribution else (lambda s: _binary_split(root, s))
        train = read("train")
        if has_split(root, "test"):
            test = read("test")
            if test.classes != train.classes:
                raise UsageError(f"{root}: test classes {test.classes} differ from train classes {train.classes}")
            return train, test
        return _hold_out(train, test_fraction, seed, root)
    if not attribution:
        raise UsageError(f"{root}: no 'train' folder (expected the CIFAKE layout train/REAL, train/FAKE, test/...)")
    return _hold_out(_attribution_split(root), test_fraction, seed, root)


def _hold_out(data: Split, fraction: float, seed: int, root: Path) -> tuple[Split, Split]:
    if not 0.0 < fraction < 1.0:
        raise UsageError(f"--test-fraction {fraction}: must be between 0 and 1")
    rng = np.random.default_rng(seed)
    test = np.zeros(len(data), dtype=bool)
    for k in range(len(data.classes)):
        idx = np.flatnonzero(data.labels == k)
        n = int(round(len(idx) * fraction))
        if n < 1 or n >= len(idx):
            raise UsageError(f"{root}: class {data.classes[k]!r} has {len(idx)} images, too few to hold out a test part")
        test[rng.choice(idx, size=n, replace=False)] = True
    return data.subset(~test), data.subset(test)
