"""Against a REAL vLLM server: the same tiny model in-process and served gives the same walk.

Run by scripts/test-vllm.sh, which starts vLLM (CPU, float32) on the model of
:func:`explainer.testing.build_served_qwen2_vl` and sets EXPLAINER_VLLM_URL and
EXPLAINER_VLLM_MODEL. Marked ``server``: not part of the default run.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import time
import urllib.request
from pathlib import Path

import pytest

from explainer.answerers.base import ImageContext, YesNoQuery
from explainer.answerers.server import ServerSettings, connect
from explainer.errors import UsageError

pytestmark = pytest.mark.server

URL = os.environ.get("EXPLAINER_VLLM_URL")
MODEL = os.environ.get("EXPLAINER_VLLM_MODEL")
ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.png"))
QUESTIONS = [
    "Is the fur texture repeating in the red box? Answer yes or no.",
    "Are the body panels misaligned? Answer yes or no.",
    "Do the shadows look real? Answer yes or no.",
    "Is the background blurry? Answer yes or no.",
    "Are the cat's eyes reflecting light unnaturally? Answer yes or no.",
    "Is there texture repetition? Answer yes or no.",
    "Do the edges look real? Answer yes or no.",
    "Is the sky distorted? Answer yes or no.",
]

if not (URL and MODEL):
    pytest.skip("no vLLM server: run scripts/test-vllm.sh", allow_module_level=True)


@pytest.fixture(scope="module")
def served():
    answerer = connect(ServerSettings(url=URL, model=MODEL, timeout=120, retries=1))
    yield answerer
    answerer.close()


@pytest.fixture(scope="module")
def local():
    from explainer.answerers.hf import load_vlm

    return load_vlm(MODEL, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def pipelines(served, local):
    from explainer.pipeline import Pipeline, PipelineOptions

    options = PipelineOptions(vlm=MODEL)  # the served pipeline walks several images together (run_many)
    return Pipeline(options, answerer=local), Pipeline(options, answerer=served)


@pytest.fixture(scope="module")
def images():
    from explainer.images import load_image

    assert EXAMPLES, "examples/*.png are the test images"
    return [load_image(p) for p in EXAMPLES]


def test_same_walk_and_p_yes_on_every_test_image(pipelines, images):
    in_process, through_vllm = (p.explain(images) for p in pipelines)
    worst = 0.0
    for a, b in zip(in_process, through_vllm):
        assert a.error is None and b.error is None, (a.error, b.error)
        assert [q["node_id"] for q in a.questions] == [q["node_id"] for q in b.questions], a.file
        for qa, qb in zip(a.questions, b.questions):
            assert (qa["kind"], qa["answer"]) == (qb["kind"], qb["answer"]), (a.file, qa["node_id"])
            if qa["kind"] == "yes_no":
                assert abs(qa["p_yes"] - qb["p_yes"]) < 0.01, (a.file, qa["node_id"], qa["p_yes"], qb["p_yes"])
                worst = max(worst, abs(qa["p_yes"] - qb["p_yes"]))
            elif qa["kind"] == "choice":
                for option, p in qa["probs"].items():
                    assert abs(p - qb["probs"][option]) < 0.01, (a.file, qa["node_id"], option)
        assert [f["artifact"] for f in a.findings] == [f["artifact"] for f in b.findings]
        assert b.server["requests"] >= len([q for q in b.questions if q["kind"] in ("yes_no", "choice", "follow_up")])
        assert b.server["prompt_tokens"] > 0 and b.rounds
    print(f"\nlargest |P(yes) in-process - P(yes) vLLM| over {len(images)} images: {worst:.2e}")


def sample_image():
    from explainer.images import load_image

    return load_image(EXAMPLES[0]).image.resize((128, 128))


def test_concurrent_questions_and_images(served, local):
    """Eight questions at once for each of two images open together answer as one question at a time does."""
    from PIL import ImageOps

    imgs = [sample_image(), ImageOps.mirror(sample_image())]
    preamble = "This image may be AI-generated."

    def one_at_a_time(img):
        local.begin_image(ImageContext(image=img, preamble=preamble))
        try:
            return [local.yes_no([YesNoQuery("q", q)])[0].p_yes for q in QUESTIONS]
        finally:
            local.end_image()

    expected = [one_at_a_time(img) for img in imgs]
    served.begin_images({slot: ImageContext(image=img, preamble=preamble) for slot, img in enumerate(imgs)})
    try:
        pairs = [(slot, YesNoQuery(f"q{i}", q)) for slot in (0, 1) for i, q in enumerate(QUESTIONS)]
        got = [a.p_yes for a in served.yes_no_images(pairs)]
    finally:
        served.end_images([0, 1])
    assert got == pytest.approx(expected[0] + expected[1], abs=0.01)
    assert expected[0] != pytest.approx(expected[1], abs=1e-3)  # the two images really differ


def test_unknown_model_name():
    with pytest.raises(UsageError, match=r"does not serve model 'no-such-model'; it serves: "):
        connect(ServerSettings(url=URL, model="no-such-model"))


def test_server_down():
    with pytest.raises(UsageError, match="cannot reach the VLM server"):
        connect(ServerSettings(url="http://127.0.0.1:9/v1", model=MODEL, retries=0))


def test_options_sharing_a_first_token_refused_through_vllm_tokenize(served):
    from explainer.answerers.server.scoring import SharedFirstToken

    # in the tiny vocabulary "catalogue" and "cat" both start with the token "cat"
    first = served.first_tokens.for_options(["cat", "dog"])
    assert first["cat"] >= {"cat"} and first["dog"] >= {"dog"}
    with pytest.raises(SharedFirstToken):
        served.first_tokens.for_options(["cat", "cats"])


def _metrics() -> dict[str, float]:
    root = URL[: -len("/v1")]
    text = urllib.request.urlopen(root + "/metrics", timeout=10).read().decode()
    out = {}
    for name in ("vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total"):
        values = [float(m.group(1)) for m in re.finditer(rf"^{re.escape(name)}{{[^}}]*}} ([0-9.e+]+)$", text, re.M)]
        out[name] = sum(values)
    return out


def test_latency_and_prefix_cache(served, local):
    """Per-question latency in-process vs through vLLM, and vLLM's prefix-cache hit rate; written for the notes.

    The numbers are a measurement (printed, and written to $EXPLAINER_VLLM_REPORT), not an assertion,
    except that the image's prefix is actually reused by the server.
    """
    img = sample_image()
    context = ImageContext(image=img, preamble="This image may be AI-generated.")
    rows = {}
    for name, answerer in (("in-process (transformers, cached prefix)", local), ("vLLM-CPU over HTTP", served)):
        answerer.begin_image(context)
        try:
            answerer.yes_no([YesNoQuery("warm", QUESTIONS[0])])  # warm-up; the image prefix is cached from here
            singles = []
            for q in QUESTIONS:
                start = time.perf_counter()
                answerer.yes_no([YesNoQuery("q", q)])
                singles.append(time.perf_counter() - start)
            start = time.perf_counter()
            answerer.yes_no([YesNoQuery(f"q{i}", q) for i, q in enumerate(QUESTIONS)])
            batch = time.perf_counter() - start
        finally:
            answerer.end_image()
        rows[name] = {"one question, median s": statistics.median(singles), "8 questions at once, s": batch}
    before = _metrics()
    served.begin_image(ImageContext(image=img.rotate(90), preamble="This image may be AI-generated."))
    try:
        served.yes_no([YesNoQuery("first", QUESTIONS[0])])
        after_first = _metrics()
        served.yes_no([YesNoQuery(f"q{i}", q) for i, q in enumerate(QUESTIONS[1:])])
        record = served.stats.record()
    finally:
        served.end_image()
    after = _metrics()
    hits = after["vllm:prefix_cache_hits_total"] - after_first["vllm:prefix_cache_hits_total"]
    queries = after["vllm:prefix_cache_queries_total"] - after_first["vllm:prefix_cache_queries_total"]
    first_hits = after_first["vllm:prefix_cache_hits_total"] - before["vllm:prefix_cache_hits_total"]
    report = {"latency": rows, "prefix_cache": {
        "new image, first question: hit tokens": first_hits,
        "next 7 questions: hit tokens / queried tokens": f"{hits:.0f} / {queries:.0f}",
        "hit rate": hits / queries if queries else None,
        "server-reported cached prompt tokens (7 questions)": record["calls"][-1]["cached_tokens"],
        "prompt tokens (7 questions)": record["calls"][-1]["prompt_tokens"]}}
    print("\n" + json.dumps(report, indent=2))
    if os.environ.get("EXPLAINER_VLLM_REPORT"):
        Path(os.environ["EXPLAINER_VLLM_REPORT"]).write_text(json.dumps(report, indent=2))
    assert queries > 0 and hits / queries > 0.3  # system prompt + image + preamble: most of each prompt
