"""The stage the engine calls."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image

from detectors import DetectorResult, DetectorStage
from explainer.errors import UsageError


def _images(n: int, size: int = 32) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def test_result_fields():
    names = [f.name for f in dataclasses.fields(DetectorResult)]
    assert names == ["sr_image", "sr_method", "verdict", "p_fake", "roi_box", "boxed_image", "heatmap",
                     "overlay", "notes", "timings"]


def test_without_checkpoints_it_says_so_and_treats_images_as_suspect():
    stage = DetectorStage.from_paths()
    results = stage.run(_images(3) + _images(1, size=200))
    assert len(results) == 4
    for r in results:
        assert r.sr_image.size == (128, 128) and r.sr_method == "bicubic"
        assert r.verdict is None and r.p_fake is None and r.roi_box is None
        assert r.heatmap is None and r.overlay is None
        assert r.boxed_image is r.sr_image
        assert "no classifier checkpoint: treating the image as suspect; no Grad-CAM box" in r.notes
        assert any("bicubic (no SR weights given)" in n for n in r.notes)
        assert set(r.timings) == {"sr"} and r.timings["sr"] >= 0


def test_with_classifier_gives_verdict_box_and_overlay(trained_tiny, fake_images):
    stage = DetectorStage.from_paths(classifier=trained_tiny, batch_size=4)
    images = [im for im, _ in fake_images[:6]]
    results = stage.run(images)
    assert len(results) == 6
    for r in results:
        assert r.verdict in ("fake", "real") and 0.0 <= r.p_fake <= 1.0
        assert (r.verdict == "fake") == (r.p_fake >= 0.5)
        assert set(r.timings) == {"sr", "classifier", "gradcam"}
        if r.roi_box is not None:
            x0, y0, x1, y1 = r.roi_box
            assert (x1 - x0, y1 - y0) == (80, 80) and 0 <= x0 and x1 <= 128 and 0 <= y0 and y1 <= 128
            assert r.heatmap.shape == (128, 128) and r.overlay.size == (128, 128)
            boxed = np.asarray(r.boxed_image)
            assert (boxed[y0, x0:x1] == [255, 0, 0]).all()
            assert not np.array_equal(boxed, np.asarray(r.sr_image))
    assert sum(r.roi_box is not None for r in results) >= 5
    # Batching does not change answers.
    single = [stage.run([im])[0] for im in images[:2]]
    assert [s.p_fake for s in single] == pytest.approx([r.p_fake for r in results[:2]], abs=1e-5)
    assert [s.roi_box for s in single] == [r.roi_box for r in results[:2]]


def test_bad_checkpoint_is_one_line_usage_error(tmp_path):
    bad = tmp_path / "detector.safetensors"
    bad.write_bytes(b"nope")
    with pytest.raises(UsageError) as exc:
        DetectorStage.from_paths(classifier=bad)
    assert str(exc.value).startswith(str(tmp_path / "detector.json")) and "\n" not in str(exc.value)
    with pytest.raises(UsageError) as exc:
        DetectorStage.from_paths(sr=tmp_path / "missing.pth")
    assert str(exc.value) == f"{tmp_path / 'missing.pth'}: no such file"


def test_stage_probability_equals_plain_forward(trained_tiny, fake_images):
    import torch

    from detectors.classifier import load_classifier
    from detectors.pipeline import LRPipeline
    from detectors.sr.load import load_sr, pil_to_tensor

    stage = DetectorStage.from_paths(classifier=trained_tiny)
    images = [im for im, _ in fake_images[:4]]
    model, _ = load_classifier(trained_tiny)
    # The training/eval pipeline (differentiable, for FGSM) computes what the stage computes.
    x = torch.stack([pil_to_tensor(im) for im in images])
    with torch.no_grad():
        expected = torch.sigmoid(LRPipeline(model, load_sr(None)).eval()(x)).numpy()
    assert [r.p_fake for r in stage.run(images)] == pytest.approx(expected.tolist(), abs=1e-5)
