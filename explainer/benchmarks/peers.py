"""What users would run instead, as answerers the bench times on the same images and model.

* :class:`DecisionPipelineAnswerer`: transformers' own ``pipeline("decision")``
  (DecisionPipeline), one call per question, the image passed as an asset.
  It scores yes/no and choices from label logits; it cannot generate, so a
  free follow-up (0.13 per image in the shipped tree) is answered by the same
  model's ``generate`` and counted with it.
* :class:`PackedAnswerer`: every question of a call in ONE sequence after the
  image, each answer read at its own position in a single forward pass (what
  DecisionPipeline does when its template takes all ``questions`` at once, with
  marks). Exact it is not: each question sees the ones before it.
  :func:`packed_difference` measures how far its answers move from the same
  questions asked one by one in the same format.
"""

from __future__ import annotations

import time
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

IMAGE_PLACEHOLDER = "[[image]]"
# Templates of these model types write no special tokens themselves (DecisionPipeline's
# sanitize_control_tokens=True then refuses them or cannot map characters to tokens).
_NO_SANITIZE = ("llava", "idefics3", "smolvlm")


class _ForwardMeter:
    """Counts and times every forward of a model (a pre-hook and a hook); tokens from input_ids."""

    def __init__(self, model, stats_of) -> None:
        self.stats_of = stats_of
        self._start = 0.0
        self._handles = [model.register_forward_pre_hook(self._pre, with_kwargs=True),
                         model.register_forward_hook(self._post)]

    def _pre(self, module, args, kwargs):
        self._start = time.perf_counter()
        ids = kwargs.get("input_ids", args[0] if args else None)
        stats = self.stats_of()
        stats.forward_passes += 1
        if ids is not None:
            stats.tokens += int(ids.numel())

    def _post(self, module, args, output):
        self.stats_of().model_seconds += time.perf_counter() - self._start

    def close(self) -> None:
        for h in self._handles:
            h.remove()


class DecisionPipelineAnswerer(AnswererBase):
    """transformers' DecisionPipeline asking the tree's questions, one pipeline call per question."""

    name = "decision-pipeline"

    def __init__(self, vlm) -> None:
        super().__init__()
        try:
            from transformers import pipeline
            from transformers.decision import DecisionConfig
        except ImportError as exc:  # transformers before the decision pipeline
            raise AnswererError(f"this transformers has no pipeline('decision') ({exc})") from None
        from explainer.answerers.hf import VLMAnswerer

        self.vlm = vlm
        config = DecisionConfig(sanitize_control_tokens=vlm.model_type not in _NO_SANITIZE)
        self.pipe = pipeline("decision", model=vlm.model, processor=vlm.processor, tokenizer=vlm.layout.tokenizer,
                             decision_config=config)
        self.generator = VLMAnswerer(vlm.model, vlm.processor, mode="generate", model_id=vlm.model_id)
        self.notes = [f"sanitize_control_tokens={config.sanitize_control_tokens}"]
        if vlm.model_type in ("idefics3", "smolvlm"):
            self.notes.append("image splitting follows the processor's own setting here (the pipeline has no switch)")
        self._meter: _ForwardMeter | None = None
        self.state = ""

    def begin_image(self, context: ImageContext) -> None:
        super().begin_image(context)
        if context.image is None:
            raise AnswererError("the decision pipeline needs an image (ImageContext.image is None)")
        self.image = context.image.convert("RGB")
        self.state = f"{IMAGE_PLACEHOLDER} {context.preamble}".strip()
        self.generator.begin_image(context)
        self._meter = _ForwardMeter(self.vlm.model, lambda: self.stats)

    def end_image(self) -> None:
        if self._meter is not None:
            self._meter.close()
            self._meter = None
        self.generator.end_image()
        super().end_image()

    def _ask(self, question: dict) -> dict:
        start = time.perf_counter()
        out = self.pipe({"state": self.state, "questions": {"q": question}, "assets": {IMAGE_PLACEHOLDER: self.image}})
        return out["q"] | {"_seconds": time.perf_counter() - start}

    def yes_no(self, queries: Sequence[YesNoQuery]) -> list[YesNoAnswer]:
        out = []
        for q in queries:
            a = self._ask({"type": "noul", "instructions": q.prompt})
            # the pipeline normalises over its two labels: no mass off them is reported
            out.append(YesNoAnswer(float(a["noul"]), 1.0, seconds=a["_seconds"]))
        return out

    def choose(self, queries: Sequence[ChoiceQuery]) -> list[ChoiceAnswer]:
        out = []
        for q in queries:
            a = self._ask({"type": "choice", "instructions": q.prompt, "criteria": {o: None for o in q.options}})
            out.append(ChoiceAnswer({o: float(a["probabilities"][o]) for o in q.options}, seconds=a["_seconds"]))
        return out

    def follow_up(self, queries: Sequence[FollowUpQuery]) -> list[FollowUpAnswer]:
        out = []
        for q in queries:
            if q.allowed:
                a = self._ask({"type": "choice", "instructions": q.prompt, "criteria": {w: None for w in q.allowed}})
                best = max(q.allowed, key=lambda w: a["probabilities"][w])
                out.append(FollowUpAnswer(best, seconds=a["_seconds"]))
            else:  # no generation in a decision pipeline: the model's generate answers (and is metered)
                out.extend(self.generator.follow_up([q]))
        return out


MARK = "\u2063MARK\u2063"  # invisible separator: never in a real question


class PackedAnswerer(AnswererBase):
    """All questions of a call in one sequence after the image; each P(yes) read at its own mark."""

    name = "direct-packed"

    def __init__(self, vlm) -> None:
        super().__init__()
        from explainer.answerers.hf import VLMAnswerer

        # the plain-mode answerer gives the chat layout and the processor inputs, and encodes nothing by itself
        self.plain = VLMAnswerer(vlm.model, vlm.processor, mode="plain", model_id=vlm.model_id)
        self.model = vlm.model
        self.packed: list[tuple[list[YesNoQuery], list[float]]] = []  # per call: the questions and packed P(yes)

    def begin_image(self, context: ImageContext) -> None:
        super().begin_image(context)
        self.plain.begin_image(context)
        self.packed = []

    def end_image(self) -> None:
        self.plain.end_image()
        super().end_image()

    def packed_text(self, prompts: Sequence[str]) -> str:
        # the mark right after "Answer:"; the next question starts after a space and a newline, which the
        # tokenisers tried keep apart from the colon (checked below in any case)
        return "".join(f"{p} Answer:{MARK} \n" for p in prompts).rstrip()

    @torch.inference_mode()
    def score(self, prompts: Sequence[str]) -> tuple[list[float], list[float], int, float]:
        """(P(yes), mass) per prompt from one forward of the packed sequence; also (tokens, seconds)."""
        layout = self.plain.layout
        full = layout.render(self.packed_text(prompts))
        pieces = full.split(MARK)
        clean = "".join(pieces)
        clean_ids = layout.ids(clean)
        ends = []
        for j in range(len(prompts)):
            head = layout.ids("".join(pieces[: j + 1]))
            if clean_ids[: len(head)] != head:
                raise AnswererError("the packed questions' tokens merge across a mark; cannot read each answer")
            ends.append(len(head))
        inputs = self.plain._inputs(clean)
        expand = int(inputs["input_ids"].shape[1]) - len(clean_ids)  # image placeholder → image tokens
        at = torch.tensor([e + expand - 1 for e in ends], device=self.model.device)
        start = time.perf_counter()
        hidden = self.model.model(**inputs, use_cache=False).last_hidden_state[0, at]
        logits = self.plain._lm_head(hidden)
        seconds = time.perf_counter() - start
        tokens = int(inputs["input_ids"].shape[1])
        self.stats.forward_passes += 1
        self.stats.tokens += tokens
        self.stats.model_seconds += seconds
        scored = [self.plain._yes_no_from_logits(row) for row in logits]
        return [p for p, _ in scored], [m for _, m in scored], tokens, seconds

    def yes_no(self, queries: Sequence[YesNoQuery]) -> list[YesNoAnswer]:
        queries = list(queries)
        if not queries:
            return []
        p_yes, mass, tokens, seconds = self.score([q.prompt for q in queries])
        self.packed.append((queries, p_yes))
        n = len(queries)
        return [YesNoAnswer(p, m, tokens=tokens // n, seconds=seconds / n) for p, m in zip(p_yes, mass)]

    def choose(self, queries: Sequence[ChoiceQuery]) -> list[ChoiceAnswer]:
        return self.plain.choose(queries)

    def follow_up(self, queries: Sequence[FollowUpQuery]) -> list[FollowUpAnswer]:
        return self.plain.follow_up(queries)


def packed_difference(answerer: PackedAnswerer, context: ImageContext) -> dict[str, float]:
    """How packed answers differ from the same questions asked alone in the same format (not timed).

    Returns the mean and max |ΔP(yes)| and the fraction of answers on the other side of 0.5.
    """
    diffs, flips = [], 0
    answerer.plain.begin_image(context)
    try:
        for queries, packed in answerer.packed:
            for q, p in zip(queries, packed):
                alone = answerer.score([q.prompt])[0][0]
                diffs.append(abs(alone - p))
                flips += (alone >= 0.5) != (p >= 0.5)
    finally:
        answerer.plain.end_image()
    if not diffs:
        return {"mean_abs": 0.0, "max_abs": 0.0, "flipped": 0.0, "questions": 0}
    return {"mean_abs": sum(diffs) / len(diffs), "max_abs": max(diffs), "flipped": flips / len(diffs),
            "questions": len(diffs)}
