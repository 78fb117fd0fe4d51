"""The cached + batched path must give what the plain uncached, unbatched path gives."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from explainer.answerers.base import ChoiceQuery, FollowUpQuery, ImageContext, YesNoQuery
from explainer.testing import TINY_ARCHS
from explainer.answerers.hf import VLMAnswerer
from explainer.answerers.hf import prefix_cache as pc

# Mixed lengths on purpose: right padding inside one batch must not change any answer.
QUESTIONS = [
    "This is an image of a cat. Are the cat's eyes reflecting light unnaturally? Answer yes or no.",
    "Is the fur real?",
    "This is an image of a car. Are the body panels misaligned? Answer yes or no.",
    "Is there texture repetition in the red box? Answer yes or no.",
    "Yes?",
]
CHOICES = [
    ChoiceQuery("c1", "What is in the red box? Choose one.", ("cat", "dog", "airplane", "truck"), "obj"),
    ChoiceQuery("c2", "Which part looks wrong? Answer with one word.", ("eyes", "fur", "wheels"), ""),
]
FOLLOW_UPS = [
    FollowUpQuery("f1", "Which part looks wrong? Answer with one word.", None, max_new_tokens=4),
    FollowUpQuery("f2", "Describe the object in one word.", ("eyes", "fur", "none"), max_new_tokens=4),
    FollowUpQuery("f3", "This is an image of a dog. Look at the region inside the red box.", None, max_new_tokens=2),
]
TOL = 1e-4


def _pair(answerer: VLMAnswerer) -> tuple[VLMAnswerer, VLMAnswerer]:
    """A cached and a plain answerer on the same model object."""
    cached = VLMAnswerer(answerer.model, answerer.processor, mode="cached")
    plain = VLMAnswerer(answerer.model, answerer.processor, mode="plain")
    return cached, plain


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_yes_no_cached_batched_equals_plain(loaded, arch, image):
    cached, plain = _pair(loaded[arch])
    ctx = ImageContext(image=image, image_id="1")
    cached.begin_image(ctx)
    plain.begin_image(ctx)
    queries = [YesNoQuery(f"q{i}", q) for i, q in enumerate(QUESTIONS)]
    got = cached.yes_no(queries)
    want = plain.yes_no(queries)
    assert cached.mode == "cached" and plain.mode == "plain"
    for g, w in zip(got, want):
        assert g.p_yes == pytest.approx(w.p_yes, abs=TOL)
        assert g.mass == pytest.approx(w.mass, abs=TOL)
        # the question really skipped the image and template head
        assert g.tokens == w.tokens - cached.stats.prefix_tokens
    # the answers are not all alike (random weights scaled up): equality above means something
    assert max(a.p_yes for a in want) - min(a.p_yes for a in want) > 1e-2
    # one prefix encoding, then ONE batched forward for the five questions
    assert [b.kind for b in cached.batches] == ["prefix", "yes_no"]
    assert cached.batches[1].size == len(QUESTIONS)
    assert cached.stats.forward_passes == 2
    assert plain.stats.forward_passes == len(QUESTIONS)


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_choices_cached_batched_equal_plain(loaded, arch, image):
    cached, plain = _pair(loaded[arch])
    for a in (cached, plain):
        a.begin_image(ImageContext(image=image))
    got, want = cached.choose(CHOICES), plain.choose(CHOICES)
    for q, g, w in zip(CHOICES, got, want):
        assert list(g.probs) == list(q.options)
        assert sum(g.probs.values()) == pytest.approx(1.0, abs=1e-6)
        for option in q.options:
            assert g.probs[option] == pytest.approx(w.probs[option], abs=TOL)
    # every question's text in one batch, then only the options' later tokens (a second cache level)
    assert [b.kind for b in cached.batches] == ["prefix", "choose"]
    assert cached.batches[1].size == len(CHOICES)
    option_tokens = sum(len(cached.layout.answer_ids(q.prompt, o)) - 1 for q in CHOICES for o in q.options)
    assert cached.stats.forward_passes == 2 + (1 if option_tokens else 0)


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_follow_ups_cached_equal_plain(loaded, arch, image):
    cached, plain = _pair(loaded[arch])
    for a in (cached, plain):
        a.begin_image(ImageContext(image=image))
    got, want = cached.follow_up(FOLLOW_UPS), plain.follow_up(FOLLOW_UPS)
    assert [g.text for g in got] == [w.text for w in want]
    assert got[1].text in FOLLOW_UPS[1].allowed


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_greedy_tokens_cached_equal_plain(loaded, arch, image):
    """Compare the generated strings before first-word cutting (a stronger check than the word)."""
    cached, plain = _pair(loaded[arch])
    for a in (cached, plain):
        a.begin_image(ImageContext(image=image))
    free = [q for q in FOLLOW_UPS if q.allowed is None]
    rows = [cached.layout.suffix_ids(q.prompt, cached._prefix.raw_ids) for q in free]
    got = [text for text, _, _ in cached._cached_greedy(free, rows)]
    want = [plain._plain_greedy(q)[0] for q in free]
    assert got == want
    assert any(got)  # something was generated


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_wrong_positions_are_detected(loaded, arch, image, monkeypatch):
    """The equality tests can fail: shifting the suffix positions by one changes P(yes) well beyond TOL."""
    cached, plain = _pair(loaded[arch])
    for a in (cached, plain):
        a.begin_image(ImageContext(image=image))
    real = pc.position_ids
    monkeypatch.setattr(pc, "position_ids", lambda prefix, starts, n: real(prefix, starts + 1, n))
    queries = [YesNoQuery("q", q) for q in QUESTIONS[:3]]
    got, want = cached.yes_no(queries), plain.yes_no(queries)
    assert max(abs(g.p_yes - w.p_yes) for g, w in zip(got, want)) > 10 * TOL


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_prefix_plus_suffix_ids_are_the_plain_prompt_ids(loaded, arch, image):
    answerer = loaded[arch]
    answerer.begin_image(ImageContext(image=image))
    prefix = answerer._inputs(answerer.layout.prefix_text)["input_ids"][0].tolist()
    assert len(prefix) == answerer.stats.prefix_tokens
    for question in QUESTIONS:
        full = answerer._inputs(answerer.layout.render(question))["input_ids"][0].tolist()
        suffix = answerer.layout.suffix_ids(question, answerer._prefix.raw_ids)
        assert full == prefix + suffix


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_prefix_cache_is_not_consumed(loaded, arch, image):
    """Several calls per image (the engine's rounds) reuse the same, untouched prefix."""
    answerer = loaded[arch]
    answerer.begin_image(ImageContext(image=image))
    length = answerer._prefix.cache.get_seq_length()
    first = answerer.yes_no([YesNoQuery("a", QUESTIONS[0])])[0].p_yes
    answerer.choose(CHOICES)
    answerer.follow_up(FOLLOW_UPS)
    again = answerer.yes_no([YesNoQuery("a", QUESTIONS[0])])[0].p_yes
    assert answerer._prefix.cache.get_seq_length() == length
    assert again == pytest.approx(first, abs=1e-6)
    assert sum(b.kind == "prefix" for b in answerer.batches) == 1


def test_new_image_new_prefix(loaded, make_image):
    answerer = loaded["qwen2_vl"]
    q = [YesNoQuery("a", QUESTIONS[0])]
    answerer.begin_image(ImageContext(image=make_image(1)))
    a = answerer.yes_no(q)[0].p_yes
    answerer.end_image()
    answerer.begin_image(ImageContext(image=make_image(2)))
    b = answerer.yes_no(q)[0].p_yes
    assert a != pytest.approx(b, abs=1e-4)
    assert answerer.stats.forward_passes == 2  # stats are per image


def test_max_batch_splits_batches(loaded, image):
    base = loaded["idefics3"]
    answerer = VLMAnswerer(base.model, base.processor, max_batch=2)
    answerer.begin_image(ImageContext(image=image))
    answerer.yes_no([YesNoQuery(str(i), q) for i, q in enumerate(QUESTIONS)])
    assert [b.size for b in answerer.batches if b.kind == "yes_no"] == [2, 2, 1]


@pytest.fixture(scope="module")
def llava_plain_reference(loaded, make_image):
    base = loaded["llava"]
    plain = VLMAnswerer(base.model, base.processor, mode="plain")
    plain.begin_image(ImageContext(image=make_image(0)))
    return {q: plain.yes_no([YesNoQuery("q", q)])[0].p_yes for q in QUESTIONS}


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(st.sampled_from(QUESTIONS), min_size=1, max_size=6))
def test_batch_composition_does_not_change_answers(loaded, llava_plain_reference, make_image, batch):
    base = loaded["llava"]
    answerer = VLMAnswerer(base.model, base.processor, mode="cached")
    answerer.begin_image(ImageContext(image=make_image(0)))
    got = answerer.yes_no([YesNoQuery(str(i), q) for i, q in enumerate(batch)])
    for q, a in zip(batch, got):
        assert a.p_yes == pytest.approx(llava_plain_reference[q], abs=TOL)


def test_generate_mode_parses_text(loaded, image):
    base = loaded["llava"]
    answerer = VLMAnswerer(base.model, base.processor, mode="generate")
    answerer.begin_image(ImageContext(image=image))
    answers = answerer.yes_no([YesNoQuery("q", q) for q in QUESTIONS[:2]])
    for a in answers:
        assert (a.p_yes, a.mass) in {(1.0, 1.0), (0.0, 1.0), (0.5, 0.0)}
    assert [b.kind for b in answerer.batches] == ["generate", "generate"]
    choice = answerer.choose(CHOICES[:1])[0]
    assert sum(choice.probs.values()) == pytest.approx(1.0)


def test_unverified_architecture_falls_back_to_plain(loaded, image, monkeypatch):
    base = loaded["llava"]
    monkeypatch.delitem(pc.EXACT_REUSE, "llava")
    with pytest.warns(UserWarning, match="not verified"):
        answerer = VLMAnswerer(base.model, base.processor, mode="cached")
    assert answerer.mode == "plain" and answerer.requested_mode == "cached"
    assert len(answerer.notes) == 1 and "plain" in answerer.notes[0]
    answerer.begin_image(ImageContext(image=image))
    answerer.yes_no([YesNoQuery("q", QUESTIONS[0])])
    assert [b.kind for b in answerer.batches] == ["plain"]


def test_begin_image_needs_an_image(loaded):
    from explainer.answerers.base import AnswererError

    with pytest.raises(AnswererError, match="needs an image"):
        loaded["llava"].begin_image(ImageContext(image=None))


def test_float32_pinned(loaded):
    assert all(a.model.dtype == torch.float32 for a in loaded.values())


def test_bfloat16_cached_close_to_plain(tiny_paths, make_image):
    """bf16 works end to end (pixel values cast, logits read in float32); agreement is looser in bf16."""
    from explainer.answerers.hf import load_vlm

    cached = load_vlm(tiny_paths["idefics3"], device="cpu", dtype="bfloat16")
    assert cached.model.dtype == torch.bfloat16
    plain = VLMAnswerer(cached.model, cached.processor, mode="plain")
    for a in (cached, plain):
        a.begin_image(ImageContext(image=make_image(0)))
    queries = [YesNoQuery(str(i), q) for i, q in enumerate(QUESTIONS)]
    for g, w in zip(cached.yes_no(queries), plain.yes_no(queries)):
        assert g.p_yes == pytest.approx(w.p_yes, abs=5e-2)


def test_unsplittable_prompt_falls_back_once(loaded, image, monkeypatch):
    """A prompt whose tokens cannot be split at the prefix: plain answers, one note, same values."""
    from explainer.answerers.hf.prompting import ChatLayout, PromptSplitError

    base = loaded["qwen2_vl"]
    plain = VLMAnswerer(base.model, base.processor, mode="plain")
    answerer = VLMAnswerer(base.model, base.processor, mode="cached")
    for a in (plain, answerer):
        a.begin_image(ImageContext(image=image))

    def refuse(self, question, prefix_raw_ids):
        raise PromptSplitError("the prefix tokens merge with the question's first tokens")

    monkeypatch.setattr(ChatLayout, "suffix_ids", refuse)
    queries = [YesNoQuery(str(i), q) for i, q in enumerate(QUESTIONS[:3])]
    with pytest.warns(UserWarning, match="cannot share the prompt prefix"):
        got = answerer.yes_no(queries)
    assert answerer.mode == "plain" and len(answerer.notes) == 1
    want = plain.yes_no(queries)
    assert [a.p_yes for a in got] == pytest.approx([a.p_yes for a in want], abs=TOL)


def test_template_hiding_the_question_falls_back(loaded, image):
    """A template that rewrites the question text cannot be split: plain path, said once, still answers."""
    import copy

    from explainer.testing import SMOLVLM_TEMPLATE

    base = loaded["idefics3"]
    processor = copy.copy(base.processor)
    processor.chat_template = SMOLVLM_TEMPLATE.replace("{{ line['text'] }}", "{{ line['text'] | lower }}")
    with pytest.warns(UserWarning, match="does not show the question text verbatim"):
        answerer = VLMAnswerer(base.model, processor, mode="cached")
    assert answerer.mode == "plain" and len(answerer.notes) == 1
    answerer.begin_image(ImageContext(image=image))
    (answer,) = answerer.yes_no([YesNoQuery("q", QUESTIONS[0])])
    assert 0.0 < answer.p_yes < 1.0 and answer.mass > 0.0
    assert [b.kind for b in answerer.batches] == ["plain"]


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_preamble_goes_into_the_cached_prefix_and_answers_stay_equal(loaded, arch, image):
    cached, plain = _pair(loaded[arch])
    ctx = ImageContext(image=image, image_id="1", preamble="This image may be AI-generated.")
    cached.begin_image(ctx)
    plain.begin_image(ctx)
    assert "This image may be AI-generated." in cached.layout.prefix_text
    queries = [YesNoQuery(f"q{i}", q) for i, q in enumerate(QUESTIONS)]
    got, want = cached.yes_no(queries), plain.yes_no(queries)
    assert cached.mode == "cached"
    for g, w in zip(got, want):
        assert g.p_yes == pytest.approx(w.p_yes, abs=TOL)
    # the preamble is not processed again per question
    bare = _pair(loaded[arch])[0]
    bare.begin_image(ImageContext(image=image, image_id="1"))
    assert cached.stats.prefix_tokens > bare.stats.prefix_tokens
    assert [a.tokens for a in got] == [a.tokens for a in bare.yes_no(queries)]
    # and the preamble changes the answers (it is really seen)
    assert any(abs(g.p_yes - b.p_yes) > 1e-6 for g, b in zip(got, bare.yes_no(queries)))
