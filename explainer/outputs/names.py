"""File names as people and pages may see them.

A file name is bytes from whoever made the file: it may not be UTF-8 (Python
keeps such bytes as lone surrogates, which cannot be printed or written to a
UTF-8 page), it may hold control characters that move the terminal's cursor,
or rich markup like ``[/]`` that the console would interpret. :func:`printable`
makes one honest line of it: undecodable bytes as ``\\xNN``, control characters
escaped, everything else literal. Print it with markup off (``rich.text.Text``).
"""

from __future__ import annotations

import os
from pathlib import Path


def printable(name: str | Path) -> str:
    """``name`` as one printable line: non-UTF-8 bytes as ``\\xNN``, control characters as ``\\n``, ``\\x1b``..."""
    raw = os.fsencode(str(name)) if not isinstance(name, str) else name.encode("utf-8", "surrogateescape")
    text = raw.decode("utf-8", "backslashreplace")
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
