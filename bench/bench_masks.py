"""Mask inference time per image on CPU: C-GAN (full width, ngf=64) at batch 1 and 16, and GrabCut.

Run for numbers:  python -m pytest bench/bench_masks.py --benchmark-enable --benchmark-group-by=group -p no:cacheprovider
In the normal test run (--benchmark-disable) each benchmark runs once as a smoke test.
The C-GAN has random weights: inference time does not depend on them.
"""

from __future__ import annotations

import pytest
import torch

from masks.config import ModelConfig
from masks.predictor import MaskPredictor
from masks.synthetic import make_samples
from masks.unet import UnetGenerator, init_weights

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="module")
def images():
    return [img for img, _ in make_samples(16, seed=0)]


@pytest.fixture(scope="module")
def cgan() -> MaskPredictor:
    torch.manual_seed(0)
    generator = UnetGenerator(ModelConfig(ngf=64, ndf=64))
    init_weights(generator)
    return MaskPredictor(generator, device="cpu", batch_size=16, meta={"epoch": 0}, source="random-init")


@pytest.mark.benchmark(group="masks-cpu")
def test_cgan_ngf64_batch1(benchmark, cgan, images) -> None:
    out = benchmark.pedantic(cgan.predict, args=(images[:1],), rounds=10, warmup_rounds=1)
    assert out[0].mask.shape == (128, 128)


@pytest.mark.benchmark(group="masks-cpu")
def test_cgan_ngf64_batch16(benchmark, cgan, images) -> None:
    # Time for 16 images; divide by 16 for per-image.
    out = benchmark.pedantic(cgan.predict, args=(images,), rounds=3, warmup_rounds=1)
    assert len(out) == 16


@pytest.mark.benchmark(group="masks-cpu")
def test_grabcut_batch1(benchmark, images) -> None:
    predictor = MaskPredictor.from_checkpoint(None)
    out = benchmark.pedantic(predictor.predict, args=(images[:1],), rounds=10, warmup_rounds=1)
    assert out[0].method == "grabcut"
