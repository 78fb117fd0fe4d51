"""The scripted answerer: answers from a YAML/JSON file and records every call.

File format::

    answers:            # by node id
      class: cat        # a choice: the option
      face: yes         # a yes/no question: yes/no or a probability
      eyes: 0.8
    follow_ups:         # by the id of the artifact node that asks them
      ears: tail
    defaults:           # for nodes not listed (each may be 'error')
      yes_no: no
      choice: error
      follow_up: none
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
                 follow_ups: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.answers = dict(answers)
        self.follow_up_answers = dict(follow_ups or {})
        self.defaults = {"yes_no": "no", "choice": "error", "follow_up": "none", **(defaults or {})}
        self.source = source
        self.calls: list[Call] = []

    @classmethod
    def from_file(cls, path: str | Path) -> "ScriptedAnswerer":
        try:
            data = yaml.safe_load(read_text_capped(path, what="answers file"))  # JSON is YAML too
        except yaml.YAMLError as exc:
            raise UsageError(f"{path}: not valid YAML/JSON: {str(exc).splitlines()[0]}") from None
        if not isinstance(data, dict) or not all(isinstance(data.get(k) or {}, dict) for k in ("answers", "follow_ups", "defaults")):
            raise UsageError(f"{path}: an answers file is a mapping with 'answers' (node id -> answer), 'follow_ups' and 'defaults'")
        unknown = set(data) - {"answers", "follow_ups", "defaults"}
        if unknown:
            raise UsageError(f"{path}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; expected 'answers', 'follow_ups' and 'defaults'")
        return cls({str(k): v for k, v in (data.get("answers") or {}).items()}, data.get("defaults") or {}, str(path),
                   {str(k): v for k, v in (data.get("follow_ups") or {}).items()})

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
