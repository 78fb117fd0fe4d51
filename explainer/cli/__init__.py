"""The ``explain`` command line: argument parsing and printing only."""

from explainer.cli.main import main

__all__ = ["main"]
