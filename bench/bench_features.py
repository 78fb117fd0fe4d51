"""Features per second of each foundation backbone on the CPU (real-size architectures, random weights).

Run for numbers (the real-size backbones are marked slow; include them with -m ''):

    python -m pytest bench/bench_features.py --benchmark-enable -m '' \
        --benchmark-group-by=group --benchmark-columns=min,mean,max,rounds

Each benchmark embeds one batch of ``BATCH`` 256x256 images through the
backbone's own processor and model (the path ``explain train features`` takes);
features/second = BATCH / mean, also stored in ``extra_info``. Weights are random:
the architecture and input size, not the weight values, set the cost. In the
default test run only the tiny smoke test runs, once.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from detectors.features.backbones import HFBackbone, TimmBackbone, load_backbone
from detectors.features.testing import REAL_CONFIGS, build_model_and_processor, build_tiny_backbone

torch.set_num_threads(2)  # shared 2-core machine
GROUP = "features-cpu"
BATCH = 8


def _images(n: int = BATCH, size: int = 256) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def _bench(benchmark, backbone, name: str, rounds: int):
    images = _images()
    benchmark.group = GROUP
    benchmark.name = name
    benchmark.extra_info["batch"] = BATCH
    feats = benchmark.pedantic(lambda: backbone.features(images), rounds=rounds, iterations=1, warmup_rounds=1)
    stats = getattr(benchmark, "stats", None)
    if stats is not None:  # absent under --benchmark-disable
        benchmark.extra_info["features_per_second"] = BATCH / stats.stats.mean
    return feats


def test_tiny_clip_smoke(benchmark, tmp_path):
    backbone = load_backbone(str(build_tiny_backbone("clip", tmp_path / "clip")))
    feats = _bench(benchmark, backbone, "tiny-clip", rounds=2)
    assert feats.shape == (BATCH, backbone.dim)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(REAL_CONFIGS))
def test_real_size_hf_backbone(benchmark, name):
    kind, vision, projection = REAL_CONFIGS[name]
    model, processor = build_model_and_processor(kind, vision, projection_dim=projection, crop=224)
    if kind == "dinov2":  # the real processor: resize to 256, centre crop 224
        processor.size = {"shortest_edge": 256}
    backbone = HFBackbone(name, f"random:{name}", model, processor)
    feats = _bench(benchmark, backbone, name, rounds=2)
    assert feats.shape[0] == BATCH


@pytest.mark.slow
def test_real_size_dino_resnet50(benchmark):
    import timm

    torch.manual_seed(0)
    backbone = TimmBackbone("dino-resnet50", "resnet50", timm.create_model("resnet50", pretrained=False, num_classes=0))
    feats = _bench(benchmark, backbone, "dino-resnet50", rounds=2)
    assert feats.shape == (BATCH, 2048)
