"""The no-training default: GrabCut from a centred rectangle."""

from __future__ import annotations

import numpy as np
from PIL import Image

from masks import MaskPredictor
from masks.grabcut import NOTE, GrabCutConfig, grabcut_mask
from masks.synthetic import make_samples
from masks.train import mean_iou


def test_grabcut_reaches_iou_07_on_centred_shapes() -> None:
    samples = make_samples(24, seed=21, style="random")
    results = MaskPredictor.from_checkpoint(None).predict([img for img, _ in samples])
    iou = mean_iou(np.stack([r.mask for r in results]), np.stack([m for _, m in samples]))
    assert iou >= 0.7, iou


def test_grabcut_result_says_so() -> None:
    img, _ = make_samples(1, seed=2)[0]
    r = MaskPredictor.from_checkpoint(None).predict_one(img)
    assert r.method == "grabcut" and NOTE in r.notes and r.seconds > 0
    assert NOTE == "no mask checkpoint: using GrabCut seeded from a centred rectangle"


def test_grabcut_small_inputs_come_back_at_their_size() -> None:
    # 32x32 (un-super-resolved CIFAR size) is harder than 128: texture is lost, so a lower bar.
    ious = []
    for img, mask in make_samples(8, seed=4):
        small = img.resize((32, 32), Image.Resampling.BICUBIC)
        out = grabcut_mask(small)
        assert out.shape == (32, 32) and out.dtype == bool
        truth = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((32, 32), Image.Resampling.BILINEAR)) >= 128
        ious.append(mean_iou(out[None], truth[None]))
    assert np.mean(ious) >= 0.6, ious


def test_grabcut_never_marks_the_margin_and_handles_flat_images() -> None:
    img, _ = make_samples(1, seed=8)[0]
    m = grabcut_mask(img, GrabCutConfig(margin=0.2))
    assert not m[:25].any() and not m[:, :25].any() and m.any()
    flat = MaskPredictor.from_checkpoint(None).predict_one(Image.new("RGB", (64, 64), (90, 90, 90)))
    assert flat.mask.shape == (64, 64) and not flat.mask.all()
