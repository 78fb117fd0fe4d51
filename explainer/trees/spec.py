"""Typed specification of a question tree: what the YAML says, checked for shape.

The parser (parse.py) builds these from YAML; the compiler (compiler.py) checks
how they fit together and turns them into a graph. Every object remembers the
file and line it came from so later checks can point at it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from explainer.trees.catalogue import Catalogue


@dataclass(frozen=True)
class Where:
    file: str
    line: int
    path: tuple


@dataclass(frozen=True)
class Target:
    """Where a branch goes: one node, several (visited together), or a group known to hold a finding.

    ``mode == "at_least_one"``: the branch is taken only when the question
    above said yes, so at least one member must lead to a finding. Every
    applicable member but the last is asked; if they all say no, the last is
    taken as yes without asking it.
    """

    ids: tuple[str, ...]
    mode: str  # "all" | "at_least_one"
    where: Where


@dataclass(frozen=True)
class FollowUpSpec:
    prompt: str
    var: str
    allowed: tuple[str, ...] | None
    withdraw: str
    where: Where


LOCATE_KINDS = ("whole", "foreground", "background", "detector_box", "ask_vlm")


@dataclass
class RegionSpec:
    """A region a tree speaks of (``regions:``): its name, how a walk locates it, how prompts name it.

    ``locate``: ``whole`` (the image), ``foreground`` / ``background`` (the mask
    stage), ``detector_box`` (the detector's Grad-CAM box, drawn on the image the
    VLM sees) or ``ask_vlm`` (the answerer is asked for a box around ``prompt``).
    ``fallback``: the region used when locating fails (a chain ends at the whole image).
    """

    name: str
    locate: str
    where: Where
    prompt: str | None = None  # ask_vlm: what to find, e.g. "the eyes"
    wording: str | None = None  # what {{ roi }} says in prompts when the region is located; None: the kind's default
    fallback: str | None = None
    field_where: dict[str, Where] = field(default_factory=dict)

    def at(self, name: str) -> Where:
        return self.field_where.get(name, self.where)


@dataclass
class NodeSpec:
    id: str
    kind: str  # ask | choose | switch | all | artifact | probe
    where: Where
    label: str | None = None
    applies_to: tuple[str, ...] | None = None
    set: dict[str, str] = field(default_factory=dict)
    # ask
    prompt: str | None = None
    if_yes: Target | None = None
    if_no: Target | None = None
    threshold: float | None = None
    # choose
    options: dict[str, Target | None] = field(default_factory=dict)
    sets: str | None = None
    # switch
    on: str | None = None
    cases: dict[str, Target] = field(default_factory=dict)
    default: Target | None = None
    # all
    then: Target | None = None
    # probe: a measurement instead of a question; yes when the value is above / below the threshold
    probe: str | None = None
    on: str = "whole"  # object | background | whole
    above: float | None = None
    below: float | None = None
    # artifact (a leaf, or inline on an ask node: found when the answer is yes)
    artifact: str | None = None
    explain: str | None = None
    follow_up: FollowUpSpec | None = None
    # the declared region this node (and every node below it) is about; also sets the scope's `region`
    region: str | None = None
    # where each field's value sits, for error messages
    field_where: dict[str, Where] = field(default_factory=dict)

    def at(self, name: str) -> Where:
        return self.field_where.get(name, self.where)

    @property
    def asks_model(self) -> bool:
        return self.kind in ("ask", "choose")


@dataclass
class TreeSpec:
    name: str
    description: str
    # Said once per image before every question; a model answerer encodes it with the image.
    preamble: str | None
    file: str
    start: str | None
    classes: tuple[str, ...]
    groups: dict[str, tuple[str, ...]]
    vars: dict[str, str]
    inputs: tuple[str, ...]  # variables the caller must give every walk (e.g. obj)
    threshold: float
    nodes: dict[str, NodeSpec]
    catalogue: "Catalogue | None"  # None: the default catalogue
    files: tuple[str, ...]  # the main file and every included file
    where: dict[str, Where] = field(default_factory=dict)  # top-level keys
    # ids of nodes that failed to parse: references to them are not reported again
    broken: set[str] = field(default_factory=set)
    # a file failed to load: nodes it defines are unknown, so references are not checked
    incomplete: bool = False
    # included file -> the include line(s) that led to it, for messages
    included_from: dict[str, str] = field(default_factory=dict)
    group_where: dict[str, Where] = field(default_factory=dict)  # where each group is defined
    regions: dict[str, RegionSpec] = field(default_factory=dict)  # `regions:`; empty: none declared
    broken_regions: set[str] = field(default_factory=set)
