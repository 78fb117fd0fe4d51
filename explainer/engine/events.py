"""Typed events a walk emits. They feed the terminal view, the JSON output and the tests."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


@dataclass(frozen=True)
class Event:
    def to_dict(self) -> dict[str, Any]:
        return {"event": _snake(type(self).__name__), **dataclasses.asdict(self)}


@dataclass(frozen=True)
class WalkStarted(Event):
    tree: str
    image_id: str
    scope: dict[str, str]
    preamble: str = ""


@dataclass(frozen=True)
class RoundStarted(Event):
    round: int
    yes_no: int
    choices: int
    follow_ups: int


@dataclass(frozen=True)
class QuestionAnswered(Event):
    """One question and its answer: the trace's main record."""

    round: int
    node_id: str
    kind: str  # yes_no | choice | follow_up
    prompt: str
    answer: str  # "yes"/"no", the chosen option, or the follow-up word
    p_yes: float | None = None
    threshold: float | None = None
    probs: dict[str, float] | None = None
    mass: float | None = None
    branch: tuple[str, ...] = ()  # nodes this answer leads to
    tokens: int = 0
    seconds: float = 0.0
    p_calibrated: float | None = None  # P(yes) after --calibration, the value compared with the threshold


@dataclass(frozen=True)
class AnswerInferred(Event):
    """A yes/no question not asked because its answer follows from others."""

    round: int
    node_id: str
    prompt: str
    answer: str
    reason: str
    branch: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProbeMeasured(Event):
    """A measurement taken instead of a question (no model involved)."""

    round: int
    node_id: str
    probe: str
    region: str  # object | background | whole
    value: float | None  # None: it could not be measured (see note)
    answer: str  # yes | no | unknown
    above: float | None = None
    below: float | None = None
    note: str = ""
    branch: tuple[str, ...] = ()


@dataclass(frozen=True)
class FindingMade(Event):
    round: int
    node_id: str
    artifact: str
    explanation: str
    region: str | None = None
    detail: str | None = None
    p_yes: float | None = None
    value: float | None = None  # the probe's measurement, for findings made by a probe


@dataclass(frozen=True)
class FindingWithdrawn(Event):
    round: int
    node_id: str
    artifact: str
    answer: str


@dataclass(frozen=True)
class RoundFinished(Event):
    round: int
    seconds: float


@dataclass(frozen=True)
class StepLimitReached(Event):
    steps: int
    limit: int


@dataclass(frozen=True)
class WalkFinished(Event):
    findings: tuple[str, ...]
    yes_no: int
    choices: int
    follow_ups: int
    inferred: int
    rounds: int
    steps: int
    seconds: float
    truncated: bool = False
    scope: dict[str, str] = field(default_factory=dict)
    probes: int = 0


@dataclass(frozen=True)
class RegionLocated(Event):
    """A declared region located for this image, the first time the walk needed it (``regions:``)."""

    round: int
    region: str
    locate: str  # how the tree locates it: whole | foreground | background | detector_box | ask_vlm
    used: str  # the region whose location its questions use (itself when located, else a fallback)
    located: bool
    box: tuple[int, int, int, int] | None  # pixels of the image the VLM sees; None: no box
    wording: str  # what {{ roi }} says for it
    answer: str | None = None  # ask_vlm: what the answerer said
    notes: tuple[str, ...] = ()  # fallbacks and failures on the way

