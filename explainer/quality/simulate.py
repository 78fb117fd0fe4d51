"""Answerers with known faults, and simulated labelled runs, to test the scores and the calibration.

:class:`FaultyAnswerer` is the oracle with faults added in log-odds: a perfect
answer is ``±logit(confidence)``; ``bias`` shifts chosen questions (towards yes
when positive), ``noise`` adds Gaussian noise, ``flip`` turns an answer round
with a fixed probability (symmetric noise), and ``miss`` makes a gate say no
on a fixed share of the images where it should say yes. On a content-free
image (``facts["content_free"]``) the image carries no evidence: the answer is
``sigmoid(bias)``, so contextual calibration can measure the bias.

Every random draw is seeded by (seed, image, node): runs are reproducible and
the same image gets the same fault under every strategy.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from explainer.answerers.base import YesNoAnswer, YesNoQuery
from explainer.answerers.oracle import OracleAnswerer
from explainer.engine import TreeRunner
from explainer.quality.askall import ask_skipped
from explainer.quality.calibration import logit, sigmoid
from explainer.safe_io import atomic_write_text
from explainer.trees.compiler import CompiledTree
from explainer.stats.tree_cost import default_p, situations


class FaultyAnswerer(OracleAnswerer):
    name = "faulty-oracle"

    def __init__(self, *, bias: Mapping[str, float] | None = None, noise: float = 0.0, flip: float = 0.0,
                 miss: Mapping[str, float] | None = None, confidence: float = 0.9, seed: int = 0) -> None:
        super().__init__()
        self.bias = dict(bias or {})
        self.noise = noise
        self.flip = flip
        self.miss = dict(miss or {})
        self.margin = logit(confidence)
        self.seed = seed

    def _rng(self, node_id: str, what: str) -> random.Random:
        image = self.context.image_id if self.context else ""
        return random.Random(f"{self.seed}|{image}|{node_id}|{what}")

    def yes_no(self, queries: Sequence[YesNoQuery]) -> list[YesNoAnswer]:
        content_free = bool(self.context and self.context.facts.get("content_free"))
        out = []
        for q in queries:
            if content_free:
                z = 0.0
            else:
                truth = bool(q.leads_to & self.truth)
                if truth and self._rng(q.node_id, "miss").random() < self.miss.get(q.node_id, 0.0):
                    truth = False
                if self.flip and self._rng(q.node_id, "flip").random() < self.flip:
                    truth = not truth
                z = self.margin if truth else -self.margin
                if self.noise:
                    z += self._rng(q.node_id, "noise").gauss(0.0, self.noise)
            out.append(YesNoAnswer(sigmoid(z + self.bias.get(q.node_id, 0.0))))
        return out


def sample_truths(tree: CompiledTree, n: int, seed: int = 0, p: float | None = None) -> list[tuple[dict[str, str], set[str]]]:
    """n images: a class and region of the tree, each applicable artifact present with probability p."""
    sits = situations(tree)
    p = default_p(sits) if p is None else p
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        sit = rng.choice(sits)
        out.append((dict(sit.vars), {a for a in sit.artifacts if rng.random() < p}))
    return out


def simulate_run(tree: CompiledTree, answerer: OracleAnswerer, truths: Sequence[tuple[dict[str, str], set[str]]],
                 *, calibration: Any = None, ask_all: bool = False, images: Sequence[Any] | None = None,
                 walker: Any = None) -> list[dict[str, Any]]:
    """Walk each simulated image; records shaped as results.jsonl lines (index = position + 1).

    ``images`` (optional) are shown to ``walker``, an answerer wrapping ``answerer``
    whose model computes (and times) every answer while ``answerer`` decides.
    """
    from explainer.answerers.base import ImageContext
    from explainer.pipeline import question_records

    records = []
    for k, (facts, truth) in enumerate(truths, start=1):
        context = ImageContext(image=images[k - 1] if images is not None else None, image_id=f"{k}.png",
                               facts={**facts, "artifacts": sorted(truth)})
        scope = {"roi": "the whole image"}
        t0 = time.perf_counter()
        walk = TreeRunner(tree, walker or answerer, calibration=calibration).run(context, scope=scope)
        questions = question_records(walk)
        if ask_all:
            questions += ask_skipped(tree, walker or answerer, context, walk, scope, calibration)
        records.append({"file": f"{k}.png", "index": k, "verdict": None, "obj": walk.scope.get("obj"),
                        "region": walk.scope.get("region"), "tree": tree.name,
                        "findings": [f.to_dict() for f in walk.findings], "questions": questions,
                        "counts": {"yes_no": walk.yes_no, "rounds": walk.rounds},
                        "timings": {"questions": time.perf_counter() - t0},
                        "calibration": calibration.describe() if calibration is not None else None})
    return records


def gold_lines(truths: Sequence[tuple[dict[str, str], set[str]]]) -> list[dict[str, Any]]:
    return [{"image": f"{k}.png", "artifacts": sorted(truth),
             "regions": {a: facts["region"] for a in sorted(truth)} if facts.get("region") else {}}
            for k, (facts, truth) in enumerate(truths, start=1)]


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
