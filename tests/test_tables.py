"""A table renders the same cells to Markdown and to rich."""

from __future__ import annotations

from rich.console import Console

from explainer.outputs.tables import Table


def _table() -> Table:
    t = Table(title="t", headers=["name", "value", "note"], footer="made by a test")
    t.add("a", 1, "")
    t.add("mean", 2.5, "x", bold=True)
    return t


def test_markdown_rows_bold_and_empty_cells():
    md = _table().markdown().splitlines()
    assert md[:2] == ["| name | value | note |", "|---|---|---|"]
    assert md[2] == "| a | 1 | |"
    assert md[3] == "| **mean** | **2.5** | **x** |"
    assert md[-1] == "made by a test"


def test_rich_rendering_has_the_same_cells():
    console = Console(width=120, record=True)
    console.print(_table().rich())
    text = console.export_text()
    for cell in ("name", "value", "note", "a", "1", "mean", "2.5", "x"):
        assert cell in text
