"""Gold labels for explanations: which catalogue artifacts a person saw in each image.

Two formats are read:

* the challenge's task-2 JSON, ``[{"index": 17, "explanation": {"<catalogue name>": "<sentence>"}}]``
  (an empty ``explanation`` marks an image with nothing labelled);
* JSONL, one image a line: ``{"image": "17.png", "artifacts": [...], "regions": {"<name>": "face"}}``
  (``"index": 17`` may stand for ``"image"``; ``regions`` is optional).

Every problem is a :class:`UsageError` naming the file and the line: a gold file
that is silently half-read would make every number computed from it wrong.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from explainer.errors import UsageError
from explainer.safe_io import read_text_capped
from explainer.trees.catalogue import Catalogue

MAX_GOLD_IMAGES = 1_000_000
_NUMBER = re.compile(r"\d+")


@dataclass(frozen=True)
class GoldImage:
    index: int
    artifacts: frozenset[str]
    regions: dict[str, str] = field(default_factory=dict)  # artifact -> region, where labelled
    line: int = 0


@dataclass
class Gold:
    source: str
    images: dict[int, GoldImage]

    def __len__(self) -> int:
        return len(self.images)


def _index_of_image(name: str) -> int | None:
    found = _NUMBER.findall(Path(name).stem)
    return int(found[-1]) if found else None


def _line_at(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def json_array_entries(text: str, source: str) -> list[tuple[int, Any]]:
    """The elements of a top-level JSON array, each with the line it starts on."""
    decoder = json.JSONDecoder()
    try:
        json.loads(text)  # reports the first syntax error with its line
    except json.JSONDecodeError as exc:
        raise UsageError(f"{source}:{exc.lineno}: malformed JSON: {exc.msg}") from None
    pos = len(text) - len(text.lstrip())
    if not text[pos:].startswith("["):
        raise UsageError(f"{source}:{_line_at(text, pos)}: a task-2 gold file is a JSON list of "
                         '{"index": N, "explanation": {...}} entries')
    pos += 1
    out: list[tuple[int, Any]] = []
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if text[pos] == "]":
            return out
        value, end = decoder.raw_decode(text, pos)
        out.append((_line_at(text, pos), value))
        pos = end


def _check_names(names: list[Any], catalogue: Catalogue, where: str) -> list[str]:
    for name in names:
        if not isinstance(name, str):
            raise UsageError(f"{where}: artifact names are strings, not {json.dumps(name)}")
        if name not in catalogue:
            close = catalogue.suggest(name)
            hint = f" (did you mean '{close}'?)" if close else ""
            raise UsageError(f"{where}: unknown artifact '{name}'{hint}; names come from the catalogue")
    return list(names)


def _index(entry: dict, where: str) -> int:
    if "index" in entry:
        value = entry["index"]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise UsageError(f"{where}: 'index' must be a non-negative integer, not {json.dumps(value)}")
        return value
    image = entry.get("image")
    if image is None:
        raise UsageError(f"{where}: missing 'index' (or 'image' with the number in its file name)")
    if not isinstance(image, str):
        raise UsageError(f"{where}: 'image' must be a file name, not {json.dumps(image)}")
    index = _index_of_image(image)
    if index is None:
        raise UsageError(f"{where}: image '{image}' has no number in its name, so it has no index; give 'index'")
    return index


def _regions(entry: dict, artifacts: list[str], where: str) -> dict[str, str]:
    regions = entry.get("regions", {})
    if regions is None:
        return {}
    if not isinstance(regions, dict):
        raise UsageError(f"{where}: 'regions' must map artifact names to a region, e.g. "
                         '{"Texture repetition patterns": "background"}')
    for name, region in regions.items():
        if name not in artifacts:
            raise UsageError(f"{where}: 'regions' names '{name}', which is not among this image's artifacts")
        if not isinstance(region, str) or not region.strip():
            raise UsageError(f"{where}: the region of '{name}' must be a non-empty string")
    return {k: v.strip() for k, v in regions.items()}


def _entry(entry: Any, catalogue: Catalogue, where: str, line: int, jsonl: bool) -> GoldImage:
    if not isinstance(entry, dict):
        raise UsageError(f"{where}: each entry is a JSON object, not {type(entry).__name__}")
    index = _index(entry, where)
    if "artifacts" in entry:
        names = entry["artifacts"]
        if not isinstance(names, list):
            raise UsageError(f"{where}: 'artifacts' must be a list of catalogue names")
    elif "explanation" in entry:
        explanation = entry["explanation"]
        if not isinstance(explanation, dict):
            raise UsageError(f"{where}: 'explanation' must map catalogue names to sentences")
        names = list(explanation)
    else:
        wanted = "'artifacts'" if jsonl else "'explanation'"
        raise UsageError(f"{where}: missing {wanted} (use an empty one for an image with nothing labelled)")
    names = _check_names(names, catalogue, where)
    if len(set(names)) != len(names):
        raise UsageError(f"{where}: an artifact is listed twice")
    return GoldImage(index, frozenset(names), _regions(entry, names, where), line)


def load_gold(path: str | Path, catalogue: Catalogue) -> Gold:
    """Read and check a gold file (task-2 JSON or JSONL); refuse it whole at its first problem."""
    text = read_text_capped(path, what="gold file")
    source = str(path)
    stripped = text.lstrip()
    if not stripped:
        raise UsageError(f"{source}: gold file is empty")
    jsonl = not stripped.startswith("[")
    entries: list[tuple[int, Any]] = []
    if jsonl:
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                entries.append((n, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise UsageError(f"{source}:{n}: malformed JSON line: {exc.msg} (column {exc.colno})") from None
    else:
        entries = json_array_entries(text, source)
    if len(entries) > MAX_GOLD_IMAGES:
        raise UsageError(f"{source}: {len(entries):,} entries, over the limit of {MAX_GOLD_IMAGES:,}")
    images: dict[int, GoldImage] = {}
    for line, entry in entries:
        image = _entry(entry, catalogue, f"{source}:{line}", line, jsonl)
        if image.index in images:
            raise UsageError(f"{source}:{line}: index {image.index} is labelled twice (first on line "
                             f"{images[image.index].line})")
        images[image.index] = image
    if not images:
        raise UsageError(f"{source}: gold file has no entries")
    return Gold(source, images)
