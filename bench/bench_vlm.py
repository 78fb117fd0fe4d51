"""VLM answerer timings (pytest-benchmark, group "vlm-cpu").

Real-size: a SmolVLM-256M built from its public config with random weights
in float32 and bfloat16 (slow to build: ``-m slow``). Smoke: the same benchmarks on the tiny Idefics3
test model, run by default (with ``--benchmark-disable`` they run once each).

    python -m pytest bench/bench_vlm.py -m slow --benchmark-enable -q

Measured: encode one image (``begin_image``: the image + template head through
the model once), one question on the cached prefix, a batch of 8 questions on
the cached prefix (one forward), and for comparison one plain uncached
question and one question the seed's way (``generate`` + parse).
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from explainer.answerers.base import ImageContext, YesNoQuery
from explainer.testing import build_smolvlm_256m, build_tiny_vlm
from explainer.answerers.hf import VLMAnswerer, load_vlm

QUESTIONS = [
    "This is an image of a cat. Are the cat's eyes reflecting light unnaturally? Answer yes or no.",
    "This is an image of a cat. Is the fur texture repeating in the red box? Answer yes or no.",
    "This is an image of a cat. Does the background look blurry or distorted? Answer yes or no.",
    "This is an image of a cat. Are the shadows inconsistent with the lighting? Answer yes or no.",
    "This is an image of a cat. Do the edges of the ears look melting? Answer yes or no.",
    "This is an image of a cat. Is there artificial smoothness on the skin? Answer yes or no.",
    "This is an image of a cat. Are the colors unnatural in the red box? Answer yes or no.",
    "This is an image of a cat. Is there glow or light bleed around the object? Answer yes or no.",
]
# model-dtype; the real-size model in both CPU dtypes (bf16 is the default where the CPU has native bf16).
MODELS = [
    "tiny-idefics3-float32",
    pytest.param("smolvlm-256m-float32", marks=pytest.mark.slow),
    pytest.param("smolvlm-256m-bfloat16", marks=pytest.mark.slow),
]


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory):
    base = tmp_path_factory.mktemp("bench-vlm")
    builders = {"tiny-idefics3": lambda: build_tiny_vlm("idefics3", base), "smolvlm-256m": lambda: build_smolvlm_256m(base)}
    built: dict = {}

    def get(name):
        if name not in built:
            built[name] = builders[name]()
        return built[name]

    return get


@pytest.fixture(scope="session")
def answerers(model_dirs):
    loaded: dict = {}

    def get(name, mode):
        if name not in loaded:
            model, dtype = name.rsplit("-", 1)
            loaded[name] = load_vlm(model_dirs(model), device="cpu", dtype=dtype)
        base = loaded[name]
        return base if mode == "cached" else VLMAnswerer(base.model, base.processor, mode=mode)

    return get


@pytest.fixture(scope="session")
def context():
    pixels = (np.random.RandomState(0).rand(128, 128, 3) * 255).astype("uint8")
    return ImageContext(image=Image.fromarray(pixels), image_id="bench")


def _queries(n):
    return [YesNoQuery(f"q{i}", QUESTIONS[i % len(QUESTIONS)]) for i in range(n)]


@pytest.mark.benchmark(group="vlm-cpu")
@pytest.mark.parametrize("model", MODELS)
def test_encode_image(benchmark, answerers, context, model):
    answerer = answerers(model, "cached")
    benchmark(answerer.begin_image, context)
    assert answerer.stats.prefix_tokens > 0
    benchmark.extra_info["prefix_tokens"] = answerer.stats.prefix_tokens


@pytest.mark.benchmark(group="vlm-cpu")
@pytest.mark.parametrize("model", MODELS)
def test_one_cached_question(benchmark, answerers, context, model):
    answerer = answerers(model, "cached")
    answerer.begin_image(context)
    answers = benchmark(answerer.yes_no, _queries(1))
    assert 0.0 <= answers[0].p_yes <= 1.0
    benchmark.extra_info["tokens"] = answers[0].tokens


@pytest.mark.benchmark(group="vlm-cpu")
@pytest.mark.parametrize("model", MODELS)
def test_batch_of_8_cached(benchmark, answerers, context, model):
    answerer = answerers(model, "cached")
    answerer.begin_image(context)
    answers = benchmark(answerer.yes_no, _queries(8))
    assert len(answers) == 8
    assert answerer.batches[-1].kind == "yes_no" and answerer.batches[-1].size == 8


@pytest.mark.benchmark(group="vlm-cpu")
@pytest.mark.parametrize("model", MODELS)
def test_one_plain_question(benchmark, answerers, context, model):
    answerer = answerers(model, "plain")
    answerer.begin_image(context)
    answers = benchmark(answerer.yes_no, _queries(1))
    benchmark.extra_info["tokens"] = answers[0].tokens


@pytest.mark.benchmark(group="vlm-cpu")
@pytest.mark.parametrize("model", MODELS)
def test_one_generate_question(benchmark, answerers, context, model):
    answerer = answerers(model, "generate")
    answerer.begin_image(context)
    benchmark(answerer.yes_no, _queries(1))
