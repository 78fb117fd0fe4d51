"""Reading user images: convert what can be converted, refuse the rest in one clear line.

Every image leaves here as 8-bit RGB. What was converted is recorded as a note
so the output can say so (a CMYK or 16-bit input is not what the detector was
trained on).
"""

from __future__ import annotations

import re
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import ExifTags, Image, ImageFile, UnidentifiedImageError

from explainer.errors import UsageError
from explainer.safe_io import check_regular_file

# Refuse decompression bombs outright: a 32x32 detector has no use for 100 MP.
MAX_PIXELS = 64_000_000
# Every image is reduced to at most this many pixels on its long side as soon as it is decoded (JPEG: while
# decoding), so that a batch of 60 MP photos costs a few MB each, not 180 MB. The detector works at 32x32,
# the report shows 512 px, the probes measure at most 1024 px: nothing downstream needs more.
WORKING_MAX_SIDE = 1024
# Modes Pillow can resample directly; others (palette, 16-bit, CMYK...) are converted to RGB first.
_RESIZABLE_MODES = {"RGB", "RGBA", "L", "LA", "I", "F", "RGBX"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
_NUMBER = re.compile(r"(\d+)")


@dataclass
class LoadedImage:
    path: Path
    image: Image.Image  # RGB, 8-bit
    notes: list[str] = field(default_factory=list)

    @property
    def image_id(self) -> str:
        return self.path.name


def image_index(path: Path) -> int | None:
    """The challenge's index: the number in the file name (``17.png`` → 17)."""
    found = _NUMBER.findall(path.stem)
    return int(found[-1]) if found else None


def _to_rgb(img: Image.Image, notes: list[str]) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float32)  # float32: a 60 MP 16-bit scan is 240 MB, not 480
        top = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        notes.append(f"converted {mode} ({'16' if top > 255 else '32'}-bit grayscale) to 8-bit RGB")
        arr8 = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, "L").convert("RGB")
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        notes.append("converted a floating-point image to 8-bit RGB (min-max scaled)")
        arr8 = ((arr - lo) / (hi - lo or 1.0) * 255.0 + 0.5).astype(np.uint8)
        return Image.fromarray(arr8, "L").convert("RGB")
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        notes.append(f"composited {mode} transparency onto white")
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    notes.append(f"converted {mode} to RGB")
    return img.convert("RGB")


# EXIF orientation -> the transpose that makes the image upright (the table of ImageOps.exif_transpose)
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
            5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}


def _decode_reduced(img: Image.Image, notes: list[str]) -> Image.Image:
    """Decode, turn upright (EXIF orientation), reduce to WORKING_MAX_SIDE, convert to RGB: one full-size copy at most."""
    full = img.size
    if img.format == "JPEG" and max(full) > WORKING_MAX_SIDE:
        # the JPEG decoder itself scales by 1/2, 1/4 or 1/8: a 60 MP photo never exists at full size
        # (the request keeps the aspect ratio: draft picks the smallest scale still covering both sides)
        scale = WORKING_MAX_SIDE / max(full)
        img.draft("RGB", (max(1, int(full[0] * scale)), max(1, int(full[1] * scale))))
    orientation = img.getexif().get(ExifTags.Base.Orientation, 1)
    img.load()
    work = img if img.mode in _RESIZABLE_MODES else _to_rgb(img, notes)
    if max(work.size) > WORKING_MAX_SIDE:
        work = work.copy() if work is img else work
        work.thumbnail((WORKING_MAX_SIDE, WORKING_MAX_SIDE), Image.Resampling.LANCZOS, reducing_gap=2.0)
        notes.append(f"reduced from {full[0]}x{full[1]} to {work.width}x{work.height} (the working resolution)")
    if orientation in _UPRIGHT:
        # by hand, not ImageOps.exif_transpose: the reduced copy may no longer carry the EXIF block
        work = work.transpose(_UPRIGHT[orientation])
        notes.append(f"turned upright as its EXIF orientation ({orientation}) says")
    rgb = _to_rgb(work, notes)
    return rgb.copy() if rgb is img else rgb


@contextmanager
def opened_image(path: str | Path, what: str = "image") -> Iterator[Image.Image]:
    """``Image.open`` with every refusal as one line naming the file (UsageError).

    Not a regular file (FIFO, device), empty, over MAX_PIXELS (checked from the
    header, before any pixel is decoded), a decompression bomb, not an image,
    truncated or corrupt: each raised by the ``with`` statement, including
    failures of decoding inside its body (``img.load()``).
    """
    p = check_regular_file(path, what)  # a FIFO, /dev/zero or a device is refused before it is opened
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise UsageError(f"{p}: cannot read {what}: {exc.strerror}") from None
    if size == 0:
        raise UsageError(f"{p}: {what} file is empty")
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as img:
                w, h = img.size
                if w * h > MAX_PIXELS:
                    raise UsageError(f"{p}: {what} is {w}x{h} ({w * h / 1e6:.0f} MP), "
                                     f"over the {MAX_PIXELS // 1_000_000} MP limit")
                yield img
    except UsageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UsageError(f"{p}: refused as a decompression bomb (over {MAX_PIXELS // 1_000_000} MP)") from None
    except UnidentifiedImageError:
        raise UsageError(f"{p}: not an image (or a format Pillow cannot read)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "truncated" in message.lower() or "broken" in message.lower() or isinstance(exc, (SyntaxError, ValueError)):
            raise UsageError(f"{p}: {what} is truncated or corrupt ({message})") from None
        raise UsageError(f"{p}: cannot read {what} ({message})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def load_image(path: str | Path) -> LoadedImage:
    """Open ``path`` as RGB at the working resolution, or raise :class:`UsageError` with one line naming the file."""
    notes: list[str] = []
    with opened_image(path) as img:
        if getattr(img, "n_frames", 1) > 1:
            notes.append(f"animated image with {img.n_frames} frames: using the first")
            img.seek(0)
        rgb = _decode_reduced(img, notes)
    p = Path(path)
    if rgb.width < 8 or rgb.height < 8:
        raise UsageError(f"{p}: image is {rgb.width}x{rgb.height}; at least 8x8 is needed")
    return LoadedImage(p, rgb, notes)


def expand_inputs(paths: list[str]) -> list[Path]:
    """Files as given, folders expanded to their images (sorted by the number in the name)."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = [f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
            out.extend(sorted(found, key=lambda f: (image_index(f) is None, image_index(f) or 0, f.name)))
        else:
            out.append(p)
    return out
