"""Machine outputs of a batch run: results.jsonl (appended and flushed), task1.json, task2.json."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from explainer.errors import UsageError


class ResultsLog:
    """``DIR/results.jsonl``: one line per image, written as soon as it is done.

    A run killed half-way leaves every finished image on disk; ``--resume``
    reads them back and skips those files. A half-written last line (killed
    mid-write) is dropped and the image is done again.
    """

    def __init__(self, directory: Path, resume: bool = False) -> None:
        self.dir = directory
        self.path = directory / "results.jsonl"
        if directory.exists() and not directory.is_dir():
            raise UsageError(f"{directory}: --out must be a directory")
        directory.mkdir(parents=True, exist_ok=True)
        self.records: dict[str, dict[str, Any]] = {}
        if self.path.exists() and self.path.stat().st_size > 0:
            if not resume:
                raise UsageError(f"{self.path} already exists; pass --resume to continue that run or choose another --out")
            self._read()

    @staticmethod
    def key(path: Path | str) -> str:
        return str(Path(path).resolve())

    def _read(self) -> None:
        good: list[str] = []
        with self.path.open(encoding="utf-8") as fh:
            for line in fh:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # the line a killed run was writing
                self.records[self.key(record["file"])] = record
                good.append(json.dumps(record))
        # rewrite without the broken tail so the file stays valid JSONL
        self.path.write_text("".join(g + "\n" for g in good), encoding="utf-8")

    def has(self, path: Path) -> bool:
        return self.key(path) in self.records

    def append(self, report) -> None:
        record = report.to_dict()
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.records[self.key(report.file)] = record

    def ordered(self) -> list[dict[str, Any]]:
        return sorted(self.records.values(), key=lambda r: (r.get("index") is None, r.get("index") or 0, r["file"]))


def explanations_by_artifact(findings: list[dict[str, Any]]) -> dict[str, str]:
    """One entry per catalogue name, as the challenge's task2 wants; an artifact found in several regions
    keeps every finding, each with its region, instead of the first one only."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for f in findings:
        grouped.setdefault(f["artifact"], []).append(f)
    out: dict[str, str] = {}
    for name, group in grouped.items():
        texts = list(dict.fromkeys((f.get("region"), f["explanation"]) for f in group))
        if len(texts) == 1:
            out[name] = texts[0][1]
        else:
            out[name] = " ".join(f"In the {region or 'whole image'}: {text}" for region, text in texts)
    return out


def challenge_entries(records: list[dict[str, Any]]) -> tuple[list[dict], list[dict]]:
    """task1: every image with a verdict; task2: explanations of images predicted (or, with no classifier, suspected) fake."""
    task1, task2 = [], []
    for r in records:
        if r.get("error") or r.get("index") is None:
            continue
        if r.get("verdict") in ("real", "fake"):
            task1.append({"index": r["index"], "prediction": r["verdict"]})
        if r.get("verdict") in ("fake", None) and r.get("findings"):
            task2.append({"index": r["index"], "explanation": explanations_by_artifact(r["findings"])})
    return task1, task2


def write_challenge_files(log: ResultsLog) -> tuple[Path, Path]:
    task1, task2 = challenge_entries(log.ordered())
    p1, p2 = log.dir / "task1.json", log.dir / "task2.json"
    p1.write_text(json.dumps(task1, indent=1) + "\n", encoding="utf-8")
    p2.write_text(json.dumps(task2, indent=1) + "\n", encoding="utf-8")
    return p1, p2
