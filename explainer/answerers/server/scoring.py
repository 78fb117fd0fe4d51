"""Answers read from a server's top log-probabilities of the first answer token.

A chat-completions server returns, for the one token it generates, the
``top_logprobs`` most likely tokens as decoded text with their log-probability.
Yes/no uses the in-process answerer's variant rules
(:func:`explainer.answerers.hf.tokens.decoded_variants`); a choice uses each
option's first token. Only the top entries are visible (at most 20 on vLLM and
OpenAI), so a variant outside them counts as zero: the ``mass`` recorded says
how much of the distribution the answer rests on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from explainer.answerers.hf.tokens import decoded_variants

YES_TEXTS = decoded_variants("Yes")
NO_TEXTS = decoded_variants("No")


@dataclass(frozen=True)
class TopToken:
    text: str
    logprob: float


def yes_no_from_top(top: Sequence[TopToken]) -> tuple[float, float]:
    """(P(yes), mass): yes-variant mass over yes+no mass; (0.5, 0.0) when neither is among ``top``."""
    yes = sum(math.exp(t.logprob) for t in top if t.text in YES_TEXTS)
    no = sum(math.exp(t.logprob) for t in top if t.text in NO_TEXTS)
    if yes + no <= 0.0:
        return 0.5, 0.0
    return yes / (yes + no), min(1.0, yes + no)


def token_key(text: str) -> str:
    """A decoded token without its leading space: how option tokens are compared.

    Both spellings belong to the same option anyway, and servers differ on the
    space: vLLM's logprobs restore SentencePiece's "▁" as a space, while
    decoding the token alone (``/detokenize``, a local tokenizer) drops it.
    """
    return text[1:] if text.startswith(" ") else text


def option_probs(top: Sequence[TopToken], first_tokens: Mapping[str, frozenset[str]]) -> tuple[dict[str, float], float]:
    """(P(option) normalised over the options, mass on any option's first token) from the top tokens.

    ``first_tokens`` maps each option to the keys (:func:`token_key`) of its
    first token (see :func:`first_token_texts`). With no option among the top
    tokens every option gets the same probability and the mass is 0.
    """
    mass = {o: sum(math.exp(t.logprob) for t in top if token_key(t.text) in keys) for o, keys in first_tokens.items()}
    total = sum(mass.values())
    if total <= 0.0:
        return {o: 1.0 / len(mass) for o in mass}, 0.0
    return {o: m / total for o, m in mass.items()}, min(1.0, total)


class SharedFirstToken(ValueError):
    """Two options begin with the same token: a one-token read cannot tell them apart."""


def first_token_texts(options: Sequence[str], first_of) -> dict[str, frozenset[str]]:
    """Per option, the keys (:func:`token_key`) of its first token, as written and after a space.

    ``first_of(text)`` returns the decoded first token of ``text``. The option
    as written (bare or after a space, the two ways a template leads into the
    answer) must start with a token no other option starts with, else
    :class:`SharedFirstToken`. Capitalised spellings are added where they do not
    collide with another option's (a colliding one would count for both).
    """
    # A token that is only whitespace (a tokenizer splitting the space off) says nothing about the option.
    primary = {o: frozenset(token_key(t) for t in (first_of(lead + o) for lead in ("", " ")) if t.strip())
               for o in options}
    for option, texts in primary.items():
        if not texts:
            raise SharedFirstToken(f"option {option!r} has no first token that is not whitespace")
    owners: dict[str, list[str]] = {}
    for option, texts in primary.items():
        for text in texts:
            owners.setdefault(text, []).append(option)
    shared = {t: o for t, o in owners.items() if len(o) > 1}
    if shared:
        text, who = next(iter(shared.items()))
        raise SharedFirstToken(f"options {', '.join(repr(o) for o in who)} all begin with the token {text!r}")
    extra: dict[str, set[str]] = {o: set() for o in options}
    for option in options:
        for form in case_forms(option):
            for lead in ("", " "):
                text = first_of(lead + form)
                if text.strip():
                    extra[option].add(token_key(text))
    taken = {t for texts in primary.values() for t in texts}
    counts: dict[str, int] = {}
    for texts in extra.values():
        for t in texts - taken:
            counts[t] = counts.get(t, 0) + 1
    return {o: primary[o] | {t for t in extra[o] - taken if counts[t] == 1} for o in options}


def case_forms(option: str) -> Iterable[str]:
    return {option[:1].upper() + option[1:], option.lower(), option.upper()} - {option}
