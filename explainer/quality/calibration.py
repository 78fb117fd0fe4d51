"""A calibration file: per yes/no node, how to rescale the model's P(yes) and where to cut it.

YAML, one entry per node id of the tree::

    calibration: 1
    tree: cifake
    method: supervised-platt          # or supervised-isotonic, supervised-threshold, contextual
    nodes:
      face_eyes: {scaling: platt, a: 1.7, b: -2.1, threshold: 0.42}
      ears:      {scaling: isotonic, x: [0.1, 0.6, 0.9], y: [0.0, 0.5, 1.0], threshold: 0.5}
      teeth:     {scaling: contextual, prior: 0.83}
      eye_reflections: {scaling: none, threshold: 0.7}

The walk compares the calibrated P(yes) with the node's threshold (the tree's
own when the file gives none); the model's raw P(yes) stays in the record.
Files are read with the safe loader and checked whole before any walk.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from explainer.errors import UsageError
from explainer.safe_io import read_text_capped, safe_load_yaml

SCALINGS = ("none", "platt", "isotonic", "contextual")
MAX_ISOTONIC_POINTS = 10_000
_EPS = 1e-6


def logit(p: float) -> float:
    p = min(max(p, _EPS), 1 - _EPS)
    return math.log(p / (1 - p))


def sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z)) if z >= 0 else math.exp(z) / (1 + math.exp(z))


@dataclass(frozen=True)
class NodeCalibration:
    scaling: str = "none"
    threshold: float | None = None
    a: float = 1.0  # platt: sigmoid(a * logit(p) + b)
    b: float = 0.0
    x: tuple[float, ...] = ()  # isotonic: piecewise-linear through (x, y)
    y: tuple[float, ...] = ()
    prior: float = 0.5  # contextual: P(yes) on content-free inputs, divided out

    def apply(self, p: float) -> float:
        if self.scaling == "platt":
            return sigmoid(self.a * logit(p) + self.b)
        if self.scaling == "isotonic":
            return float(np.interp(p, self.x, self.y))
        if self.scaling == "contextual":
            # binary case of Zhao et al.: diag(1/prior) then renormalise = a shift in log-odds
            return sigmoid(logit(p) - logit(self.prior))
        return p

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"scaling": self.scaling}
        if self.scaling == "platt":
            out.update(a=self.a, b=self.b)
        elif self.scaling == "isotonic":
            out.update(x=list(self.x), y=list(self.y))
        elif self.scaling == "contextual":
            out["prior"] = self.prior
        if self.threshold is not None:
            out["threshold"] = self.threshold
        return out


@dataclass
class Calibration:
    nodes: dict[str, NodeCalibration]
    tree: str | None = None
    method: str = ""
    source: str = ""
    sha256: str = ""
    info: dict[str, Any] | None = None  # how it was made (kept in the file, not used by the walk)

    def adjust(self, node_id: str, p: float) -> float:
        node = self.nodes.get(node_id)
        return p if node is None else node.apply(p)

    def threshold(self, node_id: str, default: float) -> float:
        node = self.nodes.get(node_id)
        return default if node is None or node.threshold is None else node.threshold

    def check_tree(self, tree) -> None:
        """Refuse a file made for another tree: a node id it does not have is a usage error."""
        if self.tree and self.tree != tree.name:
            raise UsageError(f"{self.source}: calibration made for tree '{self.tree}', not '{tree.name}'")
        for node_id in self.nodes:
            node = tree.spec.nodes.get(node_id)
            if node is None or node.kind != "ask":
                import difflib

                close = difflib.get_close_matches(node_id, [n for n, s in tree.spec.nodes.items() if s.kind == "ask"], 1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                what = "no node" if node is None else f"a {node.kind} node, not a yes/no question"
                raise UsageError(f"{self.source}: nodes.{node_id}: tree '{tree.name}' has {what} '{node_id}'{hint}")

    def describe(self) -> dict[str, Any]:
        """What every result records about the calibration it was made with."""
        return {"file": self.source, "sha256": self.sha256, "method": self.method, "tree": self.tree,
                "nodes": len(self.nodes)}

    def to_yaml(self) -> str:
        doc: dict[str, Any] = {"calibration": 1, "tree": self.tree, "method": self.method}
        if self.info:
            doc["made_with"] = self.info
        doc["nodes"] = {k: v.to_dict() for k, v in sorted(self.nodes.items())}
        header = "# explain calibration file: per yes/no node, the P(yes) rescaling and threshold.\n"
        return header + yaml.safe_dump(doc, sort_keys=False, width=120)


def _number(value: Any, where: str, low: float | None = None, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UsageError(f"{where}: must be a finite number, not {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise UsageError(f"{where}: {value} is outside [{low}, {high}]")
    return float(value)


def _node(node_id: str, entry: Any, where: str) -> NodeCalibration:
    if not isinstance(entry, dict):
        raise UsageError(f"{where}: a node's calibration is a mapping (scaling, threshold, ...)")
    scaling = entry.get("scaling", "none")
    if scaling not in SCALINGS:
        raise UsageError(f"{where}.scaling: '{scaling}' is not one of {', '.join(SCALINGS)}")
    allowed = {"none": set(), "platt": {"a", "b"}, "isotonic": {"x", "y"}, "contextual": {"prior"}}[scaling]
    extra = set(entry) - allowed - {"scaling", "threshold", "samples", "positives"}
    if extra:
        raise UsageError(f"{where}: unknown key(s) {', '.join(sorted(map(str, extra)))} for scaling '{scaling}'")
    threshold = entry.get("threshold")
    kw: dict[str, Any] = {"scaling": scaling,
                          "threshold": None if threshold is None else _number(threshold, f"{where}.threshold", 0, 1)}
    if scaling == "platt":
        kw.update(a=_number(entry.get("a"), f"{where}.a"), b=_number(entry.get("b"), f"{where}.b"))
    elif scaling == "isotonic":
        xs, ys = entry.get("x"), entry.get("y")
        if not isinstance(xs, list) or not isinstance(ys, list) or len(xs) != len(ys) or not xs:
            raise UsageError(f"{where}: isotonic needs lists x and y of the same non-zero length")
        if len(xs) > MAX_ISOTONIC_POINTS:
            raise UsageError(f"{where}: {len(xs)} isotonic points, over the limit of {MAX_ISOTONIC_POINTS}")
        x = tuple(_number(v, f"{where}.x", 0, 1) for v in xs)
        y = tuple(_number(v, f"{where}.y", 0, 1) for v in ys)
        if any(b < a for a, b in zip(x, x[1:])) or any(b < a for a, b in zip(y, y[1:])):
            raise UsageError(f"{where}: isotonic x and y must be non-decreasing")
        kw.update(x=x, y=y)
    elif scaling == "contextual":
        kw["prior"] = _number(entry.get("prior"), f"{where}.prior", _EPS, 1 - _EPS)
    return NodeCalibration(**kw)


def load_calibration(path: str | Path) -> Calibration:
    text = read_text_capped(path, what="calibration file")  # kept: its hash identifies the file in records
    source = str(path)
    doc = safe_load_yaml(text, source)
    if not isinstance(doc, dict) or doc.get("calibration") != 1:
        raise UsageError(f"{source}: not a calibration file (expected 'calibration: 1' and 'nodes:')")
    nodes = doc.get("nodes")
    if not isinstance(nodes, dict):
        raise UsageError(f"{source}: 'nodes' must map node ids to their calibration")
    parsed = {str(k): _node(str(k), v, f"{source}: nodes.{k}") for k, v in nodes.items()}
    tree = doc.get("tree")
    return Calibration(parsed, str(tree) if tree is not None else None, str(doc.get("method", "")), source,
                       hashlib.sha256(text.encode("utf-8")).hexdigest(), doc.get("made_with"))
