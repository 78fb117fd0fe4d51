"""One run per output folder: two runs appending to the same results.jsonl would interleave and duplicate records.

The lock is ``DIR/.explain.lock`` held with ``flock`` for the life of the run and
removed at its end; the file records the holder's pid so a second run can name
it. The kernel releases a flock when its holder dies (even by kill -9), so a
lock file left by a dead run is simply taken over, with a note naming the dead pid. Creating the lock
file is also the check that the folder is writable, done before any model loads.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Callable

from explainer.errors import UsageError

LOCK_NAME = ".explain.lock"


class FolderLock:
    def __init__(self, directory: Path, what: str = "--out", on_note: Callable[[str], None] = lambda s: None) -> None:
        self.dir = Path(directory)
        self.what = what
        self.on_note = on_note
        self.fd: int | None = None

    def acquire(self) -> "FolderLock":
        d = self.dir
        if d.exists() and not d.is_dir():
            raise UsageError(f"{d}: {self.what} must be a directory")
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"{d}: {self.what} is not writable: {exc.strerror or exc}") from None
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_pid(fd)
                os.close(fd)
                who = f"pid {holder}" if holder else "another process"
                raise UsageError(f"{d}: another explain run ({who}) is writing to this {self.what} folder; "
                                 "wait for it to finish or choose another folder") from None
            # the holder we waited on may have removed the file as it released it: lock the file that is there now
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(d / LOCK_NAME, follow_symlinks=False))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        previous = _read_pid(fd)
        if previous and previous != os.getpid() and not _alive(previous):
            self.on_note(f"{d}: took over the lock left by an earlier run (pid {previous}, no longer running)")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def _open(self) -> int:
        try:
            return os.open(self.dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            raise UsageError(f"{self.dir}: {self.what} is not writable: {exc.strerror or exc}") from None

    def release(self) -> None:
        if self.fd is not None:
            try:
                os.unlink(self.dir / LOCK_NAME)  # while still locked: a waiting run re-checks the inode it got
            except OSError:
                pass
            os.close(self.fd)  # closing releases the flock
            self.fd = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
