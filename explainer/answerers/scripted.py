"""The scripted answerer: answers from a YAML/JSON file and records every call.

File format::

    answers:            # by node id
      class: cat        # a choice: the option
      face: yes         # a yes/no question: yes/no or a probability
      eyes: 0.8
    follow_ups:         # by the id of the artifact node that asks them
      ears: tail
    regions:            # a tree's ask_vlm regions, by name: [x0, y0, x1, y1] in pixels, or none
      eyes: [40, 30, 90, 50]
      hair: none
    defaults:           # for nodes not listed (each may be 'error')
      yes_no: no
      choice: error
      follow_up: none
      locate: none      # regions not listed: no box (the walk falls back); 'error' stops
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from explainer.answerers.base import (
    AnswererBase,
    ChoiceAnswer,
    ChoiceQuery,
    FollowUpAnswer,
    FollowUpQuery,
    LocateAnswer,
    LocateQuery,
    YesNoAnswer,
    YesNoQuery,
)
from explainer.errors import UsageError
from explainer.safe_io import read_text_capped

_WORDS = {"yes": 1.0, "y": 1.0, "true": 1.0, "no": 0.0, "n": 0.0, "false": 0.0}


@dataclass(frozen=True)
class Call:
    """One batch the engine sent: its kind and the nodes in it, in order."""

    kind: str
    node_ids: tuple[str, ...]
    prompts: tuple[str, ...]


def box_problem(value: Any) -> str | None:
    """Why ``value`` is not a scripted box (``[x0, y0, x1, y1]``, integers, x0 < x1, y0 < y1, or ``none``)."""
    if isinstance(value, str) and value.strip().lower() == "none":
        return None
    if not isinstance(value, list) or len(value) != 4 or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return f"a box is [x0, y0, x1, y1] (four integers, pixels) or none, not {value!r}"
    x0, y0, x1, y1 = value
    if min(value) < 0 or x1 <= x0 or y1 <= y0:
        return f"a box needs 0 <= x0 < x1 and 0 <= y0 < y1, not {value!r}"
    return None


def _p_yes(value: Any, where: str) -> float:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)) and 0.0 <= float(value) <= 1.0:
        return float(value)
    if isinstance(value, str) and value.strip().lower() in _WORDS:
        return _WORDS[value.strip().lower()]
    raise UsageError(f"{where}: a yes/no answer must be yes, no or a probability in [0, 1], not {value!r}")


class ScriptedAnswerer(AnswererBase):
    name = "scripted"

    def __init__(self, answers: Mapping[str, Any], defaults: Mapping[str, Any] | None = None, source: str = "script",
                 follow_ups: Mapping[str, Any] | None = None, regions: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.answers = dict(answers)
        self.regions = dict(regions or {})
        self.follow_up_answers = dict(follow_ups or {})
        self.defaults = {"yes_no": "no", "choice": "error", "follow_up": "none", "locate": "none", **(defaults or {})}
        self.source = source
        self.calls: list[Call] = []

    @classmethod
    def from_file(cls, path: str | Path) -> "ScriptedAnswerer":
        try:
            data = yaml.safe_load(read_text_capped(path, what="answers file"))  # JSON is YAML too
        except yaml.YAMLError as exc:
            raise UsageError(f"{path}: not valid YAML/JSON: {str(exc).splitlines()[0]}") from None
        keys = ("answers", "follow_ups", "regions", "defaults")
        if not isinstance(data, dict) or not all(isinstance(data.get(k) or {}, dict) for k in keys):
            raise UsageError(f"{path}: an answers file is a mapping with 'answers' (node id -> answer), 'follow_ups', "
                             f"'regions' and 'defaults'")
        unknown = set(data) - set(keys)
        if unknown:
            raise UsageError(f"{path}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; expected {', '.join(keys)}")
        regions = {str(k): v for k, v in (data.get("regions") or {}).items()}
        for name, value in regions.items():
            why = box_problem(value)
            if why:
                raise UsageError(f"{path}: regions.{name}: {why}")
        return cls({str(k): v for k, v in (data.get("answers") or {}).items()}, data.get("defaults") or {}, str(path),
                   {str(k): v for k, v in (data.get("follow_ups") or {}).items()}, regions)

    def _lookup(self, kind: str, node_id: str) -> Any:
        table = self.follow_up_answers if kind == "follow_up" else self.answers
        if node_id in table:
            return table[node_id]
        default = self.defaults.get(kind, "error")
        if default == "error":
            raise UsageError(f"{self.source}: no scripted answer for {kind.replace('_', '/')} node '{node_id}'")
        return default

    def yes_no(self, queries: Sequence[YesNoQuery]) -> list[YesNoAnswer]:
        self.calls.append(Call("yes_no", tuple(q.node_id for q in queries), tuple(q.prompt for q in queries)))
        return [YesNoAnswer(_p_yes(self._lookup("yes_no", q.node_id), f"{self.source}: {q.node_id}")) for q in queries]

    def choose(self, queries: Sequence[ChoiceQuery]) -> list[ChoiceAnswer]:
        self.calls.append(Call("choice", tuple(q.node_id for q in queries), tuple(q.prompt for q in queries)))
        out = []
        for q in queries:
            value = self._lookup("choice", q.node_id)
            pick = q.options[0] if value == "first" else str(value)
            if pick not in q.options:
                raise UsageError(f"{self.source}: answer '{pick}' for '{q.node_id}' is not one of its options ({', '.join(q.options)})")
            out.append(ChoiceAnswer({o: float(o == pick) for o in q.options}))
        return out

    def follow_up(self, queries: Sequence[FollowUpQuery]) -> list[FollowUpAnswer]:
        self.calls.append(Call("follow_up", tuple(q.node_id for q in queries), tuple(q.prompt for q in queries)))
        out = []
        for q in queries:
            value = self._lookup("follow_up", q.node_id)
            # YAML reads a bare yes/no as a boolean; a follow-up wants the word back.
            out.append(FollowUpAnswer(("yes" if value else "no") if isinstance(value, bool) else str(value)))
        return out

    def locate(self, queries: Sequence[LocateQuery]) -> list[LocateAnswer]:
        """The scripted box of each region (clamped to the image when its size is known), or none."""
        self.calls.append(Call("locate", tuple(q.region for q in queries), tuple(q.prompt for q in queries)))
        out = []
        for q in queries:
            if q.region in self.regions:
                value = self.regions[q.region]
            elif self.defaults.get("locate", "none") == "error":
                raise UsageError(f"{self.source}: no scripted box for region '{q.region}'")
            else:
                out.append(LocateAnswer(None, "", f"{self.source} gives no box for region '{q.region}'"))
                continue
            if isinstance(value, str):  # none (checked when the file was read)
                out.append(LocateAnswer(None, value, f"{self.source} says region '{q.region}' is not in the image"))
                continue
            x0, y0, x1, y1 = (int(v) for v in value)
            if q.width and q.height:
                x0, x1 = min(x0, q.width), min(x1, q.width)
                y0, y1 = min(y0, q.height), min(y1, q.height)
            if x1 <= x0 or y1 <= y0:
                out.append(LocateAnswer(None, str(value), f"the scripted box {value} of region '{q.region}' lies "
                                                          f"outside the {q.width}x{q.height} image"))
            else:
                out.append(LocateAnswer((x0, y0, x1, y1), str(value)))
        return out
