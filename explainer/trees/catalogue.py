"""The artifact catalogue: the names every finding must come from.

The default catalogue is the challenge's 70 names, verbatim, each with a
domain-neutral one-line description (explainer/data/catalogue.yaml). A tree
chooses its catalogue with the ``catalogue:`` key:

- absent: the default catalogue;
- a file path (``catalogue: faces.yaml``): that file's list replaces the default;
- a list (``catalogue: [{name: ..., description: ...}, ...]``): replaces the default;
- a mapping ``{extends: default, entries: [...]}``: the default catalogue, where
  an entry with a known name rewords that artifact and a new name is added.

Catalogue files are read like trees: regular files only, size-capped, inside
the tree's folder, every problem at its FILE:LINE.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from explainer.trees.problems import Problem, TreeError, format_path
from explainer.trees.yaml_source import YamlDocument, load_yaml, parse_yaml_text

MAX_CATALOGUE_ENTRIES = 10_000
MAX_CATALOGUE_BYTES = 8 * 1024 * 1024
ENTRY_KEYS = ("name", "description")
EXTEND_KEYS = ("extends", "entries")
DEFAULT_NAME = "default"


@dataclass(frozen=True)
class Artifact:
    index: int  # 1-based position in the catalogue
    name: str
    description: str


@dataclass(frozen=True)
class Catalogue:
    artifacts: tuple[Artifact, ...]
    source: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {a.name: a for a in self.artifacts})

    def __contains__(self, name: object) -> bool:
        return name in self._by_name  # type: ignore[attr-defined]

    def __len__(self) -> int:
        return len(self.artifacts)

    def __getitem__(self, name: str) -> Artifact:
        return self._by_name[name]  # type: ignore[attr-defined]

    @property
    def names(self) -> list[str]:
        return [a.name for a in self.artifacts]

    def suggest(self, name: str) -> str | None:
        close = difflib.get_close_matches(name, self.names, n=1, cutoff=0.6)
        return close[0] if close else None

    def extended(self, entries: list[tuple[str, str]], source: str) -> "Catalogue":
        """This catalogue with ``entries`` applied: a known name is reworded, a new one appended."""
        by_name = {a.name: a.description for a in self.artifacts}
        order = list(by_name)
        for name, description in entries:
            if name not in by_name:
                order.append(name)
            by_name[name] = description
        return Catalogue(tuple(Artifact(i, n, by_name[n]) for i, n in enumerate(order, start=1)), source)


def _entries(doc: YamlDocument, value: Any, path: tuple, problems: list[Problem]) -> list[tuple[str, str]] | None:
    """``[name | {name, description}, ...]`` → (name, description) pairs; problems at their lines."""
    def bad(p: tuple, message: str) -> None:
        problems.append(Problem(doc.file, doc.value_line(p), format_path(p), message))

    if not isinstance(value, list) or not value:
        bad(path, f"a catalogue is a non-empty list of names or {{name, description}} entries, not {type(value).__name__}")
        return None
    if len(value) > MAX_CATALOGUE_ENTRIES:
        bad(path, f"{len(value):,} entries; the limit is {MAX_CATALOGUE_ENTRIES:,}")
        return None
    out: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(value):
        p = path + (i,)
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, dict):
            bad(p, f"an entry is a name or a mapping with 'name' and 'description', not {type(entry).__name__}")
            continue
        for key in entry:
            if key not in ENTRY_KEYS:
                close = difflib.get_close_matches(str(key), ENTRY_KEYS, n=1, cutoff=0.6)
                problems.append(Problem(doc.file, doc.line(p + (key,)), format_path(p + (key,)),
                                        f"unknown key '{key}'" + (f" (did you mean '{close[0]}'?)" if close else "")))
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            bad(p + ("name",) if "name" in entry else p, "every entry needs a 'name' (a non-empty string)")
            continue
        description = entry.get("description", name)
        if not isinstance(description, str):
            bad(p + ("description",), f"must be a string, not {type(description).__name__}")
            continue
        if name in seen:
            bad(p + ("name",), f"duplicate artifact name '{name}' (first at {format_path(path + (seen[name],))})")
            continue
        seen[name] = i
        out.append((name, description))
    return out


def catalogue_from_value(doc: YamlDocument, value: Any, path: tuple, problems: list[Problem],
                         source: str, allow_file: bool = True, resolve_file=None) -> Catalogue | None:
    """The catalogue a ``catalogue:`` value describes (see the module's docstring), or None with problems."""
    if isinstance(value, str):
        if not allow_file or resolve_file is None:
            problems.append(Problem(doc.file, doc.value_line(path), format_path(path), "a catalogue file may not name another file"))
            return None
        file, shown = resolve_file(value, path)
        if file is None:
            return None
        return load_catalogue(file, shown, problems)
    if isinstance(value, list):
        entries = _entries(doc, value, path, problems)
        return None if entries is None else Catalogue(tuple(Artifact(i, n, d) for i, (n, d) in enumerate(entries, 1)), source)
    if isinstance(value, dict):
        ok = True
        for key in value:
            if key not in EXTEND_KEYS:
                close = difflib.get_close_matches(str(key), EXTEND_KEYS, n=1, cutoff=0.6)
                problems.append(Problem(doc.file, doc.line(path + (key,)), format_path(path + (key,)),
                                        f"unknown key '{key}'" + (f" (did you mean '{close[0]}'?)" if close else "")))
                ok = False
        if value.get("extends") != DEFAULT_NAME:
            problems.append(Problem(doc.file, doc.value_line(path + ("extends",)) if "extends" in value else doc.line(path),
                                    format_path(path + ("extends",)),
                                    f"a catalogue mapping extends the default catalogue: write 'extends: {DEFAULT_NAME}'"))
            ok = False
        entries = _entries(doc, value.get("entries"), path + ("entries",), problems) if "entries" in value else []
        if not ok or entries is None:
            return None
        return builtin_catalogue().extended(entries, f"{DEFAULT_NAME} + {source}")
    problems.append(Problem(doc.file, doc.value_line(path), format_path(path),
                            f"must be a file path, a list of entries or {{extends: {DEFAULT_NAME}, entries: [...]}}, "
                            f"not {type(value).__name__}"))
    return None


def load_catalogue(path: str | Path | None = None, display_name: str | None = None,
                   problems: list[Problem] | None = None) -> Catalogue | None:
    """The default catalogue (``path`` None), or a catalogue file: a list of names or {name, description}.

    With ``problems``, problems are appended to it and None is returned on failure;
    without, a :class:`TreeError` is raised.
    """
    own = problems is None
    problems = [] if own else problems
    if path is None:
        text = resources.files("explainer").joinpath("data/catalogue.yaml").read_text(encoding="utf-8")
        doc = parse_yaml_text(text, "builtin catalogue")
        source = "builtin"
    else:
        source = display_name or str(path)
        doc = load_yaml(path, source, max_bytes=MAX_CATALOGUE_BYTES, what="catalogue")
    before = len(problems)
    problems.extend(doc.problems)
    catalogue = None
    if not doc.fatal:
        data = doc.data.get("entries") if isinstance(doc.data, dict) and set(doc.data) == {"entries"} else doc.data
        catalogue = catalogue_from_value(doc, data, ("entries",) if data is not doc.data else (), problems, source,
                                         allow_file=False)
    if len(problems) > before:
        catalogue = None
        if own:
            raise TreeError(problems)
    return catalogue


_BUILTIN: Catalogue | None = None


def builtin_catalogue() -> Catalogue:
    global _BUILTIN
    if _BUILTIN is None:
        _BUILTIN = load_catalogue()
    return _BUILTIN
