"""The answers file of ``explain tree walk --answers FILE``: read safely, checked against the tree, FILE:LINE errors.

Format (YAML or JSON; JSON Schema: ``explain tree schema --answers``)::

    answers:            # by node id
      class: cat        # a choice: one of its options, or 'first'
      face: yes         # a yes/no question: yes/no, true/false or a probability in [0, 1]
      eyes: 0.8
    follow_ups:         # by the id of the artifact node that asks them: the one-word answer
      ears: tail
    regions:            # the tree's ask_vlm regions, by name: the box a model would give, or none
      eyes: [40, 30, 90, 50]   # x0, y0, x1, y1 in pixels of the image (clamped to it)
      hair: none               # not found: the walk uses the region's fallback
    defaults:           # for nodes not listed; each may be 'error' (stop and say which node)
      yes_no: no
      choice: error
      follow_up: none
      locate: none      # ask_vlm regions not listed: none (fall back), or 'error'
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from explainer.trees.compiler import CompiledTree
from explainer.trees.problems import Problem, TreeError, format_path
from explainer.trees.yaml_source import YamlDocument, load_yaml

MAX_ANSWERS_BYTES = 8 * 1024 * 1024
TOP_KEYS = ("answers", "follow_ups", "regions", "defaults")
DEFAULT_KEYS = ("yes_no", "choice", "follow_up", "locate")
_YES_NO_WORDS = {"yes", "y", "true", "no", "n", "false"}


def _yes_no_ok(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    if isinstance(value, (int, float)):
        return 0.0 <= float(value) <= 1.0
    return isinstance(value, str) and value.strip().lower() in _YES_NO_WORDS


def _suggest(word: str, choices) -> str:
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


class _Checker:
    def __init__(self, doc: YamlDocument, tree: CompiledTree) -> None:
        self.doc, self.tree = doc, tree
        self.problems: list[Problem] = list(doc.problems)

    def bad(self, path: tuple, message: str, at_value: bool = True) -> None:
        line = self.doc.value_line(path) if at_value else self.doc.line(path)
        self.problems.append(Problem(self.doc.file, line, format_path(path), message))

    def answer(self, node_id: str, value: Any) -> None:
        path = ("answers", node_id)
        if node_id not in self.tree.spec.nodes:
            self.bad(path, f"no node '{node_id}' in tree '{self.tree.name}'{_suggest(node_id, self.tree.spec.nodes)}", False)
            return
        node = self.tree.node(node_id)
        if node.kind == "ask":
            if not _yes_no_ok(value):
                self.bad(path, f"a yes/no answer is yes, no or a probability in [0, 1], not {value!r}")
        elif node.kind == "choose":
            if not isinstance(value, str) or (value != "first" and value not in node.options):
                self.bad(path, f"must be one of {', '.join(node.options)} (or 'first'), not {value!r}"
                               + (_suggest(value, node.options) if isinstance(value, str) else ""))
        else:
            self.bad(path, f"node '{node_id}' is a '{node.kind}' node; only questions and choices take answers", False)

    def follow_up(self, node_id: str, value: Any) -> None:
        path = ("follow_ups", node_id)
        node = self.tree.spec.nodes.get(node_id)
        if node is None or node.follow_up is None:
            asking = [n.id for n in self.tree.spec.nodes.values() if n.follow_up is not None]
            self.bad(path, f"no node with a follow-up is called '{node_id}'{_suggest(node_id, asking)}", False)
        elif not isinstance(value, (str, bool)):
            self.bad(path, f"a follow-up answer is one word, not {type(value).__name__} {value!r}")

    def region(self, name: str, value: Any) -> None:
        from explainer.answerers.scripted import box_problem

        path = ("regions", name)
        asked = {r.name for r in self.tree.regions.values() if r.locate == "ask_vlm"}
        if name not in asked:
            what = f"its ask_vlm regions: {', '.join(sorted(asked))}" if asked else "it has no ask_vlm regions"
            self.bad(path, f"tree '{self.tree.name}' asks for no box for region '{name}'{_suggest(name, asked)} ({what})", False)
            return
        why = box_problem(value)
        if why:
            self.bad(path, why)

    def run(self) -> dict[str, Any]:
        data = self.doc.data
        if self.doc.fatal:
            return {}
        if not isinstance(data, dict):
            self.bad((), "an answers file is a mapping with 'answers', 'follow_ups' and 'defaults'")
            return {}
        for key in data:
            if key not in TOP_KEYS:
                self.bad((key,), f"unknown key '{key}'{_suggest(str(key), TOP_KEYS)}", False)
        for key in TOP_KEYS:
            if key in data and not isinstance(data[key], dict):
                self.bad((key,), f"must be a mapping, not {type(data[key]).__name__}")
        answers = data.get("answers") if isinstance(data.get("answers"), dict) else {}
        follow_ups = data.get("follow_ups") if isinstance(data.get("follow_ups"), dict) else {}
        defaults = data.get("defaults") if isinstance(data.get("defaults"), dict) else {}
        regions = data.get("regions") if isinstance(data.get("regions"), dict) else {}
        for name, value in regions.items():
            self.region(str(name), value)
        for node_id, value in answers.items():
            self.answer(str(node_id), value)
        for node_id, value in follow_ups.items():
            self.follow_up(str(node_id), value)
        for key, value in defaults.items():
            path = ("defaults", key)
            if key not in DEFAULT_KEYS:
                self.bad(path, f"unknown key '{key}'{_suggest(str(key), DEFAULT_KEYS)}", False)
            elif key == "yes_no" and value != "error" and not _yes_no_ok(value):
                self.bad(path, f"must be yes, no, a probability or 'error', not {value!r}")
            elif key == "choice" and value not in ("error", "first"):
                self.bad(path, f"must be 'first' or 'error', not {value!r}")
            elif key == "follow_up" and not isinstance(value, (str, bool)):
                self.bad(path, f"must be a word or 'error', not {value!r}")
            elif key == "locate" and value not in ("none", "error"):
                self.bad(path, f"must be 'none' or 'error', not {value!r}")
        return {"answers": {str(k): v for k, v in answers.items()}, "follow_ups": {str(k): v for k, v in follow_ups.items()},
                "regions": {str(k): v for k, v in regions.items()}, "defaults": dict(defaults)}


def load_answers(path: str | Path, tree: CompiledTree) -> dict[str, Any]:
    """The answers file checked against ``tree``; a :class:`TreeError` lists every problem at its line."""
    doc = load_yaml(path, str(path), max_bytes=MAX_ANSWERS_BYTES, what="answers file")
    checker = _Checker(doc, tree)
    out = checker.run()
    if checker.problems:
        raise TreeError(checker.problems)
    return out
