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
    MultiImageAnswerer,
    PerImageAnswerers,
    YesNoAnswer,
    YesNoQuery,
    supports_many_images,
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
    "MultiImageAnswerer",
    "PerImageAnswerers",
    "supports_many_images",
    "YesNoAnswer",
    "YesNoQuery",
]
