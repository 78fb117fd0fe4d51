"""Planted-trace data: a CIFAKE-layout folder where every fake carries a faint generator trace.

Real images are smooth random scenes (a random mean colour, low-frequency shapes,
a little sensor noise); a fake is made the same way and then gets one small
patch (8 to 12 px of the 32 px image) of a trace only a few grey levels strong:

- ``checkerboard``: +-a on alternating pixels (transposed-convolution upsampling);
- ``grid``: a period-3 lattice of brighter lines (resampling / upsampling grid);
- ``spectral``: a high-frequency sinusoid (a peak in the Fourier spectrum).

The trace is the only difference between the classes, so a detector that
learns it has learned the trace, and its Grad-CAM box can be checked against
the patch position, which is recorded in ``traces.json``. Nothing here looks
like a real photograph; it is for tests and for tuning the training recipe.

    python -m detectors.synthetic runs/planted --train 600 --test 200
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

TRACE_KINDS = ("checkerboard", "grid", "spectral")


@dataclass
class TraceSpec:
    size: int = 32  # image side in pixels (CIFAKE: 32)
    amplitude: float = 4.0  # grey levels (of 255) of the trace
    noise: float = 2.0  # grey levels of Gaussian sensor noise on every image
    patch_min: int = 8
    patch_max: int = 12
    kinds: tuple[str, ...] = TRACE_KINDS


def _scene(rng: np.random.Generator, size: int, noise: float) -> np.ndarray:
    """A smooth random colour scene in grey levels, (size, size, 3) float."""
    mean = rng.uniform(40, 215, size=3)  # the per-image mean colour varies a lot, as in photos
    coarse = rng.normal(0, 1, size=(4, 4, 3))
    shapes = np.stack(
        [np.asarray(Image.fromarray(coarse[..., c].astype(np.float32), mode="F").resize((size, size), Image.BICUBIC))
         for c in range(3)],
        axis=-1,
    )
    scene = mean + rng.uniform(10, 35) * shapes / (np.abs(shapes).max() + 1e-6)
    return scene + rng.normal(0, noise, scene.shape)


def _trace(kind: str, side: int, rng: np.random.Generator) -> np.ndarray:
    """A zero-mean pattern of peak magnitude 1, (side, side)."""
    yy, xx = np.mgrid[0:side, 0:side]
    if kind == "checkerboard":
        pattern = np.where((yy + xx) % 2 == 0, 1.0, -1.0)
    elif kind == "grid":
        phase = int(rng.integers(0, 3))
        lines = ((yy + phase) % 3 == 0) | ((xx + phase) % 3 == 0)
        pattern = np.where(lines, 1.0, -0.8)
    elif kind == "spectral":
        f = rng.uniform(0.3, 0.45)
        angle = rng.uniform(0, np.pi)
        pattern = np.cos(2 * np.pi * f * (xx * np.cos(angle) + yy * np.sin(angle)) + rng.uniform(0, 2 * np.pi))
    else:
        raise ValueError(f"unknown trace kind {kind!r}; expected one of {TRACE_KINDS}")
    return pattern


def make_image(rng: np.random.Generator, fake: bool, spec: TraceSpec = TraceSpec()) -> tuple[Image.Image, dict | None]:
    img = _scene(rng, spec.size, spec.noise)
    info = None
    if fake:
        side = int(rng.integers(spec.patch_min, spec.patch_max + 1))
        x0, y0 = (int(v) for v in rng.integers(0, spec.size - side + 1, size=2))
        kind = spec.kinds[int(rng.integers(0, len(spec.kinds)))]
        img[y0 : y0 + side, x0 : x0 + side, :] += spec.amplitude * _trace(kind, side, rng)[..., None]
        info = {"kind": kind, "box": [x0, y0, x0 + side, y0 + side]}
    arr = np.clip(np.round(img), 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB"), info


def make_dataset(root: str | Path, n_train: int, n_test: int, seed: int = 0, spec: TraceSpec = TraceSpec()) -> dict[str, dict]:
    """Write ``root/{train,test}/{REAL,FAKE}/NNNN.png`` and ``root/traces.json``;
    return {fake path: {"kind", "box": [x0, y0, x1, y1] in image pixels}}."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    traces: dict[str, dict] = {}
    for split, n in (("train", n_train), ("test", n_test)):
        for cls in ("REAL", "FAKE"):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                image, info = make_image(rng, cls == "FAKE", spec)
                path = folder / f"{i:04d}.png"
                image.save(path)
                if info is not None:
                    traces[str(path.relative_to(root))] = info
    (root / "traces.json").write_text(json.dumps({"spec": spec.__dict__ | {"kinds": list(spec.kinds)}, "traces": traces}, indent=1))
    return traces


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m detectors.synthetic", description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="folder to create (CIFAKE layout)")
    p.add_argument("--train", type=int, default=600, help="images per class in train/ (default 600)")
    p.add_argument("--test", type=int, default=200, help="images per class in test/ (default 200)")
    p.add_argument("--amplitude", type=float, default=4.0, help="trace strength in grey levels (default 4)")
    p.add_argument("--noise", type=float, default=2.0, help="sensor noise in grey levels (default 2)")
    p.add_argument("--kinds", default=",".join(TRACE_KINDS), help=f"comma-separated subset of {','.join(TRACE_KINDS)}")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    kinds = tuple(k for k in args.kinds.split(",") if k)
    bad = [k for k in kinds if k not in TRACE_KINDS]
    if bad or not kinds:
        p.error(f"--kinds: unknown {bad or 'empty'}; expected a subset of {','.join(TRACE_KINDS)}")
    spec = TraceSpec(amplitude=args.amplitude, noise=args.noise, kinds=kinds)
    traces = make_dataset(args.out, args.train, args.test, args.seed, spec)
    print(f"{args.out}: {2 * (args.train + args.test)} images, {len(traces)} with a planted trace")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
