"""Load a YAML file safely while remembering the line of every key.

PyYAML's ``safe_load`` forgets where things came from, silently keeps the last
of two duplicate keys, and turns a bare ``yes:`` key into ``True``. Tree
authors need all three reported with a line number, so we compose the node
graph ourselves (still with the safe loader's resolvers and constructors).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from explainer.trees.problems import Problem, format_path

# Plain scalars YAML 1.1 resolves to booleans; as keys they are almost always
# a branch name the author meant as text.
_BOOL_WORDS = {"yes", "no", "on", "off", "true", "false", "y", "n"}


@dataclass
class YamlDocument:
    file: str
    data: Any
    lines: dict[tuple, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    # paths of bare yes:/no: keys, already reported; not "unknown keys" on top of that
    bool_keys: set[tuple] = field(default_factory=set)

    def line(self, path: tuple) -> int:
        """Line of the deepest known prefix of ``path`` (1 when nothing is known)."""
        for n in range(len(path), -1, -1):
            if path[:n] in self.lines:
                return self.lines[path[:n]]
        return 1

    def problem(self, path: tuple, message: str) -> Problem:
        return Problem(self.file, self.line(path), format_path(path), message)


class _Builder:
    def __init__(self, doc: YamlDocument, loader: yaml.SafeLoader) -> None:
        self.doc = doc
        self.loader = loader

    def build(self, node: yaml.Node, path: tuple) -> Any:
        self.doc.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            self.loader.flatten_mapping(node)  # honour YAML merge keys (<<)
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self.loader.construct_object(key_node, deep=True)
                key_line = key_node.start_mark.line + 1
                if isinstance(key, bool) and isinstance(key_node, yaml.ScalarNode) and not key_node.style:
                    word = str(key_node.value)
                    hint = "if_yes" if key else "if_no"
                    self.doc.problems.append(Problem(
                        self.doc.file, key_line, format_path(path + (word,)),
                        f"bare '{word}:' key is read by YAML as the boolean {key}; name the branch '{hint}'"))
                    key = word
                    self.doc.bool_keys.add(path + (word,))
                elif not isinstance(key, (str, int)):
                    self.doc.problems.append(Problem(
                        self.doc.file, key_line, format_path(path),
                        f"key {key!r} must be a string"))
                    key = str(key)
                if key in out:
                    first = self.doc.lines.get(path + (key,), key_line)
                    self.doc.problems.append(Problem(
                        self.doc.file, key_line, format_path(path + (key,)),
                        f"duplicate key '{key}' (first defined on line {first})"))
                    continue
                self.doc.lines[path + (key,)] = key_line
                out[key] = self.build(value_node, path + (key,))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, path + (i,)) for i, item in enumerate(node.value)]
        return self.loader.construct_object(node, deep=True)


def load_yaml(path: str | Path, display_name: str | None = None) -> YamlDocument:
    """Parse ``path``; syntax errors and unreadable files become problems, never exceptions."""
    name = display_name or str(path)
    doc = YamlDocument(file=name, data=None)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        doc.problems.append(Problem(name, 1, "(file)", "file not found"))
        return doc
    except (OSError, UnicodeDecodeError) as exc:
        doc.problems.append(Problem(name, 1, "(file)", f"cannot read file: {exc}"))
        return doc
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        doc.data = _Builder(doc, loader).build(node, ()) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        hint = ""
        source_line = text.splitlines()[line - 1] if 0 < line <= len(text.splitlines()) else ""
        if ": {{" in source_line or source_line.strip().startswith("- {{"):
            hint = " (a value that starts with '{{' must be quoted or written as a '>-' block)"
        doc.problems.append(Problem(name, line, "(yaml)", f"YAML syntax error: {exc.problem or exc}{hint}"))
        doc.data = None
    except yaml.YAMLError as exc:
        doc.problems.append(Problem(name, 1, "(yaml)", f"YAML error: {exc}"))
    finally:
        loader.dispose()
    return doc
