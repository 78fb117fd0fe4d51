"""Exact packing (packing="exact"): an image's yes/no questions in ONE sequence after its cached prefix, a 4D
mask keeping each question to the prefix and its own earlier tokens, positions restarting after the prefix.
It must give what the row path gives (float32, within TOL), per architecture, alone and across images."""

from __future__ import annotations

import pytest
import torch

from explainer.answerers.base import ImageContext, YesNoQuery
from explainer.answerers.hf import VLMAnswerer
from explainer.answerers.hf import prefix_cache as pc
from explainer.testing import TINY_ARCHS

from test_equivalence import QUESTIONS, TOL


def _contexts(make_image):
    """Three images, two prefix lengths (one smaller image with a preamble): packed rows of different widths."""
    return {
        0: ImageContext(image=make_image(1), image_id="a"),
        1: ImageContext(image=make_image(2), image_id="b"),
        5: ImageContext(image=make_image(3, size=96), image_id="c", preamble="This image may be AI-generated."),
    }


def test_packed_mask_keeps_questions_apart():
    # two packed rows: row 0 has questions 0 (2 tokens) and 1 (1 token) on a 3-token prefix; row 1 has question 2
    # (2 tokens) on a 2-token prefix (its third prefix slot is padding) and one padding token
    prefix_mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    segments = torch.tensor([[0, 0, 1], [2, 2, -1]])
    allowed = pc.packed_mask(prefix_mask, segments, torch.float32)[:, 0] == 0
    assert allowed.shape == (2, 3, 6)
    assert allowed[0].tolist() == [
        [True, True, True, True, False, False],  # q0 token 0: prefix + itself
        [True, True, True, True, True, False],  # q0 token 1: prefix + q0
        [True, True, True, False, False, True],  # q1: prefix + itself only, not q0
    ]
    assert allowed[1].tolist() == [
        [True, True, False, True, False, False],  # not the padding after its shorter prefix
        [True, True, False, True, True, False],
        [True, True, False, False, False, False],  # padding sees the prefix only: never a fully masked row
    ]


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_packed_yes_no_equals_rows_alone_and_across_images(loaded, arch, make_image):
    base = loaded[arch]
    rows = VLMAnswerer(base.model, base.processor, mode="cached")
    packed = VLMAnswerer(base.model, base.processor, mode="cached", packing="exact")
    contexts = _contexts(make_image)
    for a in (rows, packed):
        a.begin_images(contexts)
    pairs = [(slot, YesNoQuery(f"{slot}-{i}", q)) for i, q in enumerate(QUESTIONS) for slot in contexts]
    want, got = rows.yes_no_images(pairs), packed.yes_no_images(pairs)
    assert [a.p_yes for a in got] == pytest.approx([a.p_yes for a in want], abs=TOL)
    assert [a.mass for a in got] == pytest.approx([a.mass for a in want], abs=TOL)
    assert [a.tokens for a in got] == [a.tokens for a in want]
    # the questions really differ (each read at its own position, not all at one)
    assert max(a.p_yes for a in got) - min(a.p_yes for a in got) > 10 * TOL
    for slot in contexts:  # one forward for the three images' questions, the same tokens counted
        assert [b.kind for b in packed._open[slot].batches] == ["prefix", "yes_no"]
        assert packed.image_stats(slot).tokens == rows.image_stats(slot).tokens
    # the prefixes' caches do not keep the packed tokens: asking again gives the same answers
    for slot in contexts:
        prefix = packed._open[slot].prefix
        assert prefix.cache.get_seq_length() == prefix.length
    again = packed.yes_no_images(pairs[::-1])
    assert [a.p_yes for a in again] == pytest.approx([a.p_yes for a in got[::-1]], abs=TOL)
    # the single-image protocol packs too
    one_rows, one_packed = (VLMAnswerer(base.model, base.processor, packing=p) for p in ("rows", "exact"))
    for a in (one_rows, one_packed):
        a.begin_image(contexts[5])
    qs = [YesNoQuery(str(i), q) for i, q in enumerate(QUESTIONS)]
    assert [a.p_yes for a in one_packed.yes_no(qs)] == pytest.approx([a.p_yes for a in one_rows.yes_no(qs)], abs=TOL)


def test_packing_without_the_mask_would_not_be_exact(loaded, make_image, monkeypatch):
    """The check above can fail: with a plain causal mask over the packed questions the answers move."""
    base = loaded["qwen2_vl"]
    rows = VLMAnswerer(base.model, base.processor)
    packed = VLMAnswerer(base.model, base.processor, packing="exact")
    for a in (rows, packed):
        a.begin_image(ImageContext(image=make_image(4)))
    qs = [YesNoQuery(str(i), q) for i, q in enumerate(QUESTIONS)]
    want = [a.p_yes for a in rows.yes_no(qs)]
    real = pc.packed_mask
    monkeypatch.setattr(pc, "packed_mask", lambda m, seg, dtype: real(m, torch.where(seg >= 0, 0, -1), dtype))
    got = [a.p_yes for a in packed.yes_no(qs)]
    assert got[0] == pytest.approx(want[0], abs=TOL)  # the first question sees nothing before it either way
    assert max(abs(g - w) for g, w in zip(got[1:], want[1:])) > 10 * TOL


@pytest.mark.parametrize("arch", ["idefics3", "qwen2_5_vl"])
def test_walks_with_packing_equal_walks_with_rows(loaded, arch, make_image):
    """The whole engine, several images together: packed rounds give the row path's walks."""
    from explainer.engine import QuestionAnswered, TreeRunner
    from explainer.trees import compile_tree
    from explainer.trees.compiler import default_tree_path

    tree = compile_tree(default_tree_path())
    base = loaded[arch]
    items = [(ImageContext(image=make_image(20 + i), image_id=str(i)),
              {"roi": "the whole image", **({"obj": "cat"} if i % 2 else {})}) for i in range(3)]
    walks = {}
    for packing in ("rows", "exact"):
        answerer = VLMAnswerer(base.model, base.processor, packing=packing)
        walks[packing] = dict(TreeRunner(tree, answerer).run_many(items, batch_images=2))
    for i in range(len(items)):
        got, want = walks["exact"][i], walks["rows"][i]
        qa = [(e.node_id, e.answer) for e in got.events if isinstance(e, QuestionAnswered)]
        qw = [(e.node_id, e.answer) for e in want.events if isinstance(e, QuestionAnswered)]
        assert qa == qw and got.artifacts == want.artifacts and len(qa) > 3
        pg = [e.p_yes for e in got.events if isinstance(e, QuestionAnswered) and e.p_yes is not None]
        pw = [e.p_yes for e in want.events if isinstance(e, QuestionAnswered) and e.p_yes is not None]
        assert pg == pytest.approx(pw, abs=TOL)


def test_packing_is_refused_where_not_verified(loaded, tiny_paths, monkeypatch):
    from explainer.answerers.hf import load_vlm
    from explainer.errors import UsageError

    base = loaded["llava"]
    with pytest.raises(ValueError, match="unknown packing 'tight'"):
        VLMAnswerer(base.model, base.processor, packing="tight")
    with pytest.raises(ValueError, match="needs the cached path"):
        VLMAnswerer(base.model, base.processor, mode="plain", packing="exact")
    monkeypatch.setattr(base.model.config, "_attn_implementation", "flash_attention_2")
    with pytest.raises(ValueError, match="4D mask .*'flash_attention_2'"):
        VLMAnswerer(base.model, base.processor, packing="exact")
    monkeypatch.undo()
    monkeypatch.setattr(pc, "EXACT_PACKING", ("qwen2_vl",))
    with pytest.raises(ValueError, match="verified only for qwen2_vl; model type 'llava'"):
        VLMAnswerer(base.model, base.processor, packing="exact")
    # load_vlm refuses from the config, before reading any weights
    with pytest.raises(UsageError, match="--packing exact .* not 'llava'; use --packing rows"):
        load_vlm(tiny_paths["llava"], device="cpu", dtype="float32", packing="exact")
    monkeypatch.undo()
    assert load_vlm(tiny_paths["llava"], device="cpu", dtype="float32", packing="exact").packing == "exact"


def test_packing_is_exact_with_eager_attention_too(tiny_paths, make_image):
    """sdpa is the default; eager attention takes the same additive 4D mask (a fresh model: the shared one stays sdpa)."""
    from explainer.answerers.hf import load_vlm

    base = load_vlm(tiny_paths["llava"], device="cpu", dtype="float32")
    base.model.set_attn_implementation("eager")
    assert pc.packing_support(base.model) == (True, "")
    rows = VLMAnswerer(base.model, base.processor)
    packed = VLMAnswerer(base.model, base.processor, packing="exact")
    for a in (rows, packed):
        a.begin_image(ImageContext(image=make_image(6)))
    qs = [YesNoQuery(str(i), q) for i, q in enumerate(QUESTIONS)]
    assert [a.p_yes for a in packed.yes_no(qs)] == pytest.approx([a.p_yes for a in rows.yes_no(qs)], abs=TOL)
