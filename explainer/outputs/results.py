"""Machine outputs of a batch run: results.jsonl (appended and flushed), task1.json, task2.json."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

from explainer.errors import UsageError
from explainer.safe_io import append_line_durably, atomic_write_text, check_regular_file


class ResultsLog:
    """``DIR/results.jsonl``: one line per image, appended (flush + fsync) as soon as it is done.

    The file is only ever appended to: a run killed at any moment leaves every
    record it finished byte for byte. ``--resume`` reads the records back; the
    last record of a file wins (an image that failed and was retried has two).
    A last line without its newline is what a kill mid-write leaves: it is cut
    off (the file is truncated to the end of the last whole line, nothing
    before it is touched) with a warning, and that image is done again. Any
    other line that is not a record stops the run, naming the line.
    """

    def __init__(self, directory: Path, resume: bool = False, on_note: Callable[[str], None] = lambda s: None) -> None:
        self.dir = directory
        self.path = directory / "results.jsonl"
        self.on_note = on_note
        self.records: dict[str, dict[str, Any]] = {}
        if self.path.exists() or self.path.is_symlink():
            check_regular_file(self.path, "results file")
            if self.path.stat().st_size > 0:
                if not resume:
                    raise UsageError(f"{self.path} already exists; pass --resume to continue that run or choose another --out")
                self._read()
        self._fh = None

    @staticmethod
    def key(path: Path | str) -> str:
        return str(Path(path).resolve())

    def _read(self) -> None:
        # streamed line by line, each line capped: a resumed run of a million images must not load them all at once
        with check_regular_file(self.path, "results file").open("rb") as fh:
            number, whole = 0, 0  # whole: bytes up to the end of the last complete line
            while line := fh.readline(MAX_RECORD_BYTES + 1):
                number += 1
                if not line.endswith(b"\n"):
                    if len(line) > MAX_RECORD_BYTES:
                        raise UsageError(f"{self.path}:{number}: line is over {MAX_RECORD_BYTES:,} bytes; not a record")
                    break  # the last line, cut short by a kill
                record = _parse_record(line)
                if isinstance(record, str):
                    raise UsageError(f"{self.path}:{number}: {record}; fix or remove that line, or choose another --out")
                self.records[self.key(record["file"])] = record
                whole += len(line)
        size = self.path.stat().st_size
        if whole < size:
            self.on_note(f"{self.path}:{number}: the last line is incomplete ({size - whole} bytes, left by an "
                         "interrupted run): dropped; its image is done again")
            with self.path.open("r+b") as fh:
                fh.truncate(whole)  # cut only the fragment: every byte before it stays as it was
                fh.flush()
                os.fsync(fh.fileno())

    def status(self, path: Path) -> str | None:
        """'done', 'failed' or None (not in the log)."""
        record = self.records.get(self.key(path))
        if record is None:
            return None
        return "failed" if record.get("error") else "done"

    def has(self, path: Path) -> bool:
        return self.status(path) == "done"

    def append(self, report) -> None:
        record = report.to_dict() if hasattr(report, "to_dict") else dict(report)
        if self._fh is None:
            self._fh = self.path.open("a", encoding="utf-8")
        append_line_durably(self._fh, json.dumps(record))
        self.records[self.key(record["file"])] = record

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def ordered(self) -> list[dict[str, Any]]:
        return sorted(self.records.values(), key=lambda r: (r.get("index") is None, r.get("index") or 0, r["file"]))


def _parse_record(line: bytes) -> dict[str, Any] | str:
    """The record on one line, or what is wrong with it."""
    try:
        record = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        return "not UTF-8"
    except json.JSONDecodeError as exc:
        return f"not a JSON record ({exc.msg} at column {exc.colno})"
    if not isinstance(record, dict):
        return "not a JSON object"
    for key, kinds in _RECORD_FIELDS.items():
        if key not in record:
            return f"record has no {key!r}"
        if not isinstance(record[key], kinds) or isinstance(record[key], bool):
            return f"record's {key!r} has the wrong type ({type(record[key]).__name__})"
    if record["error"] is None and not isinstance(record.get("findings"), list):
        return "record has no list of findings"
    return record


_RECORD_FIELDS: dict[str, tuple[type, ...]] = {"file": (str,), "index": (int, type(None)), "error": (str, type(None))}
MAX_RECORD_BYTES = 16 * 1024 * 1024  # one image's record is a few kB; a longer line is not ours


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


def write_challenge_files(log: ResultsLog, exclude: set[int] = frozenset()) -> tuple[Path, Path]:
    """task1.json and task2.json from every record; each written whole to a temporary file and moved into place.

    ``exclude``: indexes shared by several inputs; none of those images gets an entry (none may overwrite another).
    """
    records = [r for r in log.ordered() if r.get("index") not in exclude]
    task1, task2 = challenge_entries(records)
    p1, p2 = log.dir / "task1.json", log.dir / "task2.json"
    atomic_write_text(p1, json.dumps(task1, indent=1) + "\n")
    atomic_write_text(p2, json.dumps(task2, indent=1) + "\n")
    return p1, p2
