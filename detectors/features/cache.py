"""Features on disk, one safetensors file per backbone and transform, so heads are tried without re-extracting.

The file holds one tensor ``features`` (N, D) and, in the safetensors metadata,
the index: one entry per row, ``path<TAB>size<TAB>mtime_ns``. An image whose file
changed (size or mtime) is simply not found and is extracted again. The name
of the file carries the backbone's cache key (model, weights, processor
settings) and the transform, so a change to any of them never reuses features.

The cache is read as possibly hostile: the file size is capped before reading,
the header's shapes are checked against the index, and anything inconsistent is
ignored (with a note) and rebuilt rather than trusted.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import torch

from detectors.features.backbones import Backbone, ConcatBackbone, short_name
from detectors.features.transforms import apply_transform, canonical
from detectors.progress import make_progress, note
from explainer.errors import UsageError
from explainer.images import load_image
from explainer.safe_io import atomic_write_bytes

MAX_CACHE_BYTES = 16 * 1024**3
MAX_FEATURE_DIM = 65_536
SAVE_EVERY = 20  # batches between cache writes, so a kill loses little


def file_key(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}\t{st.st_size}\t{st.st_mtime_ns}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[-60:].strip("_") or "backbone"


class FeatureCache:
    """Rows of features keyed by :func:`file_key`, for one backbone and one transform."""

    def __init__(self, cache_dir: str | Path | None, backbone: Backbone, transform: str) -> None:
        self.transform = canonical(transform)
        self.key = f"{backbone.cache_key()}-{_slug(self.transform)}"
        self.path = Path(cache_dir) / f"{_slug(short_name(backbone.spec))}-{self.key}.safetensors" if cache_dir else None
        self.rows: dict[str, np.ndarray] = {}
        self.dirty = False
        if self.path is not None and self.path.exists():
            self._read()

    def _read(self) -> None:
        from safetensors import safe_open

        p = self.path
        try:
            if not p.is_file():
                raise ValueError("not a regular file")
            if p.stat().st_size > MAX_CACHE_BYTES:
                raise ValueError(f"over {MAX_CACHE_BYTES:,} bytes")
            with safe_open(str(p), framework="pt") as fh:
                meta = fh.metadata() or {}
                index = json.loads(meta.get("index", "[]"))
                if list(fh.keys()) != ["features"]:
                    raise ValueError("unexpected tensors")
                shape = fh.get_slice("features").get_shape()
                if len(shape) != 2 or shape[0] != len(index) or not 0 < shape[1] <= MAX_FEATURE_DIM:
                    raise ValueError(f"shape {shape} does not match {len(index)} index entries")
                feats = fh.get_tensor("features").float().numpy()
            if not all(isinstance(k, str) for k in index):
                raise ValueError("index entries are not strings")
        except Exception as exc:  # a broken cache is rebuilt, never trusted
            note(f"{p}: ignoring the feature cache ({str(exc).splitlines()[0][:120]}); extracting again")
            return
        self.rows = dict(zip(index, feats))

    def get(self, key: str) -> np.ndarray | None:
        return self.rows.get(key)

    def put(self, key: str, row: np.ndarray) -> None:
        self.rows[key] = row
        self.dirty = True

    def save(self) -> None:
        if self.path is None or not self.dirty or not self.rows:
            return
        from safetensors.torch import save

        self.path.parent.mkdir(parents=True, exist_ok=True)
        index = list(self.rows)
        feats = torch.from_numpy(np.stack([self.rows[k] for k in index]).astype(np.float32))
        data = save({"features": feats}, metadata={"index": json.dumps(index), "transform": self.transform})
        atomic_write_bytes(self.path, data)
        self.dirty = False


def extract_features(
    backbone: Backbone,
    paths: list[Path],
    transform: str = "none",
    cache_dir: str | Path | None = None,
    batch_size: int = 32,
    progress: bool = True,
    label: str = "",
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Features of every readable image: (X (n_ok, D), ok (len(paths),) bool, skipped one-line reasons).

    Unreadable images are skipped and reported, never fatal: a batch goes on past a bad file.
    """
    if isinstance(backbone, ConcatBackbone):
        parts = [extract_features(m, paths, transform, cache_dir, batch_size, progress, label) for m in backbone.members]
        ok = np.logical_and.reduce([p[1] for p in parts])
        blocks = []
        for x, member_ok, _ in parts:
            full = np.zeros((len(paths), x.shape[1]), dtype=np.float32)
            full[member_ok] = x
            blocks.append(full[ok])
        skipped = sorted(set(s for p in parts for s in p[2]))
        return np.concatenate(blocks, axis=1), ok, skipped

    cache = FeatureCache(cache_dir, backbone, transform)
    rows: list[np.ndarray | None] = [None] * len(paths)
    keys: list[str | None] = [None] * len(paths)
    skipped: list[str] = []
    todo: list[int] = []
    for i, p in enumerate(paths):
        try:
            keys[i] = file_key(p)
        except OSError as exc:
            skipped.append(f"{p}: cannot read ({exc.strerror or exc})")
            continue
        hit = cache.get(keys[i])
        if hit is not None:
            rows[i] = hit
        else:
            todo.append(i)
    if todo:
        desc = f"features {backbone.spec}" + (f" [{cache.transform}]" if cache.transform != "none" else "") + (f" {label}" if label else "")
        with make_progress() if progress else _Null() as bar:
            task = bar.add_task(desc, total=len(todo), info="") if progress else None
            for b, start in enumerate(range(0, len(todo), batch_size)):
                chunk = todo[start : start + batch_size]
                images, where = [], []
                for i in chunk:
                    try:
                        image = load_image(paths[i]).image
                    except UsageError as exc:
                        skipped.append(str(exc))
                        continue
                    images.append(apply_transform(image, transform, paths[i].name))
                    where.append(i)
                if images:
                    feats = backbone.features(images)
                    for i, row in zip(where, feats):
                        rows[i] = row
                        cache.put(keys[i], row)
                if progress:
                    bar.update(task, advance=len(chunk))
                if (b + 1) % SAVE_EVERY == 0:
                    cache.save()
        cache.save()
    ok = np.array([r is not None for r in rows], dtype=bool)
    dim = next((r.shape[0] for r in rows if r is not None), 0)
    x = np.stack([r for r in rows if r is not None]).astype(np.float32) if ok.any() else np.zeros((0, dim), np.float32)
    return x, ok, skipped


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def cache_key(backbone: Backbone, transform: str) -> str:
    if isinstance(backbone, ConcatBackbone):
        return "+".join(FeatureCache(None, m, transform).key for m in backbone.members)
    return FeatureCache(None, backbone, transform).key


def cache_dir_default() -> Path:
    return Path(os.environ.get("EXPLAIN_FEATURE_CACHE", "runs/feature-cache"))
