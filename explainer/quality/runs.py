"""A run to score: an ``--out`` folder (its ``results.jsonl``, else its ``task2.json``) or a task-2 file.

``results.jsonl`` is preferred: it holds every question with its P(yes), which
the precision-recall curve, the gating loss and ``explain calibrate`` need, and
it says which images the run covered. A ``task2.json`` lists only the images
with findings, so every gold image it does not list counts as "nothing found".

Nothing is dropped silently: each record not scored is counted under its reason.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from explainer.errors import UsageError
from explainer.quality.gold import Gold, json_array_entries
from explainer.safe_io import MAX_TEXT_BYTES, read_text_capped
from explainer.trees.catalogue import Catalogue

# results.jsonl carries every question of every image: allow more than a config file.
MAX_RESULTS_BYTES = 64 * MAX_TEXT_BYTES


@dataclass
class ImageRecord:
    index: int
    findings: dict[str, str | None]  # artifact -> region the finding was made in (None: unknown)
    questions: list[dict[str, Any]] = field(default_factory=list)
    obj: str | None = None
    region: str | None = None
    predicted_real: bool = False  # its findings were dropped, as task2.json drops them


@dataclass
class Run:
    name: str
    source: str
    kind: str  # "results" (results.jsonl) or "task2"
    images: dict[int, ImageRecord]
    skipped: Counter = field(default_factory=Counter)
    tree: str | None = None  # the tree the results name, when they do
    calibration: dict[str, Any] | None = None

    @property
    def has_questions(self) -> bool:
        return self.kind == "results"

    def covers(self, index: int) -> bool:
        # a task-2 file lists only images with findings: every other image was explained with none
        return self.kind == "task2" or index in self.images

    def record(self, index: int) -> ImageRecord:
        return self.images.get(index) or ImageRecord(index, {})


def _check_artifacts(names: list[str], catalogue: Catalogue, where: str) -> None:
    for name in names:
        if name not in catalogue:
            close = catalogue.suggest(str(name))
            hint = f" (did you mean '{close}'?)" if close else ""
            raise UsageError(f"{where}: unknown artifact '{name}'{hint}")


def _load_task2(path: Path, name: str, gold: Gold, catalogue: Catalogue) -> Run:
    text = read_text_capped(path, what="task-2 file")
    run = Run(name, str(path), "task2", {})
    for line, entry in json_array_entries(text, str(path)):
        where = f"{path}:{line}"
        if not isinstance(entry, dict) or not isinstance(entry.get("explanation"), dict):
            raise UsageError(f"{where}: a task-2 entry is {{\"index\": N, \"explanation\": {{...}}}}")
        index = entry.get("index")
        if isinstance(index, bool) or not isinstance(index, int):
            raise UsageError(f"{where}: missing or non-integer 'index'")
        _check_artifacts(list(entry["explanation"]), catalogue, where)
        if index in run.images:
            raise UsageError(f"{where}: index {index} appears twice")
        if index not in gold.images:
            run.skipped["index not in the gold file"] += 1
            continue
        run.images[index] = ImageRecord(index, {a: None for a in entry["explanation"]})
    return run


def _load_results(path: Path, name: str, gold: Gold, catalogue: Catalogue) -> Run:
    text = read_text_capped(path, MAX_RESULTS_BYTES, what="results file")
    numbered, unreadable = [], 0
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            numbered.append((n, json.loads(line)))
        except json.JSONDecodeError:
            unreadable += 1
    run = records_to_run(name, str(path), numbered, gold, catalogue)
    if unreadable:
        run.skipped["unreadable line (a killed run's last line?)"] += unreadable
    return run


def records_to_run(name: str, source: str, numbered: Iterable[tuple[int, Any]], gold: Gold,
                   catalogue: Catalogue) -> Run:
    """A run from results.jsonl records (each with its line number, for messages)."""
    run = Run(name, source, "results", {})
    trees, calibrations = set(), []
    for n, record in numbered:
        if not isinstance(record, dict):
            raise UsageError(f"{source}:{n}: a results line is a JSON object")
        if record.get("error"):
            run.skipped["image failed in the run"] += 1
            continue
        index = record.get("index")
        if index is None:
            run.skipped["no index (no number in the file name)"] += 1
            continue
        if index not in gold.images:
            run.skipped["index not in the gold file"] += 1
            continue
        if index in run.images:
            raise UsageError(f"{source}:{n}: index {index} appears twice (two files with the same number?)")
        findings = record.get("findings") or []
        _check_artifacts([f.get("artifact") for f in findings], catalogue, f"{source}:{n}")
        real = record.get("verdict") == "real"
        if real and findings:
            # task2.json carries no explanation for an image predicted real: score it the same way
            run.skipped["predicted real: its findings are not part of task 2"] += 1
        found: dict[str, str | None] = {}
        for f in [] if real else findings:
            found.setdefault(f["artifact"], f.get("region"))
        run.images[index] = ImageRecord(index, found, list(record.get("questions") or []), record.get("obj"),
                                        record.get("region"), real)
        if record.get("tree"):
            trees.add(record["tree"])
        if record.get("calibration"):
            calibrations.append(record["calibration"])
    if len(trees) > 1:
        raise UsageError(f"{source}: results from several trees ({', '.join(sorted(trees))}); score them separately")
    run.tree = next(iter(trees), None)
    run.calibration = calibrations[0] if calibrations else None
    return run


def load_run(path: str | Path, gold: Gold, catalogue: Catalogue, name: str | None = None) -> Run:
    """Read a run: a folder with results.jsonl or task2.json, a results.jsonl, or a task2.json."""
    p = Path(path)
    label = name or (p.name if p.is_dir() else (p.parent.name if p.name in ("results.jsonl", "task2.json")
                                                 else p.stem))
    if p.is_dir():
        for candidate, loader in (("results.jsonl", _load_results), ("task2.json", _load_task2)):
            if (p / candidate).exists():
                return loader(p / candidate, label, gold, catalogue)
        raise UsageError(f"{p}: no results.jsonl or task2.json in this folder (is it an `explain --out` folder?)")
    if not p.exists():
        raise UsageError(f"{p}: run not found")
    if p.suffix == ".jsonl":
        return _load_results(p, label, gold, catalogue)
    if p.suffix == ".json":
        return _load_task2(p, label, gold, catalogue)
    raise UsageError(f"{p}: a run is an --out folder, a results.jsonl or a task2.json")
