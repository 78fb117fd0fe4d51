"""Load a YAML file safely while remembering the line of every key and value.

PyYAML's ``safe_load`` forgets where things came from, silently keeps the last
of two duplicate keys, turns a bare ``yes:`` key into ``True``, recurses once
per level of nesting, and expands aliases without limit (``&a [*b, *b, ...]``
nested ten deep is a billion items from a few hundred bytes). Tree files come
from other people, so we build the data ourselves from the parser's event
stream (libyaml's when available: it is the fast one), iteratively, with
explicit limits:

- the file is a regular file of at most :data:`MAX_TREE_BYTES`, valid UTF-8;
- at most :data:`MAX_YAML_DEPTH` levels of nesting;
- at most :data:`MAX_YAML_ALIASES` aliases, and at most :data:`MAX_YAML_NODES`
  values once aliases are counted as the copies they stand for;
- only the standard tags (``!!str``, ``!!int``, ``!!map``...); ``!!python/...``
  and any other tag is refused, on scalars, lists and mappings alike;
- one document per file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml import events as ev

from explainer.errors import UsageError
from explainer.safe_io import read_bytes_capped
from explainer.trees.problems import Problem, format_path

MAX_TREE_BYTES = 64 * 1024 * 1024  # a 200,000-node generated tree (bench/bench_trees.py) is about 25 MB
MAX_YAML_DEPTH = 64  # a tree needs about 6 levels
MAX_YAML_ALIASES = 1_000
MAX_YAML_NODES = 5_000_000  # values, aliases expanded; a 200,000-node tree has about 1.4 million

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# Plain scalars YAML 1.1 resolves to booleans; as keys they are almost always
# a branch name the author meant as text.
_BOOL_WORDS = {"yes", "no", "on", "off", "true", "false", "y", "n"}
_STR = "tag:yaml.org,2002:str"
_MERGE = "tag:yaml.org,2002:merge"
_SCALAR_TAGS = {_STR, "tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:bool",
                "tag:yaml.org,2002:null", "tag:yaml.org,2002:timestamp"}
_MAP_TAGS = {None, "!", "tag:yaml.org,2002:map"}
_SEQ_TAGS = {None, "!", "tag:yaml.org,2002:seq"}


@dataclass
class YamlDocument:
    file: str
    data: Any
    lines: dict[tuple, int] = field(default_factory=dict)  # path -> line of its key (or of the value, in lists)
    value_lines: dict[tuple, int] = field(default_factory=dict)  # path -> line where its value starts
    problems: list[Problem] = field(default_factory=list)
    # paths of bare yes:/no: keys, already reported; not "unknown keys" on top of that
    bool_keys: set[tuple] = field(default_factory=set)
    fatal: bool = False  # the file could not be read or built: what it defines is unknown

    def line(self, path: tuple) -> int:
        """Line of the deepest known prefix of ``path`` (1 when nothing is known)."""
        for n in range(len(path), -1, -1):
            if path[:n] in self.lines:
                return self.lines[path[:n]]
        return 1

    def value_line(self, path: tuple) -> int:
        """Line where the value at ``path`` starts: where a wrong type is."""
        return self.value_lines.get(path) or self.line(path)

    def problem(self, path: tuple, message: str) -> Problem:
        return Problem(self.file, self.line(path), format_path(path), message)


class _Stop(Exception):
    """The document cannot be built further; the problem is already recorded."""


_NO_KEY = object()
_DUPLICATE = object()
_MERGE_KEY = object()


@dataclass
class _Frame:
    path: tuple
    anchor: str | None
    line: int
    container: Any
    weight: int = 1
    key: Any = _NO_KEY
    key_is_merge: bool = False
    merges: list = field(default_factory=list)
    merge_line: int = 0


class _Builder:
    """Builds Python data from parser events, one event at a time (no recursion)."""

    def __init__(self, doc: YamlDocument, loader: Any) -> None:
        self.doc = doc
        self.loader = loader
        self.stack: list[_Frame] = []
        self.anchors: dict[str, tuple[Any, int]] = {}
        self.nodes = 0
        self.aliases = 0
        self.root: Any = None
        # first characters of plain scalars that may resolve to something other than a string
        self.implicit_first = set(getattr(loader, "yaml_implicit_resolvers", {})) or None

    def fail(self, line: int, path: tuple, message: str) -> None:
        self.doc.problems.append(Problem(self.doc.file, line, format_path(path), message))
        raise _Stop

    def child_path(self) -> tuple:
        if not self.stack:
            return ()
        top = self.stack[-1]
        if isinstance(top.container, list):
            return top.path + (len(top.container),)
        return top.path + ((top.key,) if top.key not in (_NO_KEY, _DUPLICATE, _MERGE_KEY) else ())

    def count(self, weight: int, line: int) -> None:
        self.nodes += weight
        if self.nodes > MAX_YAML_NODES:
            self.fail(line, self.child_path(), f"more than {MAX_YAML_NODES:,} values once aliases are expanded "
                                               f"(an alias bomb?); the limit is {MAX_YAML_NODES:,}")

    def run(self) -> Any:
        loader = self.loader
        documents = 0
        scalar_event, alias_event = ev.ScalarEvent, ev.AliasEvent
        starts = (ev.MappingStartEvent, ev.SequenceStartEvent)
        ends = (ev.MappingEndEvent, ev.SequenceEndEvent)
        while loader.check_event():
            event = loader.get_event()
            kind = type(event)
            line = event.start_mark.line + 1 if event.start_mark else 1
            if kind is scalar_event:  # the common case first: this loop is the cost of loading a big tree
                self.nodes += 1
                if self.nodes > MAX_YAML_NODES:
                    self.count(0, line)
                self.value(self.scalar(event, line), 1, line, event, is_scalar=True)
            elif kind in starts:
                self.start(event, kind is ev.MappingStartEvent, line)
            elif kind in ends:
                frame = self.stack.pop()
                if frame.merges:
                    self.apply_merges(frame)
                if frame.anchor is not None:
                    self.anchors[frame.anchor] = (frame.container, frame.weight)
                self.value(frame.container, frame.weight, frame.line, event)
            elif kind is alias_event:
                self.alias(event, line)
            elif kind is ev.DocumentStartEvent:
                documents += 1
                if documents > 1:
                    self.fail(line, (), "a tree file holds one YAML document; a second one starts here")
        return self.root

    def alias(self, event: ev.AliasEvent, line: int) -> None:
        if event.anchor not in self.anchors:
            open_anchor = any(f.anchor == event.anchor for f in self.stack)
            self.fail(line, self.child_path(), f"alias *{event.anchor} refers to "
                      + ("the node that contains it (a recursive alias)" if open_anchor else "an anchor not defined before it"))
        self.aliases += 1
        if self.aliases > MAX_YAML_ALIASES:
            self.fail(line, self.child_path(), f"more than {MAX_YAML_ALIASES:,} aliases; the limit is {MAX_YAML_ALIASES:,}")
        value, weight = self.anchors[event.anchor]
        self.count(weight, line)
        self.value(value, weight, line, event)

    def start(self, event: Any, is_map: bool, line: int) -> None:
        path = self.child_path()
        if self.stack and isinstance(self.stack[-1].container, dict) and self.stack[-1].key is _NO_KEY:
            if is_map and event.flow_style and not self.stack[-1].container:
                self.fail(line, self.stack[-1].path, "YAML reads '{{' as the start of a mapping: a value that "
                                                     "starts with '{{' must be quoted or written as a '>-' block")
            self.fail(line, path, "a key must be a plain value, not a list or mapping")
        if event.tag not in (_MAP_TAGS if is_map else _SEQ_TAGS):
            self.fail(line, path, self.tag_message(event.tag, "a mapping" if is_map else "a list"))
        if len(self.stack) >= MAX_YAML_DEPTH:
            self.fail(line, path[:6], f"nested more than {MAX_YAML_DEPTH} levels deep; the limit is {MAX_YAML_DEPTH}")
        self.count(1, line)
        self.doc.value_lines.setdefault(path, line)
        self.stack.append(_Frame(path, event.anchor, line, {} if is_map else []))

    def tag_message(self, tag: str, what: str) -> str:
        shown = tag.replace("tag:yaml.org,2002:", "!!")
        if shown.startswith("!!python/"):
            return f"tag {shown} is refused: a tree is data, it never builds Python objects"
        return f"tag {shown} is not allowed on {what}; a tree uses plain YAML values only"

    def scalar(self, event: ev.ScalarEvent, line: int) -> Any:
        tag = event.tag
        value = event.value
        if tag is None and (event.style or not value or (self.implicit_first is not None and value[0] not in self.implicit_first)):
            return value  # quoted, a block, or a plain word no implicit type starts with: a string
        if tag is None or tag == "!":
            tag = _STR if tag == "!" else self.loader.resolve(yaml.ScalarNode, event.value, event.implicit)
        if tag == _STR:
            return event.value
        if tag == _MERGE:
            return _MERGE_KEY
        if tag not in _SCALAR_TAGS:
            self.fail(line, self.child_path(), self.tag_message(tag, "a value"))
        node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
        try:
            return self.loader.yaml_constructors[tag](self.loader, node)
        except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
            self.fail(line, self.child_path(), f"cannot read {event.value!r} as {tag.rsplit(':', 1)[-1]}: {exc}")

    def value(self, value: Any, weight: int, line: int, event: Any, is_scalar: bool = False, anchored: bool = False) -> None:
        if is_scalar and getattr(event, "anchor", None) is not None:
            self.anchors[event.anchor] = (value, 1)
        if not self.stack:
            self.root = value
            return
        top = self.stack[-1]
        if value is _MERGE_KEY and not (isinstance(top.container, dict) and top.key is _NO_KEY):
            value = "<<"  # a merge key only means something as a key
        top.weight += weight
        if isinstance(top.container, list):
            path = top.path + (len(top.container),)
            self.doc.lines.setdefault(path, line)
            self.doc.value_lines.setdefault(path, line)
            top.container.append(value)
            return
        if top.key is _NO_KEY:  # this value is a key
            self.key(top, value, line, event, is_scalar)
            return
        key, top.key = top.key, _NO_KEY
        if key is _DUPLICATE:
            return
        if key is _MERGE_KEY:
            merges = value if isinstance(value, list) else [value]
            if not all(isinstance(m, dict) for m in merges):
                self.fail(line, top.path, "a merge key '<<' takes a mapping or a list of mappings")
            top.merges.extend(merges)
            return
        self.doc.value_lines.setdefault(top.path + (key,), line)
        top.container[key] = value

    def key(self, top: _Frame, key: Any, line: int, event: Any, is_scalar: bool) -> None:
        if key is _MERGE_KEY:
            top.key, top.merge_line = _MERGE_KEY, line
            return
        if not is_scalar:
            self.fail(line, top.path, "a key must be a plain value, not an alias")
        if isinstance(key, bool) and not event.style and str(event.value).lower() in _BOOL_WORDS:
            word = str(event.value)
            hint = "if_yes" if key else "if_no"
            self.doc.problems.append(Problem(
                self.doc.file, line, format_path(top.path + (word,)),
                f"bare '{word}:' key is read by YAML as the boolean {key}; name the branch '{hint}'"))
            key = word
            self.doc.bool_keys.add(top.path + (word,))
        elif not isinstance(key, (str, int)) or isinstance(key, bool):
            self.doc.problems.append(Problem(self.doc.file, line, format_path(top.path), f"key {key!r} must be a string"))
            key = str(key)
        if key in top.container:
            first = self.doc.lines.get(top.path + (key,), line)
            self.doc.problems.append(Problem(self.doc.file, line, format_path(top.path + (key,)),
                                             f"duplicate key '{key}' (first defined on line {first})"))
            top.key = _DUPLICATE
            return
        self.doc.lines[top.path + (key,)] = line
        top.key = key

    def apply_merges(self, frame: _Frame) -> None:
        # YAML merge keys: explicit keys win, then earlier merged mappings win over later ones
        for merged in frame.merges:
            for k, v in merged.items():
                if k not in frame.container:
                    frame.container[k] = v
                    self.doc.lines.setdefault(frame.path + (k,), frame.merge_line)


def _problem_text(exc: UsageError, path: str | Path) -> str:
    text = str(exc)
    prefix = f"{path}: "
    return text[len(prefix):] if text.startswith(prefix) else text


def load_yaml(path: str | Path, display_name: str | None = None, max_bytes: int = MAX_TREE_BYTES,
              what: str = "tree file") -> YamlDocument:
    """Parse ``path``; unreadable files, syntax errors and broken limits become problems, never exceptions."""
    name = display_name or str(path)
    doc = YamlDocument(file=name, data=None)
    try:
        raw = read_bytes_capped(path, max_bytes, what)
    except UsageError as exc:
        doc.problems.append(Problem(name, 1, "(file)", _problem_text(exc, path)))
        doc.fatal = True
        return doc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        doc.problems.append(Problem(name, line, "(file)",
                                    f"not valid UTF-8: byte 0x{raw[exc.start]:02x} at column {column}"))
        doc.fatal = True
        return doc
    return parse_yaml_text(text, name, doc)


def parse_yaml_text(text: str, name: str, doc: YamlDocument | None = None) -> YamlDocument:
    doc = doc or YamlDocument(file=name, data=None)
    loader = _Loader(text)
    builder = _Builder(doc, loader)
    try:
        doc.data = builder.run()
    except _Stop:
        doc.data = None
        doc.fatal = True
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        hint = ""
        lines = text.splitlines()
        source_line = lines[line - 1] if 0 < line <= len(lines) else ""
        if ": {{" in source_line or source_line.strip().startswith("- {{"):
            hint = " (a value that starts with '{{' must be quoted or written as a '>-' block)"
        doc.problems.append(Problem(name, line, "(yaml)", f"YAML syntax error: {exc.problem or exc}{hint}"))
        doc.data = None
        doc.fatal = True
    except yaml.YAMLError as exc:
        doc.problems.append(Problem(name, 1, "(yaml)", f"YAML error: {str(exc).splitlines()[0]}"))
        doc.data = None
        doc.fatal = True
    finally:
        loader.dispose()
    return doc
