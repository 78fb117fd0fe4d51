"""Reading yes/no and options from a server's top log-probabilities (pure arithmetic, no server)."""

from __future__ import annotations

import math

import pytest

from explainer.answerers.hf.tokens import decoded_variants
from explainer.answerers.server.scoring import (
    SharedFirstToken,
    TopToken,
    first_token_texts,
    option_probs,
    yes_no_from_top,
)


def top(**probs):
    return [TopToken(text.replace("_", " "), math.log(p)) for text, p in probs.items()]


def test_yes_no_variants_match_the_in_process_rules():
    # the same spellings as discover_yes_no, decoded: bare or after a space, three cases
    assert decoded_variants("Yes") == {"Yes", "yes", "YES", " Yes", " yes", " YES"}
    p, mass = yes_no_from_top(top(Yes=0.3, _yes=0.1, No=0.2, NO=0.1, cat=0.25))
    assert p == pytest.approx(0.4 / 0.7) and mass == pytest.approx(0.7)


def test_lookalikes_are_not_answers():
    # "Yes." or "Yeah" are other tokens; so is "yes" with two spaces
    p, mass = yes_no_from_top(top(**{"Yes.": 0.5, "Yeah": 0.2, "__yes": 0.1, "no": 0.1}))
    assert (p, mass) == (0.0, pytest.approx(0.1))


def test_no_yes_or_no_at_all():
    assert yes_no_from_top(top(cat=0.6, dog=0.3)) == (0.5, 0.0)
    assert yes_no_from_top([]) == (0.5, 0.0)


def test_option_probs_normalised_over_options():
    firsts = {"cat": frozenset({"cat"}), "dog": frozenset({"dog"})}  # keys: " cat" counts as "cat"
    probs, mass = option_probs(top(cat=0.2, _cat=0.1, dog=0.1, bird=0.5, __dog=0.05), firsts)
    assert probs == pytest.approx({"cat": 0.75, "dog": 0.25}) and mass == pytest.approx(0.4)
    probs, mass = option_probs(top(bird=0.9), firsts)
    assert probs == {"cat": 0.5, "dog": 0.5} and mass == 0.0


def tokenizer(vocab):
    """First token = the longest vocabulary entry the text starts with (else its first character)."""
    def first_of(text):
        return max((v for v in vocab if text.startswith(v)), key=len, default=text[:1])
    return first_of


def test_shared_first_token_is_refused():
    first_of = tokenizer({"air", " air", "auto", " auto", "airplane"})
    # "airport" starts with "air" and so does " airplane" ... bare "airplane" is one token
    with pytest.raises(SharedFirstToken, match="'airplane', 'airport'"):
        first_token_texts(["airplane", "airport", "automobile"], first_of)
    assert first_token_texts(["airplane", "automobile"], first_of)["automobile"] >= {"auto"}


def test_capitalised_forms_kept_unless_they_collide():
    # "Cat" and "Car" both begin with "C" (not in the vocabulary as words): that token counts for neither;
    first_of = tokenizer({"cat", " cat", "car", " car", "Dog", "dog", " dog"})
    firsts = first_token_texts(["cat", "car", "dog"], first_of)
    assert "C" not in firsts["cat"] and "C" not in firsts["car"]
    assert {"Dog", "D"} <= firsts["dog"]  # "D" begins "DOG" and no other option


def test_whitespace_only_first_token_is_ignored():
    first_of = lambda text: " " if text.startswith(" ") else text[:2]  # noqa: E731 - splits the space off
    firsts = first_token_texts(["cat", "dog"], first_of)
    assert "ca" in firsts["cat"] and all(k.strip() for k in firsts["cat"] | firsts["dog"])
