"""Locating a tree's declared regions (``regions:``) during a walk: lazily, once per image, with fallbacks.

A region is located the first time the walk visits a node about it, never
before: a region on a branch the walk does not take costs nothing. Each kind
is located from what the image already has (the whole image, the mask stage's
foreground or background, the detector's box) or by asking the answerer for a
box (``ask_vlm``). When locating fails the region's ``fallback`` is used, and
a chain that ends without a location ends at the whole image; every fallback
is a note, and a region that was not located records no box of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from explainer.answerers.base import ImageContext, LocateAnswer, LocateQuery
from explainer.trees.spec import RegionSpec
from explainer.trees.templates import ROI_WITH_BOX, ROI_WITHOUT_BOX

MIN_REGION_PIXELS = 64  # a mask region smaller than this is not located (as a probe needs at least this many)
# What {{ roi }} says for a located region of each kind, unless the tree gives `wording`.
DEFAULT_WORDING = {
    "whole": ROI_WITHOUT_BOX,
    "detector_box": ROI_WITH_BOX,  # the box is drawn in red on the image the VLM sees
    "foreground": "the main subject",
    "background": "the background",
}
WHOLE_IMAGE = "(whole image)"  # `used` when a chain ends without a location

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class LocatedRegion:
    """How one region was located for one image."""

    name: str
    locate: str  # the region's declared kind
    used: str  # the region whose location the questions use: itself, a fallback, or WHOLE_IMAGE
    located: bool  # this region itself was located (False: a fallback stands in)
    box: Box | None  # the location used, in pixels of the image the VLM sees; None: no image, or no box
    wording: str  # what {{ roi }} says in this region's prompts
    answer: str | None = None  # ask_vlm: what the answerer said


def image_size(context: ImageContext) -> tuple[int, int]:
    """(width, height) of the image the VLM is shown; (0, 0) without one."""
    image = context.image if context.image is not None else context.pixels
    if image is None:
        return 0, 0
    if hasattr(image, "size") and isinstance(image.size, tuple):  # PIL
        return int(image.size[0]), int(image.size[1])
    shape = getattr(image, "shape", None)
    return (int(shape[1]), int(shape[0])) if shape is not None and len(shape) >= 2 else (0, 0)


def _mask_box(mask: np.ndarray, width: int, height: int) -> Box:
    """The bounding box of a bool mask, scaled to the image when the mask has another size."""
    ys, xs = np.nonzero(mask)
    h, w = mask.shape[:2]
    sx, sy = (width / w, height / h) if width and height else (1.0, 1.0)
    return (int(xs.min() * sx), int(ys.min() * sy), int(np.ceil((xs.max() + 1) * sx)), int(np.ceil((ys.max() + 1) * sy)))


class RegionLocator:
    """Locates a walk's regions on first use; ``located`` keeps them in the order they were needed."""

    def __init__(self, regions: dict[str, RegionSpec], context: ImageContext,
                 locate: Callable[[LocateQuery], LocateAnswer] | None, answerer_name: str = "the answerer") -> None:
        self.regions = regions
        self.context = context
        self.locate_fn = locate
        self.answerer_name = answerer_name
        self.width, self.height = image_size(context)
        self.located: dict[str, LocatedRegion] = {}
        self.notes: list[str] = []
        self.calls = 0  # answerer locate calls made (tests count them)
        self.answers: dict[str, str] = {}  # ask_vlm: region -> what the answerer said

    def get(self, name: str) -> LocatedRegion:
        """The region, located now if this is its first use (with its fallbacks as needed)."""
        if name in self.located:
            return self.located[name]
        chain: list[str] = []
        current = name
        while True:  # iterative; the compiler refused fallback cycles, the `in chain` guard is for unvalidated trees
            spec = self.regions[current]
            chain.append(current)
            result, why = self._locate_one(spec)
            if result is not None:
                self.located[current] = result
                break
            nxt = spec.fallback
            if nxt is None or nxt in chain or nxt not in self.regions:
                self.notes.append(f"region '{current}' ({self._how(spec)}): {why}; no fallback left, so its "
                                  f"questions are about the whole image")
                result = LocatedRegion(current, spec.locate, WHOLE_IMAGE, False, self._whole_box(), ROI_WITHOUT_BOX)
                break
            self.notes.append(f"region '{current}' ({self._how(spec)}): {why}; using region '{nxt}' instead")
            if nxt in self.located:
                result = self.located[nxt]
                break
            current = nxt
        # the regions that failed on the way take the location found, marked as not their own
        for n in chain:
            if n not in self.located:
                self.located[n] = LocatedRegion(n, self.regions[n].locate, result.used, False, result.box,
                                                result.wording, self.answers.get(n))
        return self.located[name]

    def _how(self, spec: RegionSpec) -> str:
        return f"ask_vlm '{spec.prompt}'" if spec.locate == "ask_vlm" else spec.locate

    def _whole_box(self) -> Box | None:
        return (0, 0, self.width, self.height) if self.width and self.height else None

    def _found(self, spec: RegionSpec, box: Box | None, answer: str | None = None) -> LocatedRegion:
        wording = spec.wording or DEFAULT_WORDING.get(spec.locate) or spec.prompt or spec.name
        if spec.locate == "ask_vlm" and box is not None and self.width and self.height:
            # the box reaches the VLM in the words of the frame it located it in
            x0, y0, x1, y1 = box
            wording = f"{wording} in the box from ({x0}, {y0}) to ({x1}, {y1}) of this {self.width}x{self.height} image"
        return LocatedRegion(spec.name, spec.locate, spec.name, True, box, wording, answer)

    def _locate_one(self, spec: RegionSpec) -> tuple[LocatedRegion | None, str]:
        kind = spec.locate
        if kind == "whole":
            return self._found(spec, self._whole_box()), ""
        if kind == "detector_box":
            box = self.context.roi_box
            if box is None:
                return None, "no detector box (no detector checkpoint, or no image)"
            return self._found(spec, tuple(int(v) for v in box)), ""
        if kind in ("foreground", "background"):
            mask = self.context.mask
            if mask is None:
                return None, "no foreground mask (no mask stage, or no image)"
            where = np.asarray(mask, dtype=bool)
            if kind == "background":
                where = ~where
            n = int(where.sum())
            if n < MIN_REGION_PIXELS:
                return None, f"the mask gives the {kind} only {n} pixels (need {MIN_REGION_PIXELS})"
            return self._found(spec, _mask_box(where, self.width, self.height)), ""
        assert kind == "ask_vlm", kind
        if self.locate_fn is None:
            return None, f"{self.answerer_name} cannot locate regions"
        self.calls += 1
        answer = self.locate_fn(LocateQuery(spec.name, spec.prompt or spec.name, self.width, self.height))
        if answer.text:
            self.answers[spec.name] = answer.text
        if answer.box is None:
            return None, answer.why or "no box"
        return self._found(spec, answer.box, answer.text), ""


def unlocated_wording(spec: RegionSpec, roi: str) -> str:
    """What {{ roi }} says for a region the walk never located (``--ask-all``'s extra questions): its words without
    a box; a detector_box region says what ``roi`` already says (the box is drawn on the image, or there is none)."""
    if spec.locate == "detector_box":
        return spec.wording if spec.wording and roi == ROI_WITH_BOX else roi
    return spec.wording or spec.prompt or DEFAULT_WORDING[spec.locate]


def describe(name: str, info: dict) -> str:
    """One line for the terminal and HTML views: where a region was found, or what stood in for it."""
    box = f"box {tuple(info['box'])}" if info.get("box") else "no box"
    if info.get("located"):
        return f"{name}: {box} ({info.get('locate')})"
    used = "the whole image" if info.get("used") == WHOLE_IMAGE else f"region '{info.get('used')}'"
    return f"{name}: not located ({info.get('locate')}), uses {used}: {box}"
