"""Yes/no token variants and answer words found for each tokenizer and template."""

from __future__ import annotations

import pytest

from explainer.answerers.hf.answerer import first_word

# The template's own first answer token: Qwen writes "Yes" right after "assistant\n";
# SmolVLM's "Assistant:" is followed by " Yes" (ĠYes); LLaVA's SentencePiece by "▁Yes".
EXPECTED_FIRST = {"llava": ("▁Yes", "▁No"), "idefics3": ("ĠYes", "ĠNo"), "qwen2_vl": ("Yes", "No"), "qwen2_5_vl": ("Yes", "No")}


@pytest.mark.parametrize("arch", sorted(EXPECTED_FIRST))
def test_first_answer_token(loaded, arch):
    tokens = loaded[arch].yes_no_tokens
    assert (tokens.yes_first, tokens.no_first) == EXPECTED_FIRST[arch]
    assert tokens.yes_tokens[0] == tokens.yes_first  # the template's own token comes first


@pytest.mark.parametrize("arch", sorted(EXPECTED_FIRST))
def test_first_answer_token_matches_rendered_turn(loaded, arch):
    """Independently: tokenise the rendered "Yes" assistant turn and read the token after the prompt."""
    answerer = loaded[arch]
    tok = answerer.layout.tokenizer
    prompt = answerer.layout.render("Is this real?")
    turn = answerer.layout.render("Is this real?", answer="Yes")
    p, t = tok(prompt)["input_ids"], tok(turn)["input_ids"]
    assert t[: len(p)] == p
    assert tok.convert_ids_to_tokens(t[len(p)]) == answerer.yes_no_tokens.yes_first


@pytest.mark.parametrize("arch", sorted(EXPECTED_FIRST))
def test_variants_are_yes_and_no_only(loaded, arch):
    answerer = loaded[arch]
    tok = answerer.layout.tokenizer
    tokens = answerer.yes_no_tokens
    yes = {tok.decode([i]).strip().lower() for i in tokens.yes_ids}
    no = {tok.decode([i]).strip().lower() for i in tokens.no_ids}
    assert yes == {"yes"} and no == {"no"}
    assert not set(tokens.yes_ids) & set(tokens.no_ids)
    # case variants that exist in the vocabulary are included
    vocab = tok.get_vocab()
    for form in ("yes", "Yes", "YES"):
        for marker in ("", "Ġ", "▁"):
            if marker + form in vocab:
                assert vocab[marker + form] in tokens.yes_ids


def test_answer_lead(loaded):
    assert loaded["idefics3"].layout.answer_lead == " "  # "Assistant:" + " Yes"
    assert loaded["llava"].layout.answer_lead == " "  # "ASSISTANT:" + " Yes"
    assert loaded["qwen2_vl"].layout.answer_lead == ""  # "assistant\n" + "Yes"


@pytest.mark.parametrize(
    "text, word",
    [(" Yes.", "yes"), ("Fur, mostly", "fur"), ("\n  EYES!", "eyes"), ("", ""), ("... ", ""), ("ab\ufffd", "ab")],
)
def test_first_word(text, word):
    assert first_word(text) == word
