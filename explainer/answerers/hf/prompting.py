"""The model's own chat template, split into a shared prefix and a per-question suffix.

The user turn is ``[image, question text]``. Everything before the question
text (system turn, role header, image placeholder) is the same for every
question about an image, so it is encoded once (see ``prefix_cache``); each
question then only processes its *suffix*: the question text plus the rest of
the template through the generation prompt.

Token ids of the suffix are taken from the tokenisation of the whole prompt
(``ids(full)[len(ids(prefix)):]``), never from tokenising the suffix alone:
SentencePiece and BPE tokenisers treat the start of a string specially (a
leading "▁", merges across the boundary), and only the in-context ids are
the ones the plain path sees.
"""

from __future__ import annotations

from dataclasses import dataclass

_SENTINEL = "\u2063QUESTION\u2063"  # invisible separator: never in a real question


def user_text(preamble: str, question: str) -> str:
    """The text of the user turn: the tree's preamble, then the question (the image comes before both)."""
    # Whitespace at the edges means nothing to the model but can merge across the prefix boundary
    # (Qwen2 tokenises ".\n" + "\nIs" as ".\n\n" + "Is"), which would make the prefix unshareable.
    question, preamble = question.strip(), preamble.strip()
    return f"{preamble}\n{question}" if preamble else question


def user_messages(question: str, answer: str | None = None) -> list[dict]:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    if answer is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return messages


class PromptSplitError(ValueError):
    """The template cannot be split at the question (then the answerer uses the plain path)."""


@dataclass
class ChatLayout:
    """Renders prompts with a processor's chat template and splits them at the question."""

    processor: object
    # Shared text said before every question of an image (the tree's preamble): part of the prefix.
    preamble: str = ""
    prefix_text: str = ""
    # Text the template puts between the generation prompt and the answer (" " for SmolVLM/LLaVA).
    answer_lead: str = ""

    # Why the template cannot be split (then only the plain path is possible), or "".
    split_error: str = ""

    def __post_init__(self) -> None:
        self._split()
        self.answer_lead = self._answer_lead()

    def _split(self) -> None:
        probe = self.render(_SENTINEL)
        at = probe.find(_SENTINEL)
        if at < 0:
            self.split_error = "the chat template does not show the question text verbatim"
        else:
            self.prefix_text = probe[:at]

    def set_preamble(self, preamble: str) -> None:
        """Use ``preamble`` before every question from now on (it moves into the prefix)."""
        if preamble != self.preamble:
            self.preamble = preamble
            self._split()

    @property
    def tokenizer(self):
        return getattr(self.processor, "tokenizer", self.processor)

    def render(self, question: str, answer: str | None = None) -> str:
        text = user_text(self.preamble, question)
        return self.processor.apply_chat_template(
            user_messages(text, answer), add_generation_prompt=answer is None, tokenize=False
        )

    def _answer_lead(self) -> str:
        gen = self.render(_SENTINEL)
        turn = self.render(_SENTINEL, answer="Yes")
        if not turn.startswith(gen):
            # Some templates write the assistant header differently when an answer follows.
            return ""
        rest = turn[len(gen) :]
        at = rest.find("Yes")
        return rest[:at] if at >= 0 else ""

    # -- token ids ------------------------------------------------------------------

    def ids(self, text: str) -> list[int]:
        # The same special-token handling the processor applies to the prompt (e.g. LLaVA's BOS).
        return list(self.tokenizer(text)["input_ids"])

    def suffix_ids(self, question: str, prefix_raw_ids: list[int]) -> list[int]:
        """Ids of everything after the prefix, as they appear in the whole prompt's tokenisation."""
        if self.split_error:
            raise PromptSplitError(self.split_error)
        full = self.render(question)
        if not full.startswith(self.prefix_text):
            raise PromptSplitError("the rendered prompt does not start with the shared prefix")
        ids = self.ids(full)
        n = len(prefix_raw_ids)
        if ids[:n] != prefix_raw_ids:
            raise PromptSplitError("the prefix tokens merge with the question's first tokens")
        return ids[n:]

    def answer_ids(self, question: str, answer: str) -> list[int]:
        """Ids of ``answer`` as the model would write it after this question's prompt."""
        prompt = self.render(question)
        base = self.ids(prompt)
        ids = self.ids(prompt + self.answer_lead + answer)
        if ids[: len(base)] == base and len(ids) > len(base):
            return ids[len(base) :]
        # The answer merged with the prompt's last token: fall back to the answer alone.
        return list(self.tokenizer(self.answer_lead + answer, add_special_tokens=False)["input_ids"])
