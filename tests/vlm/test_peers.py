"""The bench's peers: transformers' decision pipeline and packed direct prompting, on the tiny models."""

from __future__ import annotations

import pytest

from explainer.answerers.base import ChoiceQuery, ImageContext, YesNoQuery
from explainer.benchmarks.peers import DecisionPipelineAnswerer, PackedAnswerer, packed_difference

from test_equivalence import QUESTIONS, TOL


@pytest.mark.parametrize("arch", ["idefics3", "qwen2_vl"])
def test_packed_first_answer_is_exact_and_later_ones_see_the_earlier(loaded, arch, image):
    packed = PackedAnswerer(loaded[arch])
    ctx = ImageContext(image=image, preamble="This image may be AI-generated.")
    packed.begin_image(ctx)
    answers = packed.yes_no([YesNoQuery(str(i), q) for i, q in enumerate(QUESTIONS)])
    assert packed.stats.forward_passes == 1 and len(answers) == len(QUESTIONS)
    alone = [packed.score([q])[0][0] for q in QUESTIONS]
    # causal attention: the first question sees only the image and itself, exactly as when asked alone
    assert answers[0].p_yes == pytest.approx(alone[0], abs=TOL)
    # the later ones read after the earlier questions: not the same numbers
    assert max(abs(a.p_yes - b) for a, b in zip(answers[1:], alone[1:])) > 10 * TOL
    packed.end_image()
    diff = packed_difference(packed, ctx)
    assert diff["questions"] == len(QUESTIONS)
    assert diff["max_abs"] == pytest.approx(max(abs(a.p_yes - b) for a, b in zip(answers, alone)), abs=TOL)


def test_decision_pipeline_asks_one_forward_per_question(loaded, image):
    pytest.importorskip("transformers.decision", reason="pipeline('decision') came with transformers 5.23")
    dec = DecisionPipelineAnswerer(loaded["qwen2_vl"])
    dec.begin_image(ImageContext(image=image))
    answers = dec.yes_no([YesNoQuery(str(i), q) for i, q in enumerate(QUESTIONS[:3])])
    assert all(0.0 < a.p_yes < 1.0 for a in answers)
    assert len({round(a.p_yes, 6) for a in answers}) > 1  # different questions, different answers
    assert dec.stats.forward_passes == 3 and dec.stats.tokens > 3 * 20 and dec.stats.model_seconds > 0
    (choice,) = dec.choose([ChoiceQuery("c", "What is it?", ("cat", "dog", "truck"), "obj")])
    assert sum(choice.probs.values()) == pytest.approx(1.0, abs=1e-5)
    assert dec.stats.forward_passes == 4
    dec.end_image()
