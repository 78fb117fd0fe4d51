"""Which vocabulary entries mean "yes" and "no" for a given tokenizer and chat template.

The answer token's form depends on the template: Qwen answers ``Yes`` right
after ``assistant\\n``; SmolVLM's template ends with ``Assistant:`` and the
answer is `` Yes`` (``ĠYes``); LLaVA's SentencePiece writes ``▁Yes``. We render
the template with an assistant turn "Yes" / "No", take the first answer token,
and add the case and space variants that exist in the vocabulary as single
tokens (a model may write ``yes`` or ``YES`` too), in matching pairs only.
"""

from __future__ import annotations

from dataclasses import dataclass

from explainer.answerers.hf.prompting import ChatLayout

# Markers tokenizers use for a leading space.
_SPACE_MARKERS = ("", "Ġ", "▁", " ")
# Spellings of an answer word: as written, lower case, upper case.
_CASES = (str, str.lower, str.upper)


def decoded_variants(word: str) -> frozenset[str]:
    """The variants as *decoded* token text (what a server's logprobs show): each case, bare or after a space.

    The rule :func:`discover_yes_no` applies to vocabulary entries; a decoded
    token shows "Ġ"/"▁" as a plain space. Without the vocabulary every
    spelling of "Yes" has its "No" counterpart, so the lists stay paired.
    """
    return frozenset(marker + case(word) for marker in ("", " ") for case in _CASES)


@dataclass(frozen=True)
class YesNoTokens:
    yes_ids: tuple[int, ...]
    no_ids: tuple[int, ...]
    yes_tokens: tuple[str, ...]
    no_tokens: tuple[str, ...]
    # The token the template itself produces for "Yes" / "No" (first answer token).
    yes_first: str
    no_first: str
    # Spellings in the vocabulary whose counterpart is missing, left out to keep the lists symmetric.
    unpaired: tuple[str, ...] = ()

    def note(self) -> str:
        """One line for the result's notes when the tokenizer forced a choice, else ""."""
        if not self.unpaired:
            return ""
        return (f"yes/no scored on {len(self.yes_ids)} matching spellings each; left out {', '.join(self.unpaired)} "
                f"(no counterpart in the vocabulary)")


def _first_answer_token(layout: ChatLayout, word: str) -> int:
    ids = layout.answer_ids("Is this an image?", word)
    if not ids:
        raise ValueError(f"the tokenizer produces no token for {word!r}")
    return ids[0]


def _paired_variants(tokenizer, yes_first: int, no_first: int) -> tuple[list[int], list[int], list[str]]:
    """Yes and no ids in matching pairs, plus the tokens left out because their counterpart is missing.

    A variant counts only when both words exist in the same form (``Ġyes`` with
    ``Ġno``, ``YES`` with ``NO``): an uneven list (SmolVLM's vocabulary has
    ``Ġno`` and ``ĠNO`` but no ``Ġyes`` or ``ĠYES``) would tilt P(yes) towards
    whichever word has more spellings.
    """
    vocab = tokenizer.get_vocab()
    unk = getattr(tokenizer, "unk_token_id", None)
    for tid, word in ((yes_first, "Yes"), (no_first, "No")):
        if tid == unk:
            raise ValueError(f"the tokenizer has no token for {word!r} (got {tokenizer.convert_ids_to_tokens(tid)!r})")
    yes, no, unpaired = [yes_first], [no_first], []
    for marker in _SPACE_MARKERS:
        for case in _CASES:
            y_tok, n_tok = marker + case("Yes"), marker + case("No")
            y, n = vocab.get(y_tok), vocab.get(n_tok)
            y = None if y == unk else y
            n = None if n == unk else n
            if y in yes or n in no:
                continue  # the template's own pair, or a form already counted
            if y is None or n is None:
                unpaired += [tok for tok, tid in ((y_tok, y), (n_tok, n)) if tid is not None]
                continue
            yes.append(y)
            no.append(n)
    return yes, no, unpaired


def discover_yes_no(layout: ChatLayout) -> YesNoTokens:
    tok = layout.tokenizer
    yes_first = _first_answer_token(layout, "Yes")
    no_first = _first_answer_token(layout, "No")
    if yes_first == no_first:
        raise ValueError("'Yes' and 'No' start with the same token; yes/no cannot be scored by logits")
    yes, no, unpaired = _paired_variants(tok, yes_first, no_first)
    return YesNoTokens(
        yes_ids=tuple(yes),
        no_ids=tuple(no),
        yes_tokens=tuple(tok.convert_ids_to_tokens(yes)),
        no_tokens=tuple(tok.convert_ids_to_tokens(no)),
        yes_first=tok.convert_ids_to_tokens(yes_first),
        no_first=tok.convert_ids_to_tokens(no_first),
        unpaired=tuple(unpaired),
    )
