"""The artifact catalogue: the 70 names every finding must come from.

The names are the challenge's, verbatim; they are data (explainer/data/catalogue.yaml),
so a tree for another domain can bring its own catalogue file.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml


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


def _parse(entries: object, source: str) -> Catalogue:
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{source}: a catalogue is a non-empty list of {{name, description}} entries")
    artifacts = []
    for i, entry in enumerate(entries, start=1):
        if isinstance(entry, str):
            entry = {"name": entry, "description": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ValueError(f"{source}: entry {i} has no 'name'")
        artifacts.append(Artifact(i, entry["name"], str(entry.get("description", entry["name"]))))
    names = [a.name for a in artifacts]
    if len(set(names)) != len(names):
        raise ValueError(f"{source}: duplicate artifact names")
    return Catalogue(tuple(artifacts), source)


def load_catalogue(path: str | Path | None = None) -> Catalogue:
    """The built-in 70-artifact catalogue, or a YAML/JSON list of names or {name, description}."""
    if path is None:
        text = resources.files("explainer").joinpath("data/catalogue.yaml").read_text(encoding="utf-8")
        return _parse(yaml.safe_load(text), "builtin")
    text = Path(path).read_text(encoding="utf-8")
    return _parse(yaml.safe_load(text), str(path))


_BUILTIN: Catalogue | None = None


def builtin_catalogue() -> Catalogue:
    global _BUILTIN
    if _BUILTIN is None:
        _BUILTIN = load_catalogue()
    return _BUILTIN
