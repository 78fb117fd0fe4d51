"""Helpers of the Ray tests: a folder of images, comparable records, and finding and killing our own processes."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
from PIL import Image

TIMING_KEYS = ("timings",)


def make_images(folder: Path, n: int, seed: int = 7) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(1, n + 1):
        arr = (rng.random((32, 32, 3)) * 255).astype("uint8")
        arr[8:24, 8:24] = (rng.random(3) * 255).astype("uint8")  # a centred "object"
        Image.fromarray(arr).save(folder / f"{i}.png")
    return folder


def comparable(record: dict) -> dict:
    """A record without what differs between two honest runs of the same image: wall-clock times."""
    out = {k: v for k, v in record.items() if k not in TIMING_KEYS}
    out["questions"] = [{k: v for k, v in q.items() if k != "seconds"} for q in record.get("questions") or []]
    out["rounds"] = [{k: v for k, v in r.items() if k != "seconds"} for r in record.get("rounds") or []]
    return out


def read_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def session_members(sid: int) -> list[int]:
    import psutil

    found = []
    for proc in psutil.process_iter():
        try:
            if proc.pid != os.getpid() and os.getsid(proc.pid) == sid:
                found.append(proc.pid)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return found


def kill_pids(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def our_descendants() -> list[int]:
    import psutil

    try:
        return [p.pid for p in psutil.Process().children(recursive=True)]
    except psutil.Error:
        return []


def wait_until_gone(pids_of, timeout: float = 30.0) -> list[int]:
    """Poll ``pids_of()`` until it is empty or ``timeout`` passes; the pids still there."""
    deadline = time.monotonic() + timeout
    left = pids_of()
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = pids_of()
    return left
