"""Which vocabulary entries mean "yes" and "no" for a given tokenizer and chat template.

The answer token's form depends on the template: Qwen answers ``Yes`` right
after ``assistant\\n``; SmolVLM's template ends with ``Assistant:`` and the
answer is `` Yes`` (``ĠYes``); LLaVA's SentencePiece writes ``▁Yes``. We render
the template with an assistant turn "Yes" / "No", take the first answer token,
and add the case and space variants that exist in the vocabulary as single
tokens (a model may write ``yes`` or ``YES`` too).
"""

from __future__ import annotations

from dataclasses import dataclass

from explainer.answerers.hf.prompting import ChatLayout

# Markers tokenizers use for a leading space.
_SPACE_MARKERS = ("", "Ġ", "▁", " ")


@dataclass(frozen=True)
class YesNoTokens:
    yes_ids: tuple[int, ...]
    no_ids: tuple[int, ...]
    yes_tokens: tuple[str, ...]
    no_tokens: tuple[str, ...]
    # The token the template itself produces for "Yes" / "No" (first answer token).
    yes_first: str
    no_first: str


def _first_answer_token(layout: ChatLayout, word: str) -> int:
    ids = layout.answer_ids("Is this an image?", word)
    if not ids:
        raise ValueError(f"the tokenizer produces no token for {word!r}")
    return ids[0]


def _variants(tokenizer, first_id: int, word: str) -> list[int]:
    vocab = tokenizer.get_vocab()
    first = tokenizer.convert_ids_to_tokens(first_id)
    found = [first_id]
    for marker in _SPACE_MARKERS:
        for form in (word, word.lower(), word.upper()):
            tid = vocab.get(marker + form)
            if tid is not None and tid not in found:
                found.append(tid)
    # Keep the template's own token first; drop an "<unk>"-like fallback.
    unk = getattr(tokenizer, "unk_token_id", None)
    if first_id == unk:
        raise ValueError(f"the tokenizer has no token for {word!r} (got {first!r})")
    return [t for t in found if t != unk]


def discover_yes_no(layout: ChatLayout) -> YesNoTokens:
    tok = layout.tokenizer
    yes_first = _first_answer_token(layout, "Yes")
    no_first = _first_answer_token(layout, "No")
    if yes_first == no_first:
        raise ValueError("'Yes' and 'No' start with the same token; yes/no cannot be scored by logits")
    yes = _variants(tok, yes_first, "Yes")
    no = [t for t in _variants(tok, no_first, "No") if t not in yes]
    return YesNoTokens(
        yes_ids=tuple(yes),
        no_ids=tuple(no),
        yes_tokens=tuple(tok.convert_ids_to_tokens(yes)),
        no_tokens=tuple(tok.convert_ids_to_tokens(no)),
        yes_first=tok.convert_ids_to_tokens(yes_first),
        no_first=tok.convert_ids_to_tokens(no_first),
    )
