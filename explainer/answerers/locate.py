"""Boxes asked of a model for a tree's ``ask_vlm`` regions: the question, and a strict parser of the answer.

A model is asked for ``x0, y0, x1, y1`` in pixels of the image it is shown. The
answer is parsed strictly: four integers (optionally in brackets or
parentheses) and nothing else, or the word ``none``. Anything else is not a
box: the walk falls back and its note quotes what the model said, so a
half-parsed guess is never passed off as a location.
"""

from __future__ import annotations

import re
import time
from typing import Callable, Sequence

from explainer.answerers.base import FollowUpAnswer, FollowUpQuery, LocateAnswer, LocateQuery

LOCATE_MAX_NEW_TOKENS = 24  # "[1023, 1023, 1023, 1023]" is 10-20 tokens in the tokenizers this project uses
_NUM = r"\s*(-?\d{1,6})\s*"
_BOX = re.compile(rf"^[\[(]?{_NUM},{_NUM},{_NUM},{_NUM}[\])]?\.?$")
_NONE = re.compile(r"^\s*none\.?\s*$", re.IGNORECASE)


def locate_question(query: LocateQuery) -> str:
    size = f"The image is {query.width}x{query.height} pixels. " if query.width and query.height else ""
    return (f"{size}Where is {query.prompt}? Answer with its bounding box as four integers x0, y0, x1, y1 "
            f"in pixels (left, top, right, bottom), or the word none if it is not in the image.")


def parse_box(text: str, width: int = 0, height: int = 0) -> tuple[tuple[int, int, int, int] | None, str]:
    """(box, why-not). The box is clamped to the image when its size is known; an empty box is no box."""
    stripped = text.strip()
    if _NONE.match(stripped):
        return None, "the model says it is not in the image"
    m = _BOX.match(stripped)
    if m is None:
        shown = stripped if len(stripped) <= 60 else stripped[:57] + "..."
        return None, f"the model's answer is not a box: {shown!r}"
    x0, y0, x1, y1 = (int(g) for g in m.groups())
    if width and height:
        x0, x1 = (min(max(v, 0), width) for v in (x0, x1))
        y0, y1 = (min(max(v, 0), height) for v in (y0, y1))
    if x1 <= x0 or y1 <= y0:
        return None, f"the model's box {stripped!r} is empty" + (" inside the image" if width and height else "")
    return (x0, y0, x1, y1), ""


def locate_by_generation(queries: Sequence[LocateQuery],
                         generate: Callable[[list[FollowUpQuery]], list[FollowUpAnswer]]) -> list[LocateAnswer]:
    """Locate through an answerer's free-text follow-up path (greedy, short), one box per query."""
    start = time.perf_counter()
    asks = [FollowUpQuery(f"(region {q.region})", locate_question(q), None, LOCATE_MAX_NEW_TOKENS, free_text=True)
            for q in queries]
    answers = generate(asks) if asks else []
    out = []
    for q, a in zip(queries, answers):
        box, why = parse_box(a.text, q.width, q.height)
        out.append(LocateAnswer(box, a.text, why, a.tokens, a.seconds or (time.perf_counter() - start) / max(1, len(queries))))
    return out


class LocatesByGeneration:
    """Mixin for model answerers: ``locate`` / ``locate_images`` through their free-text follow-up path."""

    def locate(self, queries: Sequence[LocateQuery]) -> list[LocateAnswer]:
        return locate_by_generation(queries, self.follow_up)  # type: ignore[attr-defined]

    def locate_images(self, queries: Sequence[tuple[int, LocateQuery]]) -> list[LocateAnswer]:
        slots = [slot for slot, _ in queries]
        return locate_by_generation([q for _, q in queries],
                                    lambda asks: self.follow_up_images(list(zip(slots, asks))))  # type: ignore[attr-defined]
