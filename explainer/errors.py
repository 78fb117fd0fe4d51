"""User-facing errors. Each carries one line for the terminal and an exit code.

Exit codes follow the project's convention: 2 for usage and input errors
(bad arguments, a broken tree, a missing file or model), 1 for runtime failures.
"""

from __future__ import annotations


class ExplainerError(Exception):
    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(ExplainerError):
    """Bad arguments or input: a file that is missing, unreadable or malformed; a model that cannot be had."""

    exit_code = 2


class RuntimeFailure(ExplainerError):
    """Something failed while running on valid input."""

    exit_code = 1
