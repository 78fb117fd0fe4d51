"""Problems found in a question tree, reported as ``FILE:LINE: key.path: what is wrong``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from explainer.errors import UsageError

Path = tuple  # a key path into the YAML document: ("nodes", "cat_face", "if_yes", 0)


def format_path(path: Sequence) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top)"


@dataclass(frozen=True, order=True)
class Problem:
    file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.path}: {self.message}"


class TreeError(UsageError):
    """A tree that must not run (exit 2 wherever it surfaces). Carries every problem found, not just the first."""

    exit_code = 2

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = sorted(set(problems))
        super().__init__("\n".join(str(p) for p in self.problems))

    def __str__(self) -> str:
        n = len(self.problems)
        head = f"{n} problem{'s' if n != 1 else ''} in question tree"
        return head + ":\n" + "\n".join(str(p) for p in self.problems)
