"""One table, two renderings: rich for the terminal, Markdown for READMEs.

The commands build their cells once, so the two outputs cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.table import Table as RichTable


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    bold: set[int] = field(default_factory=set)  # indices of emphasised rows (e.g. the mean)
    footer: str = ""

    def add(self, *cells: object, bold: bool = False) -> None:
        if bold:
            self.bold.add(len(self.rows))
        self.rows.append([str(c) for c in cells])

    def markdown(self) -> str:
        lines = ["| " + " | ".join(self.headers) + " |", "|" + "---|" * len(self.headers)]
        for i, row in enumerate(self.rows):
            cells = [f"**{c}**" if i in self.bold and c else c for c in row]
            lines.append("|" + "".join(f" {c} |" if c else " |" for c in cells))
        return "\n".join(lines) + (f"\n\n{self.footer}" if self.footer else "")

    def rich(self) -> RichTable:
        # the footer is left to the caller: a caption would wrap at the table's width
        table = RichTable(title=self.title)
        for i, header in enumerate(self.headers):
            table.add_column(header, justify="left" if i == 0 else "right")
        for i, row in enumerate(self.rows):
            table.add_row(*row, style="bold" if i in self.bold else None)
        return table
