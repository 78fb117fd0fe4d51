"""The oracle: answers as a perfect model would, given the image's class and true artifacts.

A yes/no question gets yes exactly when its yes-branch leads to a true artifact;
a choice picks the known value of its variable (or the option leading to a true
artifact); a follow-up returns the known detail word; a region's box is the one
the image's facts give (``facts["regions"]``: name -> (x0, y0, x1, y1)), if any. Used to test trees and to
count the questions a realistic image costs.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

from explainer.answerers.base import (
    AnswererBase,
    ChoiceAnswer,
    ChoiceQuery,
    FollowUpAnswer,
    FollowUpQuery,
    ImageContext,
    LocateAnswer,
    LocateQuery,
    YesNoAnswer,
    YesNoQuery,
)


class OracleAnswerer(AnswererBase):
    name = "oracle"

    def __init__(self, truth: Iterable[str] = (), facts: Mapping[str, str] | None = None,
                 details: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self.truth = frozenset(truth)
        self.facts = dict(facts or {})
        self.details = dict(details or {})

    def begin_image(self, context: ImageContext) -> None:
        super().begin_image(context)
        # An image context may carry the truth instead of the constructor.
        if "artifacts" in context.facts:
            self.truth = frozenset(context.facts["artifacts"])
        self.facts.update({k: v for k, v in context.facts.items() if isinstance(v, str)})

    def yes_no(self, queries: Sequence[YesNoQuery]) -> list[YesNoAnswer]:
        return [YesNoAnswer(1.0 if q.leads_to & self.truth else 0.0) for q in queries]

    def choose(self, queries: Sequence[ChoiceQuery]) -> list[ChoiceAnswer]:
        out = []
        for q in queries:
            pick = self.facts.get(q.variable) if q.variable else None
            if pick not in q.options:
                hits = [o for o, leads in zip(q.options, q.leads_to) if leads & self.truth]
                pick = hits[0] if hits else q.options[0]
            out.append(ChoiceAnswer({o: float(o == pick) for o in q.options}))
        return out

    def measure_probe(self, leads_to: frozenset[str], above: float | None, below: float | None) -> tuple[float, str]:
        """A measurement on the right side of the threshold: as if the probe were perfect."""
        yes = bool(leads_to & self.truth)
        if above is not None:
            return (above + 1.0 if yes else above - 1.0), "oracle"
        assert below is not None
        return (below - 1.0 if yes else below + 1.0), "oracle"

    def follow_up(self, queries: Sequence[FollowUpQuery]) -> list[FollowUpAnswer]:
        out = []
        for q in queries:
            word = self.details.get(q.artifact)
            if word is None:
                # A perfect model confirms the finding with some detail word.
                word = next((a for a in (q.allowed or ()) if a != q.withdraw), "present")
            out.append(FollowUpAnswer(word))
        return out

    def locate(self, queries: Sequence[LocateQuery]) -> list[LocateAnswer]:
        boxes = (self.context.facts.get("regions") if self.context is not None else None) or {}
        out = []
        for q in queries:
            box = boxes.get(q.region)
            out.append(LocateAnswer(tuple(int(v) for v in box), str(list(box))) if box is not None
                       else LocateAnswer(None, "", f"the oracle knows no box for region '{q.region}'"))
        return out
