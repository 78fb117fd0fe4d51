"""The contract between the traversal engine and whatever answers its questions.

The engine never talks to a model directly. It hands an *answerer* batches of
rendered prompts, one batch per sequential round, and reads back probabilities.
Everything that answers — a script, an oracle, a person, a vision-language
model — implements :class:`Answerer`.

Three kinds of query exist:

* :class:`YesNoQuery`  → :class:`YesNoAnswer`  (P(yes))
* :class:`ChoiceQuery` → :class:`ChoiceAnswer` (a probability per option)
* :class:`FollowUpQuery` → :class:`FollowUpAnswer` (one short word)

and one optional call, ``locate(query: LocateQuery) -> LocateAnswer``: a box
around what a tree's ``ask_vlm`` region names (``regions:``). An answerer
without it cannot locate; the walk then uses the region's fallback and says so.

Each query carries the id of the tree node that asked it and the artifacts the
question leads to, so answerers that need to know *why* a question is asked
(the oracle, the scripted answerer's recordings) need no access to the graph.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable


@dataclass(frozen=True)
class ImageContext:
    """What an answerer may look at for one image.

    ``image`` is what the VLM is shown (a PIL image, usually the super-resolved
    image with the Grad-CAM box drawn in red); it is ``None`` for answerers
    that need no pixels. ``facts`` carries what is already known about the
    image (e.g. ``{"obj": "cat"}``, the true artifacts for the oracle).
    """

    image: Any = None
    image_id: str = ""
    facts: dict[str, Any] = field(default_factory=dict)
    # For probes: the input image as the user gave it (before super-resolution,
    # which adds smoothness and periodic spectral replicas of its own) and the
    # foreground mask (bool H×W, True on the object, resized as needed).
    pixels: Any = None
    mask: Any = None
    # Said before every question about this image (the tree's preamble). A model
    # answerer encodes it once with the image; its prompts do not repeat it.
    preamble: str = ""
    # The detector's box (x0, y0, x1, y1) in pixels of ``image`` (drawn on it in red), or None: a tree's
    # `detector_box` regions are located here.
    roi_box: tuple[int, int, int, int] | None = None


@dataclass(frozen=True)
class YesNoQuery:
    node_id: str
    prompt: str
    # Catalogue names reachable through this question's if_yes branch for the
    # current image's scope; lets an oracle answer as a perfect model would.
    leads_to: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ChoiceQuery:
    node_id: str
    prompt: str
    options: tuple[str, ...]
    variable: str = ""  # the scope variable the choice binds, e.g. "obj"
    # Per option, the catalogue names reachable by taking it (for the oracle).
    leads_to: tuple[frozenset[str], ...] = ()


@dataclass(frozen=True)
class FollowUpQuery:
    node_id: str
    prompt: str
    # Words the answer must be one of (always including the withdraw word), or
    # None for a free single word.
    allowed: tuple[str, ...] | None = None
    max_new_tokens: int = 4
    artifact: str = ""
    withdraw: str = "none"  # the word that withdraws the finding
    free_text: bool = False  # return the whole generated text (a sentence), not its first word


@dataclass(frozen=True)
class LocateQuery:
    """Where is ``prompt`` (e.g. "the eyes") in the image? ``region`` is the tree's name for it.

    ``width`` / ``height``: the size of the image the answerer is shown, in
    pixels (0 when the walk has no image); a box is in that frame.
    """

    region: str
    prompt: str
    width: int = 0
    height: int = 0


@dataclass(frozen=True)
class LocateAnswer:
    box: tuple[int, int, int, int] | None  # x0, y0, x1, y1 in pixels, x0 < x1 and y0 < y1; None: not found
    text: str = ""  # what the answerer said, as given
    why: str = ""  # when ``box`` is None: why (not in the image, not a box, no such answer)
    tokens: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class YesNoAnswer:
    p_yes: float
    # Probability mass the model put on any yes/no token; low mass means the
    # model is not really answering yes/no. 1.0 for non-model answerers.
    mass: float = 1.0
    tokens: int = 0  # tokens processed for this question (beyond a cached prefix)
    seconds: float = 0.0


@dataclass(frozen=True)
class ChoiceAnswer:
    probs: dict[str, float]
    tokens: int = 0
    seconds: float = 0.0

    @property
    def best(self) -> str:
        return max(self.probs, key=self.probs.__getitem__)


@dataclass(frozen=True)
class FollowUpAnswer:
    text: str
    tokens: int = 0
    seconds: float = 0.0


@dataclass
class AnswererStats:
    """Counters an answerer keeps for the image being walked (reset by begin_image)."""

    forward_passes: int = 0
    tokens: int = 0
    prefix_tokens: int = 0
    prefix_seconds: float = 0.0
    model_seconds: float = 0.0  # time inside model forward passes / generation


@runtime_checkable
class Answerer(Protocol):
    """What the engine needs from an answerer.

    Calls for one image are bracketed by :meth:`begin_image` / :meth:`end_image`
    so a model can encode the image once and reuse it. Each ``*_batch`` call is
    one round of the frontier: everything in it was ready at the same time and
    may be computed together. Answers come back in query order.
    """

    name: str
    stats: AnswererStats

    def begin_image(self, context: ImageContext) -> None: ...

    def yes_no(self, queries: Sequence[YesNoQuery]) -> list[YesNoAnswer]: ...

    def choose(self, queries: Sequence[ChoiceQuery]) -> list[ChoiceAnswer]: ...

    def follow_up(self, queries: Sequence[FollowUpQuery]) -> list[FollowUpAnswer]: ...

    def end_image(self) -> None: ...


class AnswererBase:
    """Convenience base: no-op image bracketing and fresh stats per image."""

    name = "base"

    def __init__(self) -> None:
        self.stats = AnswererStats()
        self.context: ImageContext | None = None

    def begin_image(self, context: ImageContext) -> None:
        self.context = context
        self.stats = AnswererStats()

    def end_image(self) -> None:
        self.context = None


# -- several images at once ----------------------------------------------------------------

@runtime_checkable
class MultiImageAnswerer(Protocol):
    """Optional extension of :class:`Answerer`: questions about several images in one call.

    The engine (``TreeRunner.run_many``) opens images with :meth:`begin_images`,
    each under a *slot* number it chooses (unique among the images open at that
    moment; a slot is reused once its image is closed). Every round it sends the
    ready questions of ALL open images as one list of ``(slot, query)`` pairs;
    answers come back in the order of the pairs. Images finish at different
    rounds: the engine closes them with :meth:`end_images` and may open new ones
    while others are still open (continuous batching), never more than
    ``max_images`` at once. :meth:`image_stats` is one open image's counters
    (as ``stats`` is for the single-image protocol); read it before closing.

    An answerer without these methods is walked one image at a time through the
    single-image protocol, which every answerer keeps.
    """

    name: str
    max_images: int

    def begin_images(self, contexts: Mapping[int, ImageContext]) -> None: ...

    def yes_no_images(self, queries: Sequence[tuple[int, YesNoQuery]]) -> list[YesNoAnswer]: ...

    def choose_images(self, queries: Sequence[tuple[int, ChoiceQuery]]) -> list[ChoiceAnswer]: ...

    def follow_up_images(self, queries: Sequence[tuple[int, FollowUpQuery]]) -> list[FollowUpAnswer]: ...

    def image_stats(self, slot: int) -> AnswererStats: ...

    def end_images(self, slots: Sequence[int]) -> None: ...


def supports_many_images(answerer: Any) -> bool:
    """True when ``answerer`` implements :class:`MultiImageAnswerer` and takes more than one image."""
    return isinstance(answerer, MultiImageAnswerer) and int(getattr(answerer, "max_images", 1)) > 1


class PerImageAnswerers:
    """:class:`MultiImageAnswerer` made of one single-image answerer per open image.

    ``factory()`` makes a fresh single-image answerer; each slot gets its own,
    and a round's questions are answered slot by slot. It computes nothing
    together (a script, an oracle or a person has nothing to share), but lets
    such answerers take part in a multi-image walk, e.g. to test that walking
    K images together gives the same walks as one at a time.
    """

    def __init__(self, factory: Callable[[ImageContext], Any], max_images: int = 8, name: str = "") -> None:
        self.factory = factory
        self.max_images = max(1, int(max_images))
        self.open: dict[int, Any] = {}
        self.name = name or "per-image"

    def answerer(self, slot: int) -> Any:
        """The single-image answerer serving ``slot`` (for probes an oracle measures)."""
        return self.open[slot]

    def begin_images(self, contexts: Mapping[int, ImageContext]) -> None:
        for slot, context in contexts.items():
            one = self.factory(context)
            one.begin_image(context)
            self.open[slot] = one

    def _by_slot(self, method: str, queries: Sequence[tuple[int, Any]]) -> list:
        answers: list = [None] * len(queries)
        order: dict[int, list[int]] = {}
        for i, (slot, _) in enumerate(queries):
            order.setdefault(slot, []).append(i)
        for slot, idx in order.items():
            got = getattr(self.open[slot], method)([queries[i][1] for i in idx])
            for i, a in zip(idx, got):
                answers[i] = a
        return answers

    def yes_no_images(self, queries):
        return self._by_slot("yes_no", queries)

    def choose_images(self, queries):
        return self._by_slot("choose", queries)

    def follow_up_images(self, queries):
        return self._by_slot("follow_up", queries)

    def image_stats(self, slot: int) -> AnswererStats:
        return self.open[slot].stats

    def end_images(self, slots: Sequence[int]) -> None:
        for slot in slots:
            self.open.pop(slot).end_image()


class AnswererError(RuntimeError):
    """An answerer could not answer (bad script, missing model...). One line, user-facing."""
