"""The --vlm-server answerer against a small real HTTP server: faults, retries, concurrency, prompts, records.

The server here follows a script (status codes, delays, given logprobs); it
checks the client's side. That a real model's answers come out right is
tested against vLLM (test_vllm.py, scripts/test-vllm.sh).
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from PIL import Image

from explainer.answerers.base import ChoiceQuery, FollowUpQuery, ImageContext, YesNoQuery
from explainer.answerers.server import ServerError, ServerSettings, connect
from explainer.errors import UsageError
from fake_openai import FakeServer, completion, is_probe

YES = {"Yes": 0.6, " yes": 0.1, "No": 0.2, "cat": 0.05}  # P(yes) = 0.7 / 0.9


def ok(body):
    return 200, completion(YES)


def settings(url, **kw):
    kw.setdefault("model", "tiny")
    kw.setdefault("timeout", 5.0)
    kw.setdefault("retries", 2)
    return ServerSettings(url=url, **kw)


def image(seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (32, 32, 3), dtype=np.uint8))


def yes_no(answerer, *prompts, preamble="This image may be AI-generated."):
    answerer.begin_image(ImageContext(image=image(), preamble=preamble))
    try:
        return answerer.yes_no([YesNoQuery(f"q{i}", p) for i, p in enumerate(prompts)])
    finally:
        answerer.end_image()


@pytest.fixture
def closing():
    made = []
    yield made.append
    for a in made:
        a.close()


# -- connecting -------------------------------------------------------------------------


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_down_is_one_line():
    with pytest.raises(UsageError) as info:
        connect(settings(f"http://127.0.0.1:{free_port()}/v1", retries=0))
    message = str(info.value)
    assert "cannot reach the VLM server" in message and "is it running?" in message and "\n" not in message


def test_unknown_model_names_the_served_ones():
    with FakeServer(ok, models=("tiny", "other")) as srv:
        with pytest.raises(UsageError, match=r"does not serve model 'big'; it serves: tiny, other"):
            connect(settings(srv.url, model="big"))


def test_model_defaults_to_the_only_one(closing):
    with FakeServer(ok) as srv:
        answerer = connect(settings(srv.url, model=None))
        closing(answerer)
        assert answerer.connection.model == "tiny"


def test_server_without_logprobs_is_refused_at_connect():
    with FakeServer(lambda body: (200, completion(None, text="Yes"))) as srv:
        with pytest.raises(UsageError, match="returned no logprobs for model 'tiny'"):
            connect(settings(srv.url))


def test_logprobs_vanishing_mid_run_is_an_error_not_a_guess(closing):
    with FakeServer(lambda body: (200, completion(YES if is_probe(body) else None, text="Yes"))) as srv:
        answerer = connect(settings(srv.url))
        closing(answerer)
        with pytest.raises(ServerError, match="returned no logprobs"):
            yes_no(answerer, "Is it? Answer yes or no.")


@pytest.mark.parametrize("url", ["localhost:8000", "ftp://host/v1", "http://"])
def test_bad_url(url):
    with pytest.raises(UsageError, match="give an http"):
        connect(settings(url))


def test_bare_host_gets_v1():
    from explainer.answerers.server.connection import normalise_url

    assert normalise_url("http://127.0.0.1:8000") == "http://127.0.0.1:8000/v1"
    assert normalise_url("http://h:1/v1/") == "http://h:1/v1"


def test_api_key_from_the_named_variable(closing, monkeypatch):
    monkeypatch.setenv("MY_VLM_KEY", "sekret-123")
    with FakeServer(ok) as srv:
        closing(connect(settings(srv.url, api_key_env="MY_VLM_KEY")))
        assert srv.headers[0].get("authorization") == "Bearer sekret-123"
    monkeypatch.delenv("MY_VLM_KEY")
    with pytest.raises(UsageError, match="MY_VLM_KEY is not set"):
        connect(settings("http://127.0.0.1:1/v1", api_key_env="MY_VLM_KEY"))


def test_api_key_refused():
    with FakeServer(lambda body: (401, {"error": {"message": "bad key"}})) as srv:
        with pytest.raises(UsageError, match="refused the API key"):
            connect(settings(srv.url))


# -- retries and timeouts -------------------------------------------------------------------


def flaky(status, failures, headers=None):
    """Fail the first ``failures`` image requests with ``status``, then answer."""
    seen = {"n": 0}
    lock = threading.Lock()

    def chat(body):
        if is_probe(body):
            return ok(body)
        with lock:
            seen["n"] += 1
            n = seen["n"]
        if n <= failures:
            return status, {"error": {"message": f"try again ({n})"}}, headers or {}
        return ok(body)

    return chat


@pytest.mark.parametrize("status", [429, 500, 503])
def test_retries_then_answers(closing, status):
    with FakeServer(flaky(status, 2, {"retry-after-ms": "20"})) as srv:
        answerer = connect(settings(srv.url, retries=2))
        closing(answerer)
        (a,) = yes_no(answerer, "Is it? Answer yes or no.")
        assert a.p_yes == pytest.approx(0.7 / 0.9)
        assert len(srv.requests) == 1 + 3  # probe, two failures, the answer


def test_backoff_waits_between_attempts(closing):
    with FakeServer(flaky(503, 1)) as srv:  # no Retry-After: the client's exponential backoff
        answerer = connect(settings(srv.url, retries=1))
        closing(answerer)
        start = time.perf_counter()
        yes_no(answerer, "Is it? Answer yes or no.")
        assert time.perf_counter() - start >= 0.3  # first backoff is 0.5 s less up to 25 % jitter


def test_gives_up_after_the_retries(closing):
    with FakeServer(flaky(429, 99, {"retry-after-ms": "10"})) as srv:
        answerer = connect(settings(srv.url, retries=2))
        closing(answerer)
        with pytest.raises(ServerError, match=r"kept answering 429 .*after 2 retries.*lower --vlm-concurrency"):
            yes_no(answerer, "Is it? Answer yes or no.")
        assert len(srv.requests) == 1 + 3


def test_client_error_is_not_retried(closing):
    def chat(body):
        return ok(body) if is_probe(body) else (400, {"error": {"message": "image too large"}})

    with FakeServer(chat) as srv:
        answerer = connect(settings(srv.url, retries=3))
        closing(answerer)
        with pytest.raises(ServerError, match="answered 400: image too large"):
            yes_no(answerer, "Is it? Answer yes or no.")
        assert len(srv.requests) == 2


def test_timeout(closing):
    def slow(body):
        if not is_probe(body):
            time.sleep(1.5)
        return ok(body)

    with FakeServer(slow) as srv:
        answerer = connect(settings(srv.url, timeout=0.3, retries=1))
        closing(answerer)
        start = time.perf_counter()
        with pytest.raises(ServerError, match=r"did not answer within 0.3 s \(after 1 retries\)"):
            yes_no(answerer, "Is it? Answer yes or no.")
        assert time.perf_counter() - start < 1.5 * 2  # gave up rather than waiting for the slow answers
        assert len(srv.requests) == 1 + 2


# -- what is sent ------------------------------------------------------------------------------


def test_all_questions_of_a_call_are_in_flight_together(closing):
    arrived = threading.Barrier(4, timeout=5)

    def chat(body):
        if not is_probe(body):
            arrived.wait()  # breaks (and the test fails) unless four requests are open at once
        return ok(body)

    with FakeServer(chat) as srv:
        answerer = connect(settings(srv.url, concurrency=16))
        closing(answerer)
        answers = yes_no(answerer, *(f"Question {i}? Answer yes or no." for i in range(4)))
        assert len(answers) == 4 and srv.max_in_flight == 4


def test_questions_of_several_images_go_out_together(closing):
    """The multi-image protocol: one call carries every open image's questions, counted per image."""
    from explainer.answerers.base import supports_many_images

    arrived = threading.Barrier(4, timeout=5)

    def chat(body):
        if is_probe(body):
            return ok(body)
        arrived.wait()  # two questions from each of two images, all open at once
        return 200, completion(YES, prompt_tokens=70 if body["messages"][0]["content"][1]["text"].startswith("AAA") else 40)

    with FakeServer(chat) as srv:
        answerer = connect(settings(srv.url, images_in_flight=2))
        closing(answerer)
        assert supports_many_images(answerer) and answerer.max_images == 2
        answerer.begin_images({0: ImageContext(image=image(0), preamble="AAA"), 1: ImageContext(image=image(1))})
        pairs = [(slot, YesNoQuery(f"q{slot}{i}", f"Question {i}? Answer yes or no.")) for slot in (0, 1) for i in (0, 1)]
        answers = answerer.yes_no_images(pairs)
        assert [a.p_yes for a in answers] == pytest.approx([0.7 / 0.9] * 4)
        assert (answerer.image_stats(0).prompt_tokens, answerer.image_stats(1).prompt_tokens) == (140, 80)
        assert answerer.image_stats(0).forward_passes == 2
        answerer.end_images([0, 1])
        images = {b["messages"][0]["content"][0]["image_url"]["url"] for b in srv.requests if not is_probe(b)}
        assert len(images) == 2


def test_concurrency_bound(closing):
    def chat(body):
        time.sleep(0.05)
        return ok(body)

    with FakeServer(chat) as srv:
        answerer = connect(settings(srv.url, concurrency=2))
        closing(answerer)
        yes_no(answerer, *(f"Question {i}? Answer yes or no." for i in range(8)))
        assert srv.max_in_flight == 2


def test_prompts_share_a_byte_identical_prefix(closing):
    with FakeServer(ok) as srv:
        answerer = connect(settings(srv.url))
        closing(answerer)
        yes_no(answerer, "Is the fur repeating? Answer yes or no.", "Are the eyes odd? Answer yes or no.")
        bodies = [b for b in srv.requests if not is_probe(b)]
        assert len(bodies) == 2
        for b in bodies:
            assert (b["max_tokens"], b["logprobs"], b["top_logprobs"], b["temperature"]) == (1, True, 20, 0.0)
            (message,) = b["messages"]
            assert [part["type"] for part in message["content"]] == ["image_url", "text"]  # image first
            assert message["content"][0]["image_url"]["url"].startswith("data:image/png;base64,")
        (one,), (two,) = (b["messages"] for b in bodies)
        assert one["content"][0] == two["content"][0]  # the same image bytes in every question of the image
        assert one["content"][1]["text"].startswith("This image may be AI-generated.\n")
        assert {b["messages"][0]["content"][1]["text"] for b in bodies} == {
            "This image may be AI-generated.\nIs the fur repeating? Answer yes or no.",
            "This image may be AI-generated.\nAre the eyes odd? Answer yes or no."}


def test_malformed_logprobs_are_ignored_not_trusted(closing):
    def chat(body):
        payload = completion({"Yes": 0.5, "No": 0.25})
        top = payload["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
        top += [{"token": "yes", "logprob": "NaN", "bytes": []}, {"token": "no", "logprob": 3.0, "bytes": []},
                {"token": None, "logprob": -0.1, "bytes": []}, {"token": "YES", "logprob": None, "bytes": []}]
        return 200, payload

    with FakeServer(chat) as srv:
        answerer = connect(settings(srv.url))
        closing(answerer)
        (a,) = yes_no(answerer, "Is it? Answer yes or no.")
        assert (a.p_yes, a.mass) == (pytest.approx(2 / 3), pytest.approx(0.75))


def test_low_mass_is_noted(closing):
    def chat(body):
        return 200, completion({"cat": 0.7, "Yes": 0.1, "No": 0.1})

    with FakeServer(chat) as srv:
        answerer = connect(settings(srv.url))
        closing(answerer)
        (a,) = yes_no(answerer, "Is it? Answer yes or no.")
        assert (a.p_yes, a.mass) == (pytest.approx(0.5), pytest.approx(0.2))
        (note,) = answerer.stats.image_notes()
        assert "rest on less than 50% of the probability" in note and "q0 (0.20)" in note


def test_record_has_the_servers_token_counts(closing):
    with FakeServer(lambda body: (200, completion(YES, prompt_tokens=99, cached=64))) as srv:
        answerer = connect(settings(srv.url))
        closing(answerer)
        yes_no(answerer, "A? Answer yes or no.", "B? Answer yes or no.", "C? Answer yes or no.")
        record = answerer.stats.record()
        assert (record["requests"], record["prompt_tokens"], record["completion_tokens"], record["cached_tokens"]) == \
            (3, 297, 3, 192)
        assert [c["kind"] for c in record["calls"]] == ["yes_no"] and record["calls"][0]["questions"] == 3


# -- choices and follow-ups -----------------------------------------------------------------------


def test_choice_by_first_token(closing):
    # the fake tokenizer cuts words into 4-character pieces: "airplane" -> "airp", "automobile" -> "auto"
    def chat(body):
        return 200, completion({"auto": 0.5, "airp": 0.2, " bird": 0.1, "Yes": 0.1})

    with FakeServer(chat) as srv:
        answerer = connect(settings(srv.url))
        closing(answerer)
        answerer.begin_image(ImageContext(image=image()))
        (a,) = answerer.choose([ChoiceQuery("what", "What is it?", ("airplane", "automobile", "bird"))])
        answerer.end_image()
        assert a.best == "automobile"
        assert a.probs == pytest.approx({"airplane": 0.25, "automobile": 0.625, "bird": 0.125})


def test_tree_with_options_sharing_a_first_token_is_refused(tmp_path):
    from explainer.trees import compile_tree

    tree_file = tmp_path / "t.yaml"
    tree_file.write_text(
        "tree: shared\nclasses: [airplane, airport]\nstart: what\nnodes:\n  what:\n    choose: Which one?\n"
        "    sets: obj\n    options: [airplane, airport]\n    then: a\n  a:\n    artifact: Texture repetition patterns\n"
    )
    tree = compile_tree(tree_file)
    with FakeServer(ok) as srv:
        answerer = connect(settings(srv.url))
        try:
            with pytest.raises(UsageError, match=r"node what: options 'airplane', 'airport' all begin with the token"):
                answerer.check_tree(tree)
        finally:
            answerer.close()


def test_free_follow_up_is_a_short_generation(closing):
    def chat(body):
        return 200, completion(YES if body.get("logprobs") else None, text=" Wheels, mostly.")

    with FakeServer(chat) as srv:
        answerer = connect(settings(srv.url))
        closing(answerer)
        answerer.begin_image(ImageContext(image=image()))
        (a,) = answerer.follow_up([FollowUpQuery("fu", "Which part? Answer in one word.", max_new_tokens=4)])
        answerer.end_image()
        assert a.text == "wheels"
        body = srv.requests[-1]
        assert body["max_tokens"] == 4 and not body.get("logprobs")


def test_locate_through_the_server_parses_the_completion_strictly(closing):
    """A tree's ask_vlm regions through --vlm-server: a short greedy completion, four integers or no box."""
    import json as _json

    from explainer.answerers.base import LocateQuery
    from explainer.answerers.locate import LOCATE_MAX_NEW_TOKENS

    def chat(body):
        text = _json.dumps(body)
        if "bounding box" not in text:
            return ok(body)
        return 200, completion(None, text="[4, 6, 20, 99]" if "the eyes" in text else "Somewhere near the top.")

    with FakeServer(chat) as srv:
        answerer = connect(settings(srv.url))
        closing(answerer)
        answerer.begin_image(ImageContext(image=image()))
        try:
            eyes, hair = answerer.locate([LocateQuery("eyes", "the eyes", 32, 32), LocateQuery("hair", "the hair", 32, 32)])
        finally:
            answerer.end_image()
        assert eyes.box == (4, 6, 20, 32) and eyes.text == "[4, 6, 20, 99]"  # clamped to the 32x32 image
        assert hair.box is None and "not a box: 'Somewhere near the top.'" in hair.why
        asked = [b for b in srv.requests if "bounding box" in _json.dumps(b)]
        assert len(asked) == 2 and all(b.get("max_tokens", b.get("max_completion_tokens")) == LOCATE_MAX_NEW_TOKENS
                                       for b in asked)
        assert "The image is 32x32 pixels." in _json.dumps(asked[0])
