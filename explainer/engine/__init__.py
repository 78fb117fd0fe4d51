"""The traversal engine and its typed events."""

from explainer.engine.events import (
    AnswerInferred, Event, FindingMade, FindingWithdrawn, ProbeMeasured, QuestionAnswered, RegionLocated, RoundFinished, RoundStarted,
    StepLimitReached, WalkFinished, WalkStarted,
)
from explainer.engine.runner import DEFAULT_MAX_STEPS, Finding, TreeRunner, WalkResult

__all__ = [
    "AnswerInferred", "ProbeMeasured", "DEFAULT_MAX_STEPS", "Event", "Finding", "FindingMade", "FindingWithdrawn",
    "QuestionAnswered", "RegionLocated", "RoundFinished", "RoundStarted", "StepLimitReached", "TreeRunner", "WalkFinished",
    "WalkResult", "WalkStarted",
]
