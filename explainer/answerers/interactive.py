"""The interactive answerer: a person answers in the terminal, for authors trying a tree."""

from __future__ import annotations

import sys
from typing import IO, Sequence

from rich.console import Console

from explainer.answerers.base import (
    AnswererBase,
    ChoiceAnswer,
    ChoiceQuery,
    FollowUpAnswer,
    FollowUpQuery,
    YesNoAnswer,
    YesNoQuery,
)
from explainer.errors import UsageError

_YES = {"y", "yes"}
_NO = {"n", "no"}


class InteractiveAnswerer(AnswererBase):
    name = "interactive"

    def __init__(self, stdin: IO[str] | None = None, console: Console | None = None) -> None:
        super().__init__()
        self.stdin = stdin or sys.stdin
        # Prompts go to stderr so stdout keeps only results.
        self.console = console or Console(stderr=True)

    def _read(self, prompt: str) -> str:
        self.console.print(prompt, end=" ")
        line = self.stdin.readline()
        if not line:
            raise UsageError("interactive walk: input ended before the walk finished")
        return line.strip()

    def yes_no(self, queries: Sequence[YesNoQuery]) -> list[YesNoAnswer]:
        out = []
        for q in queries:
            while True:
                reply = self._read(f"[bold]{q.node_id}[/]: {q.prompt} [dim](y/n or a probability)[/]").lower()
                if reply in _YES or reply in _NO:
                    out.append(YesNoAnswer(1.0 if reply in _YES else 0.0))
                    break
                try:
                    p = float(reply)
                except ValueError:
                    p = -1.0
                if 0.0 <= p <= 1.0:
                    out.append(YesNoAnswer(p))
                    break
                self.console.print("[red]please answer y, n or a number between 0 and 1[/]")
        return out

    def choose(self, queries: Sequence[ChoiceQuery]) -> list[ChoiceAnswer]:
        out = []
        for q in queries:
            listing = ", ".join(f"{i}={o}" for i, o in enumerate(q.options, 1))
            while True:
                reply = self._read(f"[bold]{q.node_id}[/]: {q.prompt} [dim]({listing})[/]")
                pick = q.options[int(reply) - 1] if reply.isdigit() and 0 < int(reply) <= len(q.options) else reply
                if pick in q.options:
                    out.append(ChoiceAnswer({o: float(o == pick) for o in q.options}))
                    break
                self.console.print(f"[red]please give one of: {listing}[/]")
        return out

    def follow_up(self, queries: Sequence[FollowUpQuery]) -> list[FollowUpAnswer]:
        out = []
        for q in queries:
            hint = f" ({'/'.join(q.allowed)})" if q.allowed else f" (one word; '{q.withdraw}' withdraws the finding)"
            while True:
                reply = self._read(f"[bold]{q.node_id}[/]: {q.prompt} [dim]{hint}[/]").lower()
                if reply and (q.allowed is None or reply in q.allowed):
                    out.append(FollowUpAnswer(reply.split()[0]))
                    break
                self.console.print("[red]please give one word from the list[/]" if q.allowed else "[red]please give one word[/]")
        return out
