"""Training data: finding (image, mask) pairs, loading them at the model's size, augmenting.

Layout: ``DATA_DIR/images/NAME.ext`` with ``DATA_DIR/masks/NAME.ext`` (same
stem; any of IMAGE_EXTS; masks 'L', '1' or grey RGB, the same size as their
image). Everything is resized to the model's square size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from explainer.errors import UsageError
from explainer.images import opened_image
from masks.maskfile import load_mask_file

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


class UnreadableImage(UsageError):
    """A training image that cannot be read (a bomb, a truncated download): the pair is skipped, the run goes on.

    A mask that does not fit its image stays a hard error: that is an annotation mistake to fix.
    """


@dataclass(frozen=True)
class Pairs:
    pairs: list[tuple[Path, Path]]  # (image, mask), sorted by name
    unmasked_images: list[Path]  # images with no mask: not used, reported


def _by_stem(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_EXTS:
            if p.stem in found:
                raise UsageError(f"{folder}: two files named {p.stem!r} ({found[p.stem].name}, {p.name})")
            found[p.stem] = p
    return found


def find_pairs(data_dir: str | Path) -> Pairs:
    """Match DATA_DIR/images/* with DATA_DIR/masks/* by file stem; UsageError on a bad layout."""
    root = Path(data_dir)
    if not root.is_dir():
        raise UsageError(f"{root}: not a directory")
    images_dir, masks_dir = root / "images", root / "masks"
    missing = [d.name for d in (images_dir, masks_dir) if not d.is_dir()]
    if missing:
        raise UsageError(f"{root}: no {missing[0]}/ folder; expected images/ and masks/ holding same-named files")
    images, masks = _by_stem(images_dir), _by_stem(masks_dir)
    orphans = sorted(set(masks) - set(images))
    if orphans:
        more = f" (and {len(orphans) - 1} more)" if len(orphans) > 1 else ""
        raise UsageError(f"{masks[orphans[0]]}: mask has no image named {orphans[0]}.* in {images_dir}{more}")
    pairs = [(images[s], masks[s]) for s in sorted(set(images) & set(masks))]
    if not pairs:
        raise UsageError(f"{root}: no image/mask pairs found (images/NAME.png with masks/NAME.png)")
    return Pairs(pairs, [images[s] for s in sorted(set(images) - set(masks))])


def load_pair(image_path: Path, mask_path: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    """-> (uint8 size x size x 3 image, bool size x size mask)."""
    try:
        with opened_image(image_path) as img:  # FIFOs, bombs and corrupt files: one UsageError naming the file
            image = img.convert("RGB")
    except UsageError as exc:
        raise UnreadableImage(str(exc)) from None
    mask = load_mask_file(mask_path, image.size)
    image = image.resize((size, size), Image.Resampling.BICUBIC)
    # Resize the mask as grey levels then threshold: smoother edges than nearest.
    mask_img = Image.fromarray(mask.astype(np.uint8) * 255, "L").resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(image).copy(), np.asarray(mask_img) >= 128


def to_tensor_image(image: np.ndarray) -> torch.Tensor:
    """uint8 H x W x 3 -> float 3 x H x W in [-1, 1] (pix2pix's input range)."""
    return torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1).float().div(127.5).sub(1.0)


@dataclass(frozen=True)
class Augment:
    """Random changes applied to a pair: geometry to both image and mask, colour to the image only."""

    hflip: float = 0.5  # probability; no vertical flip, objects have an up
    degrees: float = 10.0
    translate: float = 0.06  # share of the side
    scale: tuple[float, float] = (0.9, 1.1)
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.02

    def __call__(
        self, image: np.ndarray, mask: np.ndarray, g: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        def u(lo: float, hi: float) -> float:
            return lo + (hi - lo) * float(torch.rand((), generator=g))

        size = image.shape[0]
        m = mask.astype(np.uint8)
        if u(0, 1) < self.hflip:
            image, m = image[:, ::-1], m[:, ::-1]
        angle = u(-self.degrees, self.degrees)
        scale = u(*self.scale)
        tx, ty = u(-self.translate, self.translate) * size, u(-self.translate, self.translate) * size
        affine = cv2.getRotationMatrix2D((size / 2, size / 2), angle, scale)
        affine[:, 2] += (tx, ty)
        # Reflect at the borders so no flat fill appears that the model could learn as "background".
        image = cv2.warpAffine(np.ascontiguousarray(image), affine, (size, size), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT_101)
        m = cv2.warpAffine(np.ascontiguousarray(m), affine, (size, size), flags=cv2.INTER_NEAREST,
                           borderMode=cv2.BORDER_REFLECT_101)
        t = torch.from_numpy(image).permute(2, 0, 1)  # uint8 for the colour ops
        t = TF.adjust_brightness(t, u(1 - self.brightness, 1 + self.brightness))
        t = TF.adjust_contrast(t, u(1 - self.contrast, 1 + self.contrast))
        t = TF.adjust_saturation(t, u(1 - self.saturation, 1 + self.saturation))
        t = TF.adjust_hue(t, u(-self.hue, self.hue))
        return t.float().div(127.5).sub(1.0), torch.from_numpy(m.astype(np.float32))[None]


class PairSet:
    """All pairs held in memory (a few dozen annotated images) at the model's size."""

    def __init__(self, images: list[np.ndarray], masks: list[np.ndarray], augment: Augment | None) -> None:
        self.images, self.masks, self.augment = images, masks, augment

    def __len__(self) -> int:
        return len(self.images)

    def batches(self, batch_size: int, g: torch.Generator | None, shuffle: bool):
        """Yield (images N x 3 x S x S in [-1,1], masks N x 1 x S x S in {0,1}); randomness only from g."""
        order = torch.randperm(len(self), generator=g).tolist() if shuffle else list(range(len(self)))
        for start in range(0, len(order), batch_size):
            xs, ys = [], []
            for i in order[start:start + batch_size]:
                if self.augment is not None and g is not None:
                    x, y = self.augment(self.images[i], self.masks[i], g)
                else:
                    x = to_tensor_image(self.images[i])
                    y = torch.from_numpy(self.masks[i].astype(np.float32))[None]
                xs.append(x)
                ys.append(y)
            yield torch.stack(xs), torch.stack(ys)


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded train/held-out split; at least one on each side when n >= 2."""
    if n < 2:
        raise UsageError(f"need at least 2 image/mask pairs to hold one out for IoU, found {n}")
    n_val = min(n - 1, max(1, math.ceil(n * val_fraction)))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(perm[n_val:]), sorted(perm[:n_val])
