"""A vision-language model answering the engine's questions (see docs/vlm.md).

Three modes, same answers for the first two (tested):

* ``"cached"`` (default): ``begin_image`` encodes the image and the template
  head once; each call's questions run as ONE batched forward on that prefix's
  KV cache, processing only their own tokens.
* ``"plain"``: one uncached forward per question (per option), full prompt and
  image every time. The reference the cached path is checked against, and the
  fall-back for architectures where prefix reuse is not exact.
* ``"generate"``: the seed's naive way, ``model.generate`` per question and the
  yes/no read from the text. Kept for the benchmark.

Yes/no is scored by logits: ``P(yes) = sigmoid(logsumexp(yes variants) -
logsumexp(no variants))`` over the next-token logits after the chat template's
generation prompt; ``mass`` is the probability on all of those tokens.
"""

from __future__ import annotations

import string
import time
import warnings
from dataclasses import dataclass
from typing import Sequence

import torch

from explainer.answerers.base import (
    AnswererBase,
    AnswererError,
    ChoiceAnswer,
    ChoiceQuery,
    FollowUpAnswer,
    FollowUpQuery,
    ImageContext,
    YesNoAnswer,
    YesNoQuery,
)
from explainer.answerers.hf import prefix_cache as pc
from explainer.answerers.hf.image_prep import prepare_image
from explainer.answerers.hf.prompting import ChatLayout, PromptSplitError
from explainer.answerers.hf.tokens import YesNoTokens, discover_yes_no

MODES = ("cached", "plain", "generate")


@dataclass(frozen=True)
class BatchRecord:
    """One model call, for the benchmark and the terminal view."""

    kind: str  # "prefix", "yes_no", "choose", "follow_up", "decode", "generate"
    size: int  # rows (questions, or question×option pairs)
    tokens: int  # real tokens processed (padding excluded)
    seconds: float


def first_word(text: str) -> str:
    """The first word of a generated answer, lower-cased, without punctuation."""
    for word in text.split():
        # Drop control characters and U+FFFD (half of a multi-byte character cut by the token limit).
        word = "".join(ch for ch in word if ch.isprintable() and ch != "\ufffd")
        word = word.strip(string.punctuation + "“”‘’«»").lower()
        if word:
            return word
    return ""


def sentence(text: str) -> str:
    """Generated free text as one clean line: control characters dropped, whitespace collapsed."""
    text = "".join(ch for ch in text if ch.isprintable() or ch.isspace()).replace("\ufffd", "")
    return " ".join(text.split())


class VLMAnswerer(AnswererBase):
    """Implements :class:`explainer.answerers.base.Answerer` with a Hugging Face VLM.

    Attributes: ``model``, ``processor``, ``model_id``, ``model_type``,
    ``mode`` (effective), ``requested_mode``, ``yes_no_tokens``,
    ``notes`` (one line per fall-back or notable setting), ``batches``
    (:class:`BatchRecord` list for the current image), ``stats``.
    """

    name = "vlm"

    def __init__(
        self,
        model,
        processor,
        *,
        mode: str = "cached",
        model_id: str = "",
        max_batch: int = 16,
        notes: Sequence[str] = (),
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"unknown VLM mode {mode!r}; choose from {', '.join(MODES)}")
        self.model = model
        self.processor = processor
        self.model_id = model_id
        self.model_type = model.config.model_type
        self.requested_mode = mode
        self.max_batch = max(1, int(max_batch))
        self.notes: list[str] = list(notes)
        self.batches: list[BatchRecord] = []
        self.layout = ChatLayout(processor)
        self.yes_no_tokens: YesNoTokens = discover_yes_no(self.layout)
        tok = self.layout.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        self.eos_ids = self._eos_ids()
        self.mode = mode
        if mode == "cached":
            exact, reason = pc.reuse_support(self.model_type)
            if not exact:
                self._fall_back(reason)
            elif self.layout.split_error:
                self._fall_back(f"cannot share the prompt prefix ({self.layout.split_error})")
        self._image = None
        self._prefix: pc.Prefix | None = None
        self._lm_head = model.get_output_embeddings()

    # -- bookkeeping ------------------------------------------------------------------

    def _fall_back(self, reason: str) -> None:
        if self.mode == "plain":
            return  # said once
        note = f"{reason}; using the plain (uncached) path"
        self.mode = "plain"
        self.notes.append(note)
        warnings.warn(f"VLM {self.model_id or self.model_type}: {note}", stacklevel=3)

    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        tok = self.layout.tokenizer
        gen = getattr(self.model, "generation_config", None)
        for value in (tok.eos_token_id, getattr(gen, "eos_token_id", None)):
            if isinstance(value, int):
                ids.add(value)
            elif value:
                ids.update(int(v) for v in value)
        for name in ("<end_of_utterance>", "<|im_end|>", "<|eot_id|>", "<end_of_turn>"):
            tid = tok.convert_tokens_to_ids(name)
            if isinstance(tid, int) and tid != tok.unk_token_id and tid is not None:
                ids.add(tid)
        return ids

    def _record(self, kind: str, size: int, tokens: int, seconds: float) -> None:
        self.batches.append(BatchRecord(kind, size, tokens, seconds))
        self.stats.forward_passes += 1
        self.stats.tokens += tokens
        self.stats.model_seconds += seconds

    # -- image bracketing ---------------------------------------------------------------

    def begin_image(self, context: ImageContext) -> None:
        super().begin_image(context)
        self.batches = []
        self._prefix = None
        if context.image is None:
            raise AnswererError("the VLM answerer needs an image (ImageContext.image is None)")
        image = context.image
        self._image = prepare_image(image.convert("RGB"), self.processor) if hasattr(image, "convert") else image
        self.layout.set_preamble(context.preamble)  # every mode says it; the cached one encodes it once
        if self.mode == "cached":
            self._encode_prefix()

    def end_image(self) -> None:
        super().end_image()
        self._image = None
        self._prefix = None  # frees the KV cache

    def _encode_prefix(self) -> None:
        raw_ids = self.layout.ids(self.layout.prefix_text)
        inputs = self._inputs(self.layout.prefix_text)
        start = time.perf_counter()
        self._prefix = pc.encode_prefix(self.model, inputs, raw_ids)
        seconds = time.perf_counter() - start
        self.stats.prefix_tokens = self._prefix.length
        self.stats.prefix_seconds = seconds
        self._record("prefix", 1, self._prefix.length, seconds)

    def _inputs(self, text: str) -> dict:
        if self._image is None:
            raise AnswererError("begin_image() must be called before asking the VLM questions")
        enc = self.processor(text=[text], images=[self._image], return_tensors="pt")
        return pc.to_device(dict(enc), self.model.device, self.model.dtype)

    def _suffix(self, prompt: str) -> list[int] | None:
        """The question's own token ids after the cached prefix, or None to use the plain path."""
        try:
            return self.layout.suffix_ids(prompt, self._prefix.raw_ids)
        except PromptSplitError as exc:
            self._fall_back(f"cannot share the prompt prefix ({exc})")
            return None

    def _cached(self) -> bool:
        return self.mode == "cached" and self._prefix is not None

    # -- scoring helpers ------------------------------------------------------------------

    def _yes_no_from_logits(self, logits: torch.Tensor) -> tuple[float, float]:
        logits = logits.float()
        yes = torch.logsumexp(logits[list(self.yes_no_tokens.yes_ids)], 0)
        no = torch.logsumexp(logits[list(self.yes_no_tokens.no_ids)], 0)
        both = torch.logsumexp(torch.stack([yes, no]), 0)
        mass = torch.exp(both - torch.logsumexp(logits, 0))
        return float(torch.sigmoid(yes - no)), float(mass)

    def _chunks(self, items: list) -> list[list]:
        return [items[i : i + self.max_batch] for i in range(0, len(items), self.max_batch)]

    @torch.inference_mode()
    def _plain_logits(self, prompt: str, extra: Sequence[int] = ()) -> tuple[torch.Tensor, int, float]:
        """Uncached forward of the full prompt (+ ``extra`` ids): logits of the last ``len(extra)+1`` positions."""
        inputs = _extend(self._inputs(self.layout.render(prompt)), extra)
        start = time.perf_counter()
        out = self.model(**inputs, logits_to_keep=len(extra) + 1)
        seconds = time.perf_counter() - start
        tokens = int(inputs["input_ids"].shape[1])
        self._record("plain", 1, tokens, seconds)
        return out.logits[0], tokens, seconds

    # -- yes/no -----------------------------------------------------------------------

    def yes_no(self, queries: Sequence[YesNoQuery]) -> list[YesNoAnswer]:
        queries = list(queries)
        if not queries:
            return []
        if self.mode == "generate":
            return [self._generate_yes_no(q) for q in queries]
        rows = [self._suffix(q.prompt) for q in queries] if self._cached() else None
        if rows is None or not self._cached():
            return [self._plain_yes_no(q) for q in queries]
        answers: list[YesNoAnswer] = []
        for chunk in self._chunks(rows):
            start = time.perf_counter()
            hidden, _, _ = pc.run_suffixes(self.model, self._prefix, chunk, self.pad_id)
            last = torch.tensor([len(r) - 1 for r in chunk], device=hidden.device)
            with torch.inference_mode():
                logits = self._lm_head(hidden[torch.arange(len(chunk), device=hidden.device), last])
            seconds = time.perf_counter() - start
            self._record("yes_no", len(chunk), sum(map(len, chunk)), seconds)
            for i, row in enumerate(chunk):
                p_yes, mass = self._yes_no_from_logits(logits[i])
                answers.append(YesNoAnswer(p_yes, mass, tokens=len(row), seconds=seconds / len(chunk)))
        return answers

    def _plain_yes_no(self, query: YesNoQuery) -> YesNoAnswer:
        logits, tokens, seconds = self._plain_logits(query.prompt)
        p_yes, mass = self._yes_no_from_logits(logits[-1])
        return YesNoAnswer(p_yes, mass, tokens=tokens, seconds=seconds)

    # -- choices ------------------------------------------------------------------------

    def _option_logprobs(self, prompt: str, options: Sequence[str]) -> tuple[list[float], int, float]:
        """Sum of each option's token log-probs after the prompt: (scores, tokens, seconds)."""
        opt_ids = [self.layout.answer_ids(prompt, o) for o in options]
        suffix = self._suffix(prompt) if self._cached() else None
        if suffix is None:
            scores, tokens, seconds = [], 0, 0.0
            for ids in opt_ids:
                logits, n, s = self._plain_logits(prompt, ids)
                scores.append(_sequence_logprob(logits[:-1], ids))
                tokens, seconds = tokens + n, seconds + s
            return scores, tokens, seconds
        return self._cached_option_logprobs([(suffix, opt_ids)])[0]

    def _cached_option_logprobs(self, items: list[tuple[list[int], list[list[int]]]]):
        """Per question (scores, tokens, seconds), on two cache levels.

        The question text runs once per question (one batched forward over the
        image prefix); only the options' tokens are then fed, on a copy of that
        cache with its rows repeated per option. Re-running the question text
        for every option (ten class names behind a 40-token prompt) cost five
        times as much for the same numbers.
        """
        results: list[list] = [[[0.0] * len(opts), 0, 0.0] for _, opts in items]
        for chunk in self._chunks(list(range(len(items)))):
            start = time.perf_counter()
            suffixes = [items[q][0] for q in chunk]
            hidden, cache, mask = pc.run_suffixes(self.model, self._prefix, suffixes, self.pad_id)
            tokens = sum(len(r) for r in suffixes)
            with torch.inference_mode():
                last = torch.stack([hidden[b, len(r) - 1] for b, r in enumerate(suffixes)])
                first = torch.log_softmax(self._lm_head(last).float(), -1)  # predicts each option's first token
                cont = [(b, oi, ids) for b, q in enumerate(chunk) for oi, ids in enumerate(items[q][1]) if len(ids) > 1]
                rest: dict[tuple[int, int], float] = {}
                if cont:
                    rest = self._option_continuations(cache, mask, suffixes, cont)
                    tokens += sum(len(ids) - 1 for _, _, ids in cont)
                    self.stats.forward_passes += 1  # the second level; _record counts the first
                for b, q in enumerate(chunk):
                    for oi, ids in enumerate(items[q][1]):
                        results[q][0][oi] = float(first[b, ids[0]]) + rest.get((b, oi), 0.0)
            seconds = time.perf_counter() - start
            self._record("choose", len(chunk), tokens, seconds)
            for b, q in enumerate(chunk):
                results[q][1] += len(suffixes[b]) + sum(len(ids) - 1 for ids in items[q][1])
                results[q][2] += seconds / len(chunk)
        return [tuple(r) for r in results]

    def _option_continuations(self, cache, mask, suffixes, cont) -> dict[tuple[int, int], float]:
        """Log-probs of options' tokens after the first: feed ids[:-1] behind each question's own tokens."""
        rows = torch.tensor([b for b, _, _ in cont], device=mask.device)
        cache.batch_select_indices(rows)  # one cache row per (question, option); rows may repeat
        width = max(len(ids) - 1 for _, _, ids in cont)
        feed = torch.full((len(cont), width), self.pad_id, dtype=torch.long, device=mask.device)
        new_mask = torch.zeros((len(cont), width), dtype=mask.dtype, device=mask.device)
        for i, (_, _, ids) in enumerate(cont):
            feed[i, : len(ids) - 1] = torch.tensor(ids[:-1], device=mask.device)
            new_mask[i, : len(ids) - 1] = 1
        # each row continues right after its own question text, whatever padding its batch had
        starts = torch.tensor([self._prefix.length + len(suffixes[b]) for b, _, _ in cont], device=mask.device)
        out = self.model.model(
            input_ids=feed,
            attention_mask=torch.cat([mask[rows], new_mask], dim=1),
            position_ids=pc.position_ids(self._prefix, starts, width),
            past_key_values=cache,
            use_cache=True,
        )
        hidden = out.last_hidden_state
        scores = {}
        for i, (b, oi, ids) in enumerate(cont):
            scores[(b, oi)] = _sequence_logprob(self._lm_head(hidden[i, : len(ids) - 1]), ids[1:])
        return scores

    def choose(self, queries: Sequence[ChoiceQuery]) -> list[ChoiceAnswer]:
        queries = list(queries)
        if self.mode == "generate":
            return [self._generate_choice(q) for q in queries]
        scored = self._score_options([(q.prompt, q.options) for q in queries])
        answers = []
        for q, (scores, tokens, seconds) in zip(queries, scored):
            probs = torch.softmax(torch.tensor(scores, dtype=torch.float64), 0).tolist()
            answers.append(ChoiceAnswer(dict(zip(q.options, probs)), tokens=tokens, seconds=seconds))
        return answers

    def _score_options(self, items: list[tuple[str, Sequence[str]]]):
        if not items:
            return []
        if self._cached():
            suffixes = [self._suffix(prompt) for prompt, _ in items]
            if self._cached():  # no fall-back happened while splitting
                prepared = [
                    (s, [self.layout.answer_ids(prompt, o) for o in options])
                    for s, (prompt, options) in zip(suffixes, items)
                ]
                return self._cached_option_logprobs(prepared)
        return [self._option_logprobs(prompt, options) for prompt, options in items]

    # -- follow-ups ------------------------------------------------------------------------

    def follow_up(self, queries: Sequence[FollowUpQuery]) -> list[FollowUpAnswer]:
        queries = list(queries)
        answers: list[FollowUpAnswer | None] = [None] * len(queries)
        if self.mode == "generate":
            return [self._generate_follow_up(q) for q in queries]
        # Restricted answers: score the allowed words like options and keep the best.
        restricted = [i for i, q in enumerate(queries) if q.allowed]
        scored = self._score_options([(queries[i].prompt, queries[i].allowed) for i in restricted])
        for i, (scores, tokens, seconds) in zip(restricted, scored):
            best = max(range(len(scores)), key=scores.__getitem__)
            answers[i] = FollowUpAnswer(queries[i].allowed[best], tokens=tokens, seconds=seconds)
        free = [i for i, q in enumerate(queries) if not q.allowed]
        if free:
            texts = self._greedy([queries[i] for i in free])
            for i, (text, tokens, seconds) in zip(free, texts):
                answer = sentence(text) if queries[i].free_text else first_word(text)
                answers[i] = FollowUpAnswer(answer, tokens=tokens, seconds=seconds)
        return answers  # type: ignore[return-value]

    def _greedy(self, queries: list[FollowUpQuery]) -> list[tuple[str, int, float]]:
        if self._cached():
            rows = [self._suffix(q.prompt) for q in queries]
            if self._cached():
                out = []
                for chunk in self._chunks(list(zip(queries, rows))):
                    out.extend(self._cached_greedy([q for q, _ in chunk], [r for _, r in chunk]))
                return out
        return [self._plain_greedy(q) for q in queries]

    @torch.inference_mode()
    def _cached_greedy(self, queries: list[FollowUpQuery], rows: list[list[int]]):
        """Batched greedy decoding on the prefix cache; rows keep their own positions despite padding."""
        steps = max(q.max_new_tokens for q in queries)
        start = time.perf_counter()
        hidden, cache, mask = pc.run_suffixes(self.model, self._prefix, rows, self.pad_id)
        n = len(rows)
        lens = torch.tensor([len(r) for r in rows], device=hidden.device)
        logits = self._lm_head(hidden[torch.arange(n, device=hidden.device), lens - 1])
        self._record("follow_up", n, int(lens.sum()), time.perf_counter() - start)
        generated: list[list[int]] = [[] for _ in rows]
        done = [False] * n
        starts = self._prefix.length + lens
        for step in range(steps):
            nxt = logits.argmax(-1)
            for i in range(n):
                if done[i]:
                    continue
                tid = int(nxt[i])
                if tid in self.eos_ids or len(generated[i]) >= queries[i].max_new_tokens:
                    done[i] = True
                else:
                    generated[i].append(tid)
                    done[i] = len(generated[i]) >= queries[i].max_new_tokens
            if all(done) or step == steps - 1:
                break
            t0 = time.perf_counter()
            h, mask = pc.decode_step(self.model, self._prefix, cache, mask, nxt, starts + step)
            logits = self._lm_head(h)
            self._record("decode", n, n, time.perf_counter() - t0)
        seconds = time.perf_counter() - start
        tok = self.layout.tokenizer
        return [
            (tok.decode(g, skip_special_tokens=True), len(r) + len(g), seconds / n) for g, r in zip(generated, rows)
        ]

    @torch.inference_mode()
    def _plain_greedy(self, query: FollowUpQuery) -> tuple[str, int, float]:
        generated: list[int] = []
        tokens, seconds = 0, 0.0
        for _ in range(query.max_new_tokens):
            logits, n, s = self._plain_logits(query.prompt, generated)
            tokens, seconds = tokens + n, seconds + s
            tid = int(logits[-1].argmax())
            if tid in self.eos_ids:
                break
            generated.append(tid)
        return self.layout.tokenizer.decode(generated, skip_special_tokens=True), tokens, seconds

    # -- the seed's naive way: generate and parse the text ----------------------------------------

    @torch.inference_mode()
    def _generate_text(self, prompt: str, max_new_tokens: int) -> tuple[str, int, float]:
        inputs = self._inputs(self.layout.render(prompt))
        tok = self.layout.tokenizer
        start = time.perf_counter()
        out = self.model.generate(
            **inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=self.pad_id
        )
        seconds = time.perf_counter() - start
        new = out[0, inputs["input_ids"].shape[1] :]
        tokens = int(inputs["input_ids"].shape[1]) + int(new.shape[0])
        self._record("generate", 1, tokens, seconds)
        return tok.decode(new, skip_special_tokens=True), tokens, seconds

    def _generate_yes_no(self, query: YesNoQuery) -> YesNoAnswer:
        text, tokens, seconds = self._generate_text(query.prompt, 4)
        word = first_word(text)
        if word in ("yes", "no"):
            return YesNoAnswer(1.0 if word == "yes" else 0.0, 1.0, tokens=tokens, seconds=seconds)
        return YesNoAnswer(0.5, 0.0, tokens=tokens, seconds=seconds)  # not a yes/no answer

    def _generate_choice(self, query: ChoiceQuery) -> ChoiceAnswer:
        width = max(len(self.layout.answer_ids(query.prompt, o)) for o in query.options)
        text, tokens, seconds = self._generate_text(query.prompt, width + 2)
        lowered = text.lower()
        hits = [o for o in query.options if o.lower() in lowered]
        if hits:
            best = min(hits, key=lambda o: lowered.find(o.lower()))
            probs = {o: float(o == best) for o in query.options}
        else:
            probs = {o: 1.0 / len(query.options) for o in query.options}
        return ChoiceAnswer(probs, tokens=tokens, seconds=seconds)

    def _generate_follow_up(self, query: FollowUpQuery) -> FollowUpAnswer:
        text, tokens, seconds = self._generate_text(query.prompt, query.max_new_tokens)
        return FollowUpAnswer(sentence(text) if query.free_text else first_word(text), tokens=tokens, seconds=seconds)


def _extend(inputs: dict, extra: Sequence[int]) -> dict:
    """Append ``extra`` text tokens to a single-row processor output."""
    if not extra:
        return inputs
    ids = inputs["input_ids"]
    add = torch.tensor([list(extra)], dtype=ids.dtype, device=ids.device)
    out = dict(inputs)
    out["input_ids"] = torch.cat([ids, add], 1)
    for key, fill in (("attention_mask", 1), ("mm_token_type_ids", 0), ("token_type_ids", 0)):
        if key in out:
            value = out[key]
            out[key] = torch.cat([value, torch.full_like(add, fill).to(value.dtype)], 1)
    return out


def _sequence_logprob(logits: torch.Tensor, ids: Sequence[int]) -> float:
    """Sum of log P(ids[j]) under ``logits[j]`` (rows aligned with the tokens they predict)."""
    logp = torch.log_softmax(logits.float(), -1)
    index = torch.tensor(list(ids), device=logits.device)
    return float(logp[torch.arange(len(ids), device=logits.device), index].sum())
