"""CPU timings of the detector stage's steps: SR (RRDBNet, bicubic), classifier, Grad-CAM.

Run for numbers (the batch-64 RRDBNet / DenseNet121 ones are marked slow;
include them with -m ''):

    python -m pytest bench/bench_detectors.py --benchmark-enable -m '' \
        --benchmark-group-by=group --benchmark-columns=min,mean,max,rounds

Each result's extra_info holds the batch size; time per image = mean / batch.
In the normal test run (--benchmark-disable) every benchmark runs once as a smoke test.
Weights are random: the timings do not depend on their values.
"""

from __future__ import annotations

import pytest
import torch

from detectors.classifier import ClassifierConfig, build_classifier
from detectors.gradcam import GradCAM
from detectors.sr.load import SuperResolver, load_sr
from detectors.sr.rrdbnet import RRDBNet

torch.set_num_threads(2)  # shared 2-core machine
GROUP = "detectors-cpu"


@pytest.fixture(scope="module")
def rrdbnet() -> SuperResolver:
    torch.manual_seed(0)
    return SuperResolver(method="rrdbnet", scale=4, net=RRDBNet().eval(), reason=None)


@pytest.fixture(scope="module")
def densenet():
    torch.manual_seed(0)
    return build_classifier(ClassifierConfig()).eval()


def _lr(batch: int) -> torch.Tensor:
    return torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(batch))


def _hr(batch: int) -> torch.Tensor:
    return torch.rand(batch, 3, 128, 128, generator=torch.Generator().manual_seed(batch))


def _run(benchmark, fn, batch: int, name: str, once: bool = False, rounds: int = 1):
    benchmark.group = GROUP
    benchmark.name = name
    benchmark.extra_info["batch"] = batch
    if once:
        # Heavy on CPU: a few rounds (one for batch 64) show the per-image cost.
        # The warm-up round keeps oneDNN's first-call setup out of the numbers.
        return benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1 if rounds > 1 else 0)
    return benchmark(fn)


def test_sr_rrdbnet_batch1(benchmark, rrdbnet):
    x = _lr(1)
    out = _run(benchmark, lambda: rrdbnet(x), 1, "sr-rrdbnet-b1", once=True, rounds=3)
    assert out.shape == (1, 3, 128, 128)


@pytest.mark.slow
def test_sr_rrdbnet_batch64(benchmark, rrdbnet):
    x = _lr(64)
    out = _run(benchmark, lambda: rrdbnet(x), 64, "sr-rrdbnet-b64", once=True)
    assert out.shape == (64, 3, 128, 128)


@pytest.mark.parametrize("batch", [1, 64])
def test_sr_bicubic(benchmark, batch):
    sr, x = load_sr(None), _lr(batch)
    out = _run(benchmark, lambda: sr(x), batch, f"sr-bicubic-b{batch}")
    assert out.shape == (batch, 3, 128, 128)


@pytest.mark.parametrize("batch", [1, pytest.param(64, marks=pytest.mark.slow)])
def test_classifier_densenet121(benchmark, densenet, batch):
    x = _hr(batch)

    def classify():
        with torch.no_grad():
            return torch.sigmoid(densenet(x))

    out = _run(benchmark, classify, batch, f"classifier-densenet121-b{batch}", once=batch > 1)
    assert out.shape == (batch,)


@pytest.mark.parametrize("batch", [1, pytest.param(64, marks=pytest.mark.slow)])
def test_gradcam_densenet121(benchmark, densenet, batch):
    x = _hr(batch)

    def cam():
        with GradCAM(densenet, densenet.default_cam_layer()) as g:
            return g(x)

    out = _run(benchmark, cam, batch, f"gradcam-densenet121-b{batch}", once=batch > 1)
    assert out.heatmaps.shape == (batch, 128, 128)
