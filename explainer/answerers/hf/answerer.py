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
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch

from explainer.answerers.base import (
    AnswererBase,
    AnswererStats,
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
from explainer.answerers.locate import LocatesByGeneration
from explainer.answerers.hf.image_prep import prepare_image
from explainer.answerers.hf.prompting import ChatLayout, PromptSplitError
from explainer.answerers.hf.tokens import YesNoTokens, discover_yes_no

MODES = ("cached", "plain", "generate")
# How the cached path lays out a round's questions: "rows" (one padded row per question, the default) or
# "exact" (the questions of one image packed into one sequence after its prefix, kept apart by a 4D mask;
# yes/no questions only, choices and follow-ups stay on rows). See prefix_cache.run_packed.
PACKINGS = ("rows", "exact")


@dataclass(frozen=True)
class BatchRecord:
    """One model call, for the benchmark and the terminal view."""

    kind: str  # "prefix", "yes_no", "choose", "follow_up", "decode", "generate"
    size: int  # rows (questions, or question×option pairs)
    tokens: int  # real tokens processed (padding excluded)
    seconds: float


@dataclass(eq=False)
class _Open:
    """One open image: its pixels, preamble, encoded prefix and counters."""

    image: Any
    preamble: str
    stats: AnswererStats
    batches: list[BatchRecord] = field(default_factory=list)
    prefix: pc.Prefix | None = None


_SOLO = -1  # the slot of the single-image protocol (begin_image / end_image)


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


class VLMAnswerer(LocatesByGeneration, AnswererBase):
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
        max_images: int = 64,
        notes: Sequence[str] = (),
        packing: str = "rows",
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"unknown VLM mode {mode!r}; choose from {', '.join(MODES)}")
        if packing not in PACKINGS:
            raise ValueError(f"unknown packing {packing!r}; choose from {', '.join(PACKINGS)}")
        self.model = model
        self.processor = processor
        self.model_id = model_id
        self.model_type = model.config.model_type
        self.requested_mode = mode
        self.max_batch = max(1, int(max_batch))
        # How many images the engine may walk together (MultiImageAnswerer); --batch-images picks how many it does.
        self.max_images = max(1, int(max_images))
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
        self.packing = packing
        if packing == "exact":
            supported, reason = pc.packing_support(model)
            if not supported:
                raise ValueError(f"packing 'exact' refused: {reason}; use packing 'rows'")
            if self.mode != "cached":
                raise ValueError(f"packing 'exact' needs the cached path, and this model runs {self.mode!r}"
                                 + (f" ({self.notes[-1]})" if self.notes else "") + "; use packing 'rows'")
        self._open: dict[int, _Open] = {}
        self._current: _Open | None = None  # the image the single-image methods work on
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

    def _record(self, kind: str, size: int, tokens: int, seconds: float, owners: Sequence[_Open] | None = None,
                row_tokens: Sequence[int] | None = None) -> None:
        """Count one model call. ``owners``: the image of each row (default: all rows the current image's).

        A call shared by several images counts once for each of them, with its
        time split by their share of the rows and its tokens by their own rows.
        """
        if owners is None:
            owners = [self._current] * size if self._current is not None else []
        if not owners:
            return
        share: dict[int, list] = {}
        for i, img in enumerate(owners):
            entry = share.setdefault(id(img), [img, 0, 0])
            entry[1] += 1
            entry[2] += row_tokens[i] if row_tokens is not None else 0
        for img, rows, toks in share.values():
            mine = toks if row_tokens is not None else tokens
            part = seconds * rows / len(owners)
            img.batches.append(BatchRecord(kind, size, mine, part))
            img.stats.forward_passes += 1
            img.stats.tokens += mine
            img.stats.model_seconds += part

    # -- image bracketing ---------------------------------------------------------------

    def _open_image(self, context: ImageContext, stats: AnswererStats) -> _Open:
        if context.image is None:
            raise AnswererError("the VLM answerer needs an image (ImageContext.image is None)")
        image = context.image
        image = prepare_image(image.convert("RGB"), self.processor) if hasattr(image, "convert") else image
        return _Open(image, context.preamble, stats)

    def _use(self, img: _Open) -> _Open:
        """Make ``img`` the current image (its preamble in the layout): the single-image code then serves it."""
        self._current = img
        self.layout.set_preamble(img.preamble)  # every mode says it; the cached one encodes it once
        return img

    def begin_image(self, context: ImageContext) -> None:
        super().begin_image(context)
        self._open.pop(_SOLO, None)
        img = self._open_image(context, self.stats)
        self.batches = img.batches
        self._open[_SOLO] = self._use(img)
        if self.mode == "cached":
            self._encode_prefixes([img])

    def end_image(self) -> None:
        super().end_image()
        if self._open.pop(_SOLO, None) is self._current:
            self._current = None  # frees the image and its KV cache

    @property
    def _image(self):
        """The current image as the model is shown it (after the processor-specific preparation)."""
        return self._current.image if self._current is not None else None

    @property
    def _prefix(self) -> pc.Prefix | None:
        return self._current.prefix if self._current is not None else None

    def _encode_prefixes(self, images: list[_Open]) -> None:
        """Encode the images' prefixes, images whose inputs have the same shapes in one batch."""
        encoded, raw = [], []
        for img in images:
            self._use(img)
            raw.append(self.layout.ids(self.layout.prefix_text))
            encoded.append(self._inputs(self.layout.prefix_text))
        for group in pc.same_shape_groups(encoded):
            for part in self._chunks(group, self.max_images):
                start = time.perf_counter()
                inputs = pc.concat_inputs([encoded[i] for i in part])
                prefixes = pc.encode_prefixes(self.model, inputs, [raw[i] for i in part])
                seconds = time.perf_counter() - start
                for i, prefix in zip(part, prefixes):
                    img = images[i]
                    img.prefix = prefix
                    img.stats.prefix_tokens = prefix.length
                    img.stats.prefix_seconds = seconds / len(part)
                owners = [images[i] for i in part]
                self._record("prefix", len(part), 0, seconds, owners, [p.length for p in prefixes])

    def _inputs(self, text: str) -> dict:
        if self._current is None:
            raise AnswererError("begin_image() must be called before asking the VLM questions")
        enc = self.processor(text=[text], images=[self._current.image], return_tensors="pt")
        return pc.to_device(dict(enc), self.model.device, self.model.dtype)

    def _suffix(self, prompt: str) -> list[int] | None:
        """The question's own token ids after the current image's cached prefix, or None to use the plain path."""
        try:
            return self.layout.suffix_ids(prompt, self._current.prefix.raw_ids)
        except PromptSplitError as exc:
            self._fall_back(f"cannot share the prompt prefix ({exc})")
            return None

    def _cached(self) -> bool:
        return self.mode == "cached" and self._prefix is not None

    # -- several images (explainer.answerers.base.MultiImageAnswerer) ---------------------

    def begin_images(self, contexts: Mapping[int, ImageContext]) -> None:
        """Open images under the engine's slots; in cached mode their prefixes are encoded together."""
        new = {slot: self._open_image(ctx, AnswererStats()) for slot, ctx in contexts.items()}
        clash = [s for s in new if s in self._open]
        if clash:
            raise AnswererError(f"image slot {clash[0]} is already open")
        self._open.update(new)
        if self.mode == "cached":
            try:
                self._encode_prefixes(list(new.values()))
            except BaseException:
                for slot in new:
                    del self._open[slot]
                raise

    def end_images(self, slots: Sequence[int]) -> None:
        for slot in slots:
            if self._open.pop(slot, None) is self._current:
                self._current = None

    def image_stats(self, slot: int) -> AnswererStats:
        return self._open[slot].stats

    def _prepare(self, pairs: Sequence[tuple[int, Any]], prompt_of) -> list[list[int]] | None:
        """Each pair's suffix ids on its own image's prefix, or None when the cached path is not available."""
        if self.mode != "cached":
            return None
        rows: list[list[int]] = []
        for slot, query in pairs:
            self._use(self._open[slot])
            row = self._suffix(prompt_of(query))
            if row is None:
                return None
            rows.append(row)
        return rows

    def _one_by_one(self, method, pairs: Sequence[tuple[int, Any]]) -> list:
        """The single-image path per image (plain and generate modes, and after a fall-back)."""
        out: list = [None] * len(pairs)
        by_slot: dict[int, list[int]] = {}
        for i, (slot, _) in enumerate(pairs):
            by_slot.setdefault(slot, []).append(i)
        for slot, idx in by_slot.items():
            self._use(self._open[slot])
            for i, answer in zip(idx, method([pairs[i][1] for i in idx])):
                out[i] = answer
        return out

    def yes_no_images(self, queries: Sequence[tuple[int, YesNoQuery]]) -> list[YesNoAnswer]:
        queries = list(queries)
        rows = self._prepare(queries, lambda q: q.prompt)
        if rows is None:
            return self._one_by_one(self.yes_no, queries)
        return self._cached_yes_no([self._open[s] for s, _ in queries], rows)

    def choose_images(self, queries: Sequence[tuple[int, ChoiceQuery]]) -> list[ChoiceAnswer]:
        queries = list(queries)
        rows = self._prepare(queries, lambda q: q.prompt)
        if rows is None:
            return self._one_by_one(self.choose, queries)
        owners = [self._open[s] for s, _ in queries]
        scored = self._cached_option_logprobs(owners, self._option_items(owners, [q for _, q in queries], rows))
        return [_choice(q, scores) for (_, q), scores in zip(queries, scored)]

    def follow_up_images(self, queries: Sequence[tuple[int, FollowUpQuery]]) -> list[FollowUpAnswer]:
        queries = list(queries)
        rows = self._prepare(queries, lambda q: q.prompt)
        if rows is None:
            return self._one_by_one(self.follow_up, queries)
        return self._cached_follow_ups([self._open[s] for s, _ in queries], [q for _, q in queries], rows)

    # -- scoring helpers ------------------------------------------------------------------

    def _yes_no_from_logits(self, logits: torch.Tensor) -> tuple[float, float]:
        logits = logits.float()
        yes = torch.logsumexp(logits[list(self.yes_no_tokens.yes_ids)], 0)
        no = torch.logsumexp(logits[list(self.yes_no_tokens.no_ids)], 0)
        both = torch.logsumexp(torch.stack([yes, no]), 0)
        mass = torch.exp(both - torch.logsumexp(logits, 0))
        return float(torch.sigmoid(yes - no)), float(mass)

    def _chunks(self, items: list, size: int | None = None) -> list[list]:
        size = size or self.max_batch
        return [items[i : i + size] for i in range(0, len(items), size)]

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
        return self._cached_yes_no([self._current] * len(rows), rows)

    def _cached_yes_no(self, owners: list[_Open], rows: list[list[int]]) -> list[YesNoAnswer]:
        answers: list[YesNoAnswer] = []
        for span in self._chunks(list(range(len(rows)))):
            chunk = [rows[i] for i in span]
            prefixes = [owners[i].prefix for i in span]
            start = time.perf_counter()
            if self.packing == "exact":  # one packed sequence per image, each answer at its question's last token
                last_hidden, _ = pc.run_packed(self.model, prefixes, chunk, self.pad_id)
            else:
                hidden, _, _, _ = pc.run_suffixes(self.model, prefixes, chunk, self.pad_id)
                last = torch.tensor([len(r) - 1 for r in chunk], device=hidden.device)
                last_hidden = hidden[torch.arange(len(chunk), device=hidden.device), last]
            with torch.inference_mode():
                logits = self._lm_head(last_hidden)
            seconds = time.perf_counter() - start
            self._record("yes_no", len(chunk), sum(map(len, chunk)), seconds, [owners[i] for i in span],
                         [len(r) for r in chunk])
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
        """Sum of each option's token log-probs after the prompt, uncached: (scores, tokens, seconds)."""
        opt_ids = [self.layout.answer_ids(prompt, o) for o in options]
        scores, tokens, seconds = [], 0, 0.0
        for ids in opt_ids:
            logits, n, s = self._plain_logits(prompt, ids)
            scores.append(_sequence_logprob(logits[:-1], ids))
            tokens, seconds = tokens + n, seconds + s
        return scores, tokens, seconds

    def _option_items(self, owners: list[_Open], queries: Sequence, rows: list[list[int]]):
        """(suffix ids, ids of every option) per question; options are read from ``allowed`` or ``options``."""
        items = []
        for img, q, row in zip(owners, queries, rows):
            self._use(img)
            options = q.options if isinstance(q, ChoiceQuery) else q.allowed
            items.append((row, [self.layout.answer_ids(q.prompt, o) for o in options]))
        return items

    def _cached_option_logprobs(self, owners: list[_Open], items: list[tuple[list[int], list[list[int]]]]):
        """Per question (scores, tokens, seconds), on two cache levels.

        The question text runs once per question (one batched forward over its
        image's prefix); only the options' tokens are then fed, on a copy of that
        cache with its rows repeated per option. Re-running the question text
        for every option (ten class names behind a 40-token prompt) cost five
        times as much for the same numbers.
        """
        results: list[list] = [[[0.0] * len(opts), 0, 0.0] for _, opts in items]
        for chunk in self._chunks(list(range(len(items)))):
            start = time.perf_counter()
            suffixes = [items[q][0] for q in chunk]
            hidden, cache, mask, layout = pc.run_suffixes(self.model, [owners[q].prefix for q in chunk], suffixes,
                                                          self.pad_id)
            per_row = [len(r) + sum(len(ids) - 1 for ids in items[q][1]) for r, q in zip(suffixes, chunk)]
            with torch.inference_mode():
                last = torch.stack([hidden[b, len(r) - 1] for b, r in enumerate(suffixes)])
                first = torch.log_softmax(self._lm_head(last).float(), -1)  # predicts each option's first token
                cont = [(b, oi, ids) for b, q in enumerate(chunk) for oi, ids in enumerate(items[q][1]) if len(ids) > 1]
                rest: dict[tuple[int, int], float] = {}
                if cont:
                    rest = self._option_continuations(cache, mask, layout, suffixes, cont)
                for b, q in enumerate(chunk):
                    for oi, ids in enumerate(items[q][1]):
                        results[q][0][oi] = float(first[b, ids[0]]) + rest.get((b, oi), 0.0)
            seconds = time.perf_counter() - start
            chunk_owners = [owners[q] for q in chunk]
            self._record("choose", len(chunk), sum(per_row), seconds, chunk_owners, per_row)
            if cont:  # the second level is a forward pass of its own for every image in it
                for img in {id(o): o for o in chunk_owners}.values():
                    img.stats.forward_passes += 1
            for b, q in enumerate(chunk):
                results[q][1] += per_row[b]
                results[q][2] += seconds / len(chunk)
        return [tuple(r) for r in results]

    def _option_continuations(self, cache, mask, layout: pc.Rows, suffixes, cont) -> dict[tuple[int, int], float]:
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
        picked = layout.select(rows)
        starts = picked.lengths + torch.tensor([len(suffixes[b]) for b, _, _ in cont], device=mask.device)
        out = self.model.model(
            input_ids=feed,
            attention_mask=torch.cat([mask[rows], new_mask], dim=1),
            position_ids=pc.position_ids(picked, starts, width),
            **pc.cache_kwargs(self.model.model, cache),
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
        scored = self._score_options(queries)
        return [_choice(q, scores) for q, scores in zip(queries, scored)]

    def _score_options(self, queries: list) -> list:
        """(scores, tokens, seconds) per query over its ``options`` (choices) or ``allowed`` words (follow-ups)."""
        if not queries:
            return []
        if self._cached():
            suffixes = [self._suffix(q.prompt) for q in queries]
            if self._cached():  # no fall-back happened while splitting
                owners = [self._current] * len(queries)
                return self._cached_option_logprobs(owners, self._option_items(owners, queries, suffixes))
        return [self._option_logprobs(q.prompt, q.options if isinstance(q, ChoiceQuery) else q.allowed)
                for q in queries]

    # -- follow-ups ------------------------------------------------------------------------

    def follow_up(self, queries: Sequence[FollowUpQuery]) -> list[FollowUpAnswer]:
        queries = list(queries)
        if self.mode == "generate":
            return [self._generate_follow_up(q) for q in queries]
        if self._cached():
            rows = [self._suffix(q.prompt) for q in queries]
            if self._cached():
                return self._cached_follow_ups([self._current] * len(queries), queries, rows)
        answers: list[FollowUpAnswer | None] = [None] * len(queries)
        restricted = [i for i, q in enumerate(queries) if q.allowed]
        for i, scores in zip(restricted, self._score_options([queries[i] for i in restricted])):
            answers[i] = _best_word(queries[i], scores)
        for i, q in enumerate(queries):
            if not q.allowed:
                text, tokens, seconds = self._plain_greedy(q)
                answers[i] = FollowUpAnswer(sentence(text) if q.free_text else first_word(text), tokens, seconds)
        return answers  # type: ignore[return-value]

    def _cached_follow_ups(self, owners: list[_Open], queries: list[FollowUpQuery], rows: list[list[int]]):
        """Restricted answers scored like options (keep the best); free ones by batched greedy decoding."""
        answers: list[FollowUpAnswer | None] = [None] * len(queries)
        restricted = [i for i, q in enumerate(queries) if q.allowed]
        if restricted:
            sub = [owners[i] for i in restricted]
            items = self._option_items(sub, [queries[i] for i in restricted], [rows[i] for i in restricted])
            for i, scores in zip(restricted, self._cached_option_logprobs(sub, items)):
                answers[i] = _best_word(queries[i], scores)
        free = [i for i, q in enumerate(queries) if not q.allowed]
        for span in self._chunks(free):
            texts = self._cached_greedy([queries[i] for i in span], [rows[i] for i in span], [owners[i] for i in span])
            for i, (text, tokens, seconds) in zip(span, texts):
                answers[i] = FollowUpAnswer(sentence(text) if queries[i].free_text else first_word(text), tokens, seconds)
        return answers

    @torch.inference_mode()
    def _cached_greedy(self, queries: list[FollowUpQuery], rows: list[list[int]], owners: list[_Open] | None = None):
        """Batched greedy decoding on the prefix caches; rows keep their own positions despite padding."""
        owners = owners or [self._current] * len(rows)
        steps = max(q.max_new_tokens for q in queries)
        start = time.perf_counter()
        hidden, cache, mask, layout = pc.run_suffixes(self.model, [o.prefix for o in owners], rows, self.pad_id)
        n = len(rows)
        lens = torch.tensor([len(r) for r in rows], device=hidden.device)
        logits = self._lm_head(hidden[torch.arange(n, device=hidden.device), lens - 1])
        self._record("follow_up", n, int(lens.sum()), time.perf_counter() - start, owners, [len(r) for r in rows])
        generated: list[list[int]] = [[] for _ in rows]
        done = [False] * n
        starts = layout.lengths + lens
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
            h, mask = pc.decode_step(self.model, layout, cache, mask, nxt, starts + step)
            logits = self._lm_head(h)
            self._record("decode", n, n, time.perf_counter() - t0, owners, [1] * n)
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


def _choice(query: ChoiceQuery, scored) -> ChoiceAnswer:
    scores, tokens, seconds = scored
    probs = torch.softmax(torch.tensor(scores, dtype=torch.float64), 0).tolist()
    return ChoiceAnswer(dict(zip(query.options, probs)), tokens=tokens, seconds=seconds)


def _best_word(query: FollowUpQuery, scored) -> FollowUpAnswer:
    scores, tokens, seconds = scored
    best = max(range(len(scores)), key=scores.__getitem__)
    return FollowUpAnswer(query.allowed[best], tokens=tokens, seconds=seconds)


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
