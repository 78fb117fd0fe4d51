"""Reading what the user pointed at, and writing so that nothing is lost.

Every file explain reads may be hostile or a mistake: a FIFO that never ends,
``/dev/zero``, a symlink to somewhere else, a 10 GB "config". Every file it
writes may be interrupted by a kill. The helpers here are the one place that
knows how to do both safely; use them instead of ``Path.read_text`` and
``Path.write_text``.

Limits are named constants so the README can list them ("What explain trusts").
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import IO, Any

from explainer.errors import UsageError

# Text inputs: trees, configs, catalogues, answers files, gold files, JSON sidecars.
MAX_TEXT_BYTES = 8 * 1024 * 1024


def check_regular_file(path: str | Path, what: str = "file") -> Path:
    """The path, if it names an existing regular file (after following links); else a UsageError naming it.

    Refuses FIFOs, devices, sockets and directories before anything opens them:
    opening a FIFO for reading blocks forever, and ``/dev/zero`` never ends.
    """
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise UsageError(f"{p}: {what} not found") from None
    except OSError as exc:
        raise UsageError(f"{p}: cannot read {what}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{p}: {what} is a directory, expected a file")
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{p}: {what} is not a regular file (a device, FIFO or socket); refusing to read it")
    return p


def read_bytes_capped(path: str | Path, max_bytes: int = MAX_TEXT_BYTES, what: str = "file") -> bytes:
    """Read a regular file of at most ``max_bytes``; refuse anything else in one line."""
    p = check_regular_file(path, what)
    size = p.stat().st_size
    if size > max_bytes:
        raise UsageError(f"{p}: {what} is {size:,} bytes, over the limit of {max_bytes:,}")
    try:
        with p.open("rb") as fh:
            data = fh.read(max_bytes + 1)  # the file may have grown since stat()
    except OSError as exc:
        raise UsageError(f"{p}: cannot read {what}: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise UsageError(f"{p}: {what} is over the limit of {max_bytes:,} bytes")
    return data


def read_text_capped(path: str | Path, max_bytes: int = MAX_TEXT_BYTES, what: str = "file") -> str:
    """Read a UTF-8 text file with :func:`read_bytes_capped`; a decoding error names the line and column."""
    data = read_bytes_capped(path, max_bytes, what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise UsageError(f"{path}:{line}:{column}: {what} is not valid UTF-8 (byte 0x{data[exc.start]:02x})") from None


def safe_load_yaml(text: str, source: str | Path) -> Any:
    """YAML text through the safe loader; a syntax error is one line naming the source, the line and the problem."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise UsageError(f"{source}{line}: not valid YAML: {getattr(exc, 'problem', None) or exc}") from None


def read_yaml_capped(path: str | Path, max_bytes: int = MAX_TEXT_BYTES, what: str = "file") -> Any:
    """A small YAML file (a recipe, say) read with :func:`read_text_capped` and :func:`safe_load_yaml`."""
    return safe_load_yaml(read_text_capped(path, max_bytes, what), path)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that a reader (or a kill) sees the old file or the new one, never half of one.

    The data goes to a temporary file in the same folder, is fsynced, and is
    moved over ``path`` with ``os.replace`` (atomic on POSIX within a file system).
    """
    p = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(p.parent)
    return p


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def append_line_durably(fh: IO[str], line: str) -> None:
    """Append one line to an open text file and push it to the disk before returning."""
    fh.write(line if line.endswith("\n") else line + "\n")
    fh.flush()
    os.fsync(fh.fileno())


def _fsync_dir(directory: Path) -> None:
    # The rename itself is durable only once the folder's entry is on disk.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
