"""Answerers: the things the traversal engine asks its questions."""

from explainer.answerers.base import (
    Answerer,
    AnswererBase,
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

__all__ = [
    "Answerer",
    "AnswererBase",
    "AnswererError",
    "AnswererStats",
    "ChoiceAnswer",
    "ChoiceQuery",
    "FollowUpAnswer",
    "FollowUpQuery",
    "ImageContext",
    "YesNoAnswer",
    "YesNoQuery",
]
