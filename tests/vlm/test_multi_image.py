"""Several images at once (MultiImageAnswerer) give what each image gets alone, per architecture."""

from __future__ import annotations

import pytest

from explainer.answerers.base import AnswererError, ImageContext, YesNoQuery, supports_many_images
from explainer.answerers.hf import VLMAnswerer
from explainer.testing import TINY_ARCHS

from test_equivalence import CHOICES, FOLLOW_UPS, QUESTIONS, TOL


def _contexts(make_image):
    """Three images: two of one size, one of another size with a preamble (a longer prefix: padding is exercised)."""
    return {
        0: ImageContext(image=make_image(1), image_id="a"),
        1: ImageContext(image=make_image(2), image_id="b"),
        5: ImageContext(image=make_image(3, size=96), image_id="c", preamble="This image may be AI-generated."),
    }


def _alone(base, ctx, method, queries):
    one = VLMAnswerer(base.model, base.processor, mode="cached")
    one.begin_image(ctx)
    return getattr(one, method)(queries), one


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_yes_no_across_images_equals_each_image_alone(loaded, arch, make_image):
    base = loaded[arch]
    multi = VLMAnswerer(base.model, base.processor, mode="cached")
    assert supports_many_images(multi)
    contexts = _contexts(make_image)
    multi.begin_images(contexts)
    # questions of the three images interleaved in one call
    pairs = [(slot, YesNoQuery(f"{slot}-{i}", q)) for i, q in enumerate(QUESTIONS) for slot in contexts]
    got = multi.yes_no_images(pairs)
    lengths = {multi.image_stats(s).prefix_tokens for s in contexts}
    assert len(lengths) == 2  # two prefix lengths really stacked together
    for slot, ctx in contexts.items():
        want, one = _alone(base, ctx, "yes_no", [q for s, q in pairs if s == slot])
        mine = [a for (s, _), a in zip(pairs, got) if s == slot]
        assert [a.p_yes for a in mine] == pytest.approx([a.p_yes for a in want], abs=TOL)
        assert [a.mass for a in mine] == pytest.approx([a.mass for a in want], abs=TOL)
        assert [a.tokens for a in mine] == [a.tokens for a in want]
        stats = multi.image_stats(slot)
        assert stats.prefix_tokens == one.stats.prefix_tokens
        # one shared forward for the questions of all three images, counted once for each image
        assert [b.kind for b in multi._open[slot].batches] == ["prefix", "yes_no"]
        assert multi._open[slot].batches[1].size == len(pairs)
        assert stats.tokens == one.stats.tokens
    # the answers differ between images (each row really read its own image)
    firsts = [a.p_yes for (s, q), a in zip(pairs, got) if q.prompt == QUESTIONS[0]]
    assert max(firsts) - min(firsts) > 10 * TOL
    multi.end_images(list(contexts))
    assert not multi._open


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_choices_and_follow_ups_across_images_equal_alone(loaded, arch, make_image):
    base = loaded[arch]
    multi = VLMAnswerer(base.model, base.processor, mode="cached")
    contexts = _contexts(make_image)
    multi.begin_images(contexts)
    choice_pairs = [(slot, q) for q in CHOICES for slot in contexts]
    follow_pairs = [(slot, q) for q in FOLLOW_UPS for slot in contexts]
    got_c = multi.choose_images(choice_pairs)
    got_f = multi.follow_up_images(follow_pairs)
    for slot, ctx in contexts.items():
        want_c, _ = _alone(base, ctx, "choose", CHOICES)
        want_f, _ = _alone(base, ctx, "follow_up", FOLLOW_UPS)
        mine_c = [a for (s, _), a in zip(choice_pairs, got_c) if s == slot]
        mine_f = [a for (s, _), a in zip(follow_pairs, got_f) if s == slot]
        for g, w in zip(mine_c, want_c):
            assert list(g.probs) == list(w.probs)
            assert list(g.probs.values()) == pytest.approx(list(w.probs.values()), abs=TOL)
        assert [a.text for a in mine_f] == [a.text for a in want_f]


def test_same_shaped_images_are_encoded_in_one_batch(loaded, make_image):
    base = loaded["idefics3"]
    multi = VLMAnswerer(base.model, base.processor, mode="cached")
    contexts = {s: ImageContext(image=make_image(s)) for s in range(4)}
    contexts[4] = ImageContext(image=make_image(9), preamble="A longer prefix than the others.")
    multi.begin_images(contexts)
    sizes = {s: multi._open[s].batches[0].size for s in contexts}
    assert [multi._open[s].batches[0].kind for s in contexts] == ["prefix"] * 5
    assert sizes == {0: 4, 1: 4, 2: 4, 3: 4, 4: 1}
    # batched encoding gives each image the prefix it gets alone
    for s in (0, 4):
        want, _ = _alone(base, contexts[s], "yes_no", [YesNoQuery("q", QUESTIONS[0])])
        got = multi.yes_no_images([(s, YesNoQuery("q", QUESTIONS[0]))])
        assert got[0].p_yes == pytest.approx(want[0].p_yes, abs=TOL)


def test_slots_are_checked(loaded, make_image):
    base = loaded["llava"]
    multi = VLMAnswerer(base.model, base.processor, mode="cached")
    multi.begin_images({0: ImageContext(image=make_image(0))})
    with pytest.raises(AnswererError, match="already open"):
        multi.begin_images({0: ImageContext(image=make_image(1))})
    with pytest.raises(AnswererError, match="needs an image"):
        multi.begin_images({1: ImageContext(image=None)})
    assert list(multi._open) == [0]


def test_plain_mode_answers_image_by_image(loaded, make_image):
    base = loaded["llava"]
    plain = VLMAnswerer(base.model, base.processor, mode="plain")
    cached = VLMAnswerer(base.model, base.processor, mode="cached")
    contexts = _contexts(make_image)
    for a in (plain, cached):
        a.begin_images(contexts)
    pairs = [(slot, YesNoQuery("q", QUESTIONS[i])) for i, slot in enumerate(contexts)]
    got, want = cached.yes_no_images(pairs), plain.yes_no_images(pairs)
    assert [a.p_yes for a in got] == pytest.approx([a.p_yes for a in want], abs=TOL)
    assert all(b.kind == "plain" for s in contexts for b in plain._open[s].batches)


def test_walks_of_several_images_equal_walks_alone(loaded, make_image):
    """The whole engine on a real (tiny) model: run_many with K=3 gives every image its one-image walk."""
    from explainer.engine import QuestionAnswered, TreeRunner
    from explainer.trees import compile_tree
    from explainer.trees.compiler import default_tree_path

    tree = compile_tree(default_tree_path())
    base = loaded["idefics3"]
    items = [(ImageContext(image=make_image(10 + i), image_id=str(i)),
              {"roi": "the whole image", **({"obj": "cat"} if i % 2 else {})}) for i in range(4)]
    alone = [TreeRunner(tree, VLMAnswerer(base.model, base.processor)).run(c, s) for c, s in items]
    multi = VLMAnswerer(base.model, base.processor)
    together = dict(TreeRunner(tree, multi).run_many(items, batch_images=3))
    for i, want in enumerate(alone):
        got = together[i]
        qa = [(e.node_id, e.answer) for e in got.events if isinstance(e, QuestionAnswered)]
        qw = [(e.node_id, e.answer) for e in want.events if isinstance(e, QuestionAnswered)]
        assert qa == qw and got.artifacts == want.artifacts
        pg = [e.p_yes for e in got.events if isinstance(e, QuestionAnswered) and e.p_yes is not None]
        pw = [e.p_yes for e in want.events if isinstance(e, QuestionAnswered) and e.p_yes is not None]
        assert pg == pytest.approx(pw, abs=TOL)
        assert got.stats.prefix_tokens == want.stats.prefix_tokens and got.stats.forward_passes >= got.rounds
    assert not multi._open


def test_cached_path_passes_the_cache_under_the_installed_name(loaded, make_image, monkeypatch):
    """transformers deprecates past_key_values (removed in 5.40) for `cache`: no deprecation warning on our path."""
    import inspect
    import warnings

    from explainer.answerers.hf import prefix_cache as pc

    base = loaded["idefics3"]
    params = inspect.signature(type(base.model.model).forward).parameters
    name = "cache" if "cache" in params else "past_key_values"
    assert name in pc.cache_kwargs(base.model.model, None)

    def ask():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            a = VLMAnswerer(base.model, base.processor)
            a.begin_image(ImageContext(image=make_image(0)))
            a.yes_no([YesNoQuery("q", QUESTIONS[0])])
            a.choose(CHOICES[:1])
            a.follow_up(FOLLOW_UPS[:1])
        return [str(w.message) for w in caught if "past_key_values" in str(w.message)]

    assert ask() == []
    if name == "cache":  # the old name still warns here, so the check above can fail
        monkeypatch.setitem(pc._CACHE_ARG, type(base.model.model), "past_key_values")
        assert ask()
