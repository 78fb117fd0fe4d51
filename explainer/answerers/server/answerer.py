"""Answers the engine's questions through an OpenAI-compatible chat-completions server.

* Yes/no: one generated token with its top 20 log-probabilities; P(yes) is the
  yes-variant mass over the yes+no mass (the in-process answerer's variant
  rules), and that mass is recorded.
* Choices (and follow-ups restricted to allowed words): each option is read by
  its first token; a tree whose options share a first token is refused at load.
* Free follow-ups: short greedy generations.

Every prompt of one image is the same user turn, image first, then the tree's
preamble, then the question, so the server's prefix cache (vLLM hashes the
image) reuses the image and preamble for every question. All questions of a
call go out at once, and with the multi-image protocol
(``TreeRunner.run_many``) the questions of several images go out together.
"""

from __future__ import annotations

import base64
import io
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from explainer.answerers.base import (
    AnswererError,
    AnswererStats,
    ChoiceAnswer,
    ChoiceQuery,
    FollowUpAnswer,
    FollowUpQuery,
    ImageContext,
    YesNoAnswer,
    YesNoQuery,
)
from explainer.answerers.hf.answerer import first_word, sentence
from explainer.answerers.hf.prompting import user_text
from explainer.answerers.locate import LocatesByGeneration
from explainer.answerers.server.connection import TOP_LOGPROBS, Completion, ServerConnection, ServerError
from explainer.answerers.server.first_tokens import FirstTokens, SharedFirstToken
from explainer.answerers.server.scoring import option_probs, yes_no_from_top
from explainer.errors import UsageError

LOW_MASS = 0.5  # below this, the model is not really answering yes/no (or naming an option)
SINGLE = -1  # the slot of the image opened with begin_image (the single-image protocol)


@dataclass
class ServerStats(AnswererStats):
    """One image's counters, with what the server reported; travels with the walk's result."""

    url: str = ""
    model: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int | None = None  # prompt tokens the server took from its prefix cache, when it says
    calls: list[dict[str, Any]] = field(default_factory=list)  # one per answerer call: kind, questions, seconds
    low_mass: list[str] = field(default_factory=list)  # "node (mass)" of yes/no answers outside the yes/no mass
    no_option: list[str] = field(default_factory=list)  # choices where no option's token was in the top 20

    def record(self) -> dict[str, Any]:
        return {"url": self.url, "model": self.model, "requests": self.forward_passes,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "cached_tokens": self.cached_tokens, "calls": list(self.calls)}

    def image_notes(self) -> list[str]:
        notes = []
        if self.low_mass:
            notes.append(f"{len(self.low_mass)} yes/no answer(s) rest on less than {LOW_MASS:.0%} of the probability "
                         f"(the model answered outside yes/no): {', '.join(self.low_mass)}")
        if self.no_option:
            notes.append(f"no option's first token was among the server's top {TOP_LOGPROBS} tokens for "
                         f"{', '.join(self.no_option)}: every option got the same probability")
        return notes


@dataclass
class _Image:
    url: str  # the image as a data URL, encoded once: byte-identical in every question
    preamble: str
    stats: ServerStats


class ServerAnswerer(LocatesByGeneration):
    """Implements :class:`~explainer.answerers.base.Answerer` and :class:`~explainer.answerers.base.MultiImageAnswerer`.

    With several images open (``begin_images``), one call sends the questions
    of all of them at once; the connection's semaphore bounds what is in flight.
    """

    name = "server"

    def __init__(self, connection: ServerConnection, first_tokens: FirstTokens | None = None,
                 notes: Sequence[str] = ()) -> None:
        self.connection = connection
        self.first_tokens = first_tokens or FirstTokens(connection)
        self.notes: list[str] = list(notes)  # said once, at load
        self.model_id = connection.model
        self._open: dict[int, _Image] = {}
        self._last = ServerStats()

    @property
    def max_images(self) -> int:
        """Images walked together (``--vlm-images``; default: concurrency / 4)."""
        n = self.connection.settings.images_in_flight
        return max(1, n if n is not None else self.connection.settings.concurrency // 4)

    @property
    def default_batch_images(self) -> int:
        """What the pipeline walks together unless --batch-images says otherwise."""
        return self.max_images

    @property
    def stats(self) -> ServerStats:
        image = self._open.get(SINGLE)
        return image.stats if image is not None else self._last

    def close(self) -> None:
        self.connection.close()

    # -- opening and closing images --------------------------------------------------------

    def begin_image(self, context: ImageContext) -> None:
        self.begin_images({SINGLE: context})

    def end_image(self) -> None:
        self.end_images([SINGLE])

    def begin_images(self, contexts: Mapping[int, ImageContext]) -> None:
        for slot, context in contexts.items():
            if context.image is None:
                raise AnswererError("the VLM server answerer needs an image (ImageContext.image is None)")
            stats = ServerStats(url=self.connection.url, model=self.connection.model)
            self._open[slot] = _Image(image_data_url(context.image), context.preamble, stats)

    def end_images(self, slots: Sequence[int]) -> None:
        for slot in slots:
            image = self._open.pop(slot, None)
            if image is not None:
                self._last = image.stats

    def image_stats(self, slot: int) -> ServerStats:
        return self._open[slot].stats

    def messages(self, image: _Image, prompt: str) -> list[dict]:
        """The one user turn: the image first, then preamble and question (as the in-process answerer says them)."""
        return [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": image.url}},
            {"type": "text", "text": user_text(image.preamble, prompt)},
        ]}]

    def _image(self, slot: int) -> _Image:
        if slot not in self._open:
            raise AnswererError("begin_image() must be called before asking the VLM server questions")
        return self._open[slot]

    # -- requests ---------------------------------------------------------------------------

    def _ask(self, kind: str, pairs: Sequence[tuple[int, str, int]], logprobs: bool) -> list[Completion]:
        """Send every (slot, prompt, max_tokens) at once; count them per image."""
        conn = self.connection
        images = [self._image(slot) for slot, _, _ in pairs]
        start = time.perf_counter()
        done = conn.gather([
            lambda im=im, p=p, m=m: conn.complete(self.messages(im, p), max_tokens=m, logprobs=logprobs)
            for im, (_, p, m) in zip(images, pairs)
        ])
        seconds = time.perf_counter() - start
        if logprobs and not all(c.logprobs_returned for c in done):
            raise ServerError(
                f"VLM server {conn.url} returned no logprobs for model {conn.model!r}: answers cannot be "
                "scored, and reading them from text would be a guess (start the server with logprobs enabled)")
        for slot in dict.fromkeys(slot for slot, _, _ in pairs):
            mine = [c for (s, _, _), c in zip(pairs, done) if s == slot]
            st = self._open[slot].stats
            prompt, completion = sum(c.prompt_tokens for c in mine), sum(c.completion_tokens for c in mine)
            cached = [c.cached_tokens for c in mine if c.cached_tokens is not None]
            if cached:
                st.cached_tokens = (st.cached_tokens or 0) + sum(cached)
            st.prompt_tokens += prompt
            st.completion_tokens += completion
            st.forward_passes += len(mine)
            st.tokens += prompt + completion
            st.model_seconds += seconds
            st.calls.append({"kind": kind, "questions": len(mine), "seconds": seconds, "prompt_tokens": prompt,
                             "completion_tokens": completion, "cached_tokens": sum(cached) if cached else None})
        return done

    def yes_no_images(self, queries: Sequence[tuple[int, YesNoQuery]]) -> list[YesNoAnswer]:
        if not queries:
            return []
        done = self._ask("yes_no", [(slot, q.prompt, 1) for slot, q in queries], logprobs=True)
        answers = []
        for (slot, q), c in zip(queries, done):
            p_yes, mass = yes_no_from_top(c.top)
            if mass < LOW_MASS:
                self._open[slot].stats.low_mass.append(f"{q.node_id} ({mass:.2f})")
            answers.append(YesNoAnswer(p_yes, mass, tokens=c.prompt_tokens + c.completion_tokens, seconds=c.seconds))
        return answers

    def _score_options(self, kind: str, items: Sequence[tuple[int, str, str, Sequence[str]]]):
        """(probs, tokens, seconds) per (slot, node_id, prompt, options)."""
        firsts = [self._first_tokens(node_id, options) for _, node_id, _, options in items]
        done = self._ask(kind, [(slot, prompt, 1) for slot, _, prompt, _ in items], logprobs=True)
        out = []
        for (slot, node_id, _, _), first, c in zip(items, firsts, done):
            probs, mass = option_probs(c.top, first)
            if mass <= 0.0:
                self._open[slot].stats.no_option.append(node_id)
            out.append((probs, c.prompt_tokens + c.completion_tokens, c.seconds))
        return out

    def _first_tokens(self, node_id: str, options: Sequence[str]) -> dict[str, frozenset[str]]:
        try:
            return self.first_tokens.for_options(options)
        except SharedFirstToken as exc:
            raise AnswererError(f"node {node_id}: {exc}; the VLM server backend reads only an option's first token") from None

    def choose_images(self, queries: Sequence[tuple[int, ChoiceQuery]]) -> list[ChoiceAnswer]:
        if not queries:
            return []
        scored = self._score_options("choose", [(slot, q.node_id, q.prompt, q.options) for slot, q in queries])
        return [ChoiceAnswer(probs, tokens=t, seconds=s) for probs, t, s in scored]

    def follow_up_images(self, queries: Sequence[tuple[int, FollowUpQuery]]) -> list[FollowUpAnswer]:
        answers: list[FollowUpAnswer | None] = [None] * len(queries)
        restricted = [i for i, (_, q) in enumerate(queries) if q.allowed]
        if restricted:
            scored = self._score_options(
                "follow_up", [(queries[i][0], queries[i][1].node_id, queries[i][1].prompt, queries[i][1].allowed)
                              for i in restricted])
            for i, (probs, t, s) in zip(restricted, scored):
                answers[i] = FollowUpAnswer(max(probs, key=probs.__getitem__), tokens=t, seconds=s)
        free = [i for i, (_, q) in enumerate(queries) if not q.allowed]
        if free:
            done = self._ask("follow_up", [(queries[i][0], queries[i][1].prompt, queries[i][1].max_new_tokens)
                                           for i in free], logprobs=False)
            for i, c in zip(free, done):
                q = queries[i][1]
                text = sentence(c.text) if q.free_text else first_word(c.text)
                answers[i] = FollowUpAnswer(text, tokens=c.prompt_tokens + c.completion_tokens, seconds=c.seconds)
        return answers  # type: ignore[return-value]

    # the single-image protocol: the same calls on slot SINGLE
    def yes_no(self, queries: Sequence[YesNoQuery]) -> list[YesNoAnswer]:
        return self.yes_no_images([(SINGLE, q) for q in queries])

    def choose(self, queries: Sequence[ChoiceQuery]) -> list[ChoiceAnswer]:
        return self.choose_images([(SINGLE, q) for q in queries])

    def follow_up(self, queries: Sequence[FollowUpQuery]) -> list[FollowUpAnswer]:
        return self.follow_up_images([(SINGLE, q) for q in queries])

    # -- load-time check ---------------------------------------------------------------------

    def check_tree(self, tree) -> None:
        """Refuse, before any image, a tree whose options (or allowed words) share a first token."""
        for node in tree.spec.nodes.values():
            lists = []
            if node.kind == "choose" and node.options:
                lists.append(tuple(node.options))
            follow = getattr(node, "follow_up", None)
            if follow is not None and follow.allowed:
                lists.append(tuple(dict.fromkeys((*follow.allowed, follow.withdraw))))
            for options in lists:
                try:
                    self.first_tokens.for_options(options)
                except SharedFirstToken as exc:
                    raise UsageError(
                        f"{tree.name}: node {node.id}: {exc} for model {self.model_id!r}; the VLM server backend "
                        "reads an option from its first token only: reword the options") from None


def image_data_url(image) -> str:
    """The image as a PNG data URL (lossless, so the server sees the pixels the in-process model sees)."""
    if not hasattr(image, "save"):
        raise AnswererError("the VLM server answerer needs a PIL image")
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
