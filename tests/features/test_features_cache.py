"""The feature cache: hits skip the backbone, changes re-extract, broken caches are rebuilt; transforms; data layouts."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from detectors.features.backbones import load_backbone
from detectors.features.cache import FeatureCache, extract_features
from detectors.features.data import load_splits
from detectors.features.transforms import apply_transform, canonical, parse_transform
from explainer.errors import UsageError


class CountingBackbone:
    """Wraps a backbone and counts the images it embeds."""

    def __init__(self, inner):
        self.inner, self.seen = inner, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def features(self, images):
        self.seen += len(images)
        return self.inner.features(images)


def _files(tmp_path, n=6):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


def test_cache_hits_changes_and_transforms(tmp_path, tiny_backbones):
    paths = _files(tmp_path)
    bb = CountingBackbone(load_backbone(tiny_backbones["clip"]))
    cache = tmp_path / "cache"
    x1, ok, skipped = extract_features(bb, paths, "none", cache, batch_size=4, progress=False)
    assert bb.seen == 6 and ok.all() and not skipped
    x2, _, _ = extract_features(bb, paths, "none", cache, batch_size=4, progress=False)
    assert bb.seen == 6  # all from the cache
    np.testing.assert_array_equal(x1, x2)
    # a changed file is extracted again, alone
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(paths[2])
    os.utime(paths[2], ns=(1, 1))
    x3, _, _ = extract_features(bb, paths, "none", cache, batch_size=4, progress=False)
    assert bb.seen == 7
    assert not np.allclose(x3[2], x1[2]) and np.allclose(x3[0], x1[0])
    # another transform is another cache file
    extract_features(bb, paths, "blur:2", cache, batch_size=4, progress=False)
    assert bb.seen == 13
    assert len(list(cache.glob("*.safetensors"))) == 2


def test_broken_cache_is_rebuilt_not_trusted(tmp_path, tiny_backbones, capsys):
    paths = _files(tmp_path, 3)
    bb = CountingBackbone(load_backbone(tiny_backbones["clip"]))
    cache = tmp_path / "cache"
    extract_features(bb, paths, "none", cache, progress=False)
    (cache_file,) = cache.glob("*.safetensors")
    cache_file.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    x, ok, _ = extract_features(bb, paths, "none", cache, progress=False)
    assert ok.all() and bb.seen == 6
    assert "ignoring the feature cache" in capsys.readouterr().err
    assert FeatureCache(cache, bb, "none").rows  # rewritten, readable again


def test_unreadable_image_is_skipped_and_reported(tmp_path, tiny_backbones):
    paths = _files(tmp_path, 3)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    x, ok, skipped = extract_features(load_backbone(tiny_backbones["clip"]), [paths[0], bad, paths[1]], "none", None, progress=False)
    assert ok.tolist() == [True, False, True] and x.shape[0] == 2
    assert len(skipped) == 1 and "bad.png" in skipped[0]


def test_transforms_are_deterministic_and_checked():
    im = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    for spec in ("blur:1", "jitter:0.4", "jpeg:50", "blur:1+jitter:0.2"):
        a, b = apply_transform(im, spec, "x.png"), apply_transform(im, spec, "x.png")
        assert np.array_equal(np.asarray(a), np.asarray(b))
        assert not np.array_equal(np.asarray(a), np.asarray(im))
    assert apply_transform(im, "none", "x") is im
    assert canonical("JPEG:75") == "jpeg:75" and canonical("") == "none"
    for bad in ("sharpen:1", "blur:x", "jpeg:0", "jitter:2"):
        with pytest.raises(UsageError):
            parse_transform(bad)


def test_attribution_layout_without_splits(tmp_path):
    rng = np.random.default_rng(0)
    for source in ("REAL", "GAN", "DIFFUSION"):
        (tmp_path / source).mkdir()
        for i in range(10):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / source / f"{i}.png")
    train, test = load_splits(tmp_path, attribution=True, test_fraction=0.2, seed=0)
    assert train.classes == ["real", "diffusion", "gan"]
    assert len(train) == 24 and len(test) == 6 and sorted(np.bincount(test.labels)) == [2, 2, 2]
    assert not set(train.paths) & set(test.paths)
    with pytest.raises(UsageError, match="no 'train' folder"):
        load_splits(tmp_path)
