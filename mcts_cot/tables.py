"""Result tables kept as data: the same rows print on the console (rich renders a `Grid` directly) and go
into results.md as markdown, so nothing has to read a rendered table back."""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.table import Table


@dataclass
class Grid:
    """A titled table of strings. The first `left` columns are left-justified, the rest right-justified."""

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    caption: str = ""
    left: int = 1

    def add_row(self, *cells: object) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"{self.title}: {len(cells)} cells for {len(self.columns)} columns")
        self.rows.append([str(c) for c in cells])

    def __rich__(self) -> Table:
        table = Table(title=self.title, caption=self.caption or None)
        for i, name in enumerate(self.columns):
            table.add_column(name, justify="left" if i < self.left else "right")
        for row in self.rows:
            table.add_row(*row)
        return table

    def markdown(self) -> str:
        lines = ["| " + " | ".join(self.columns) + " |", "|" + "|".join("---" for _ in self.columns) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines) + "\n"

    def text(self) -> str:
        """Every cell and the caption in one string (for logs and tests)."""
        return " ".join(" ".join(row) for row in [self.columns, *self.rows]) + " " + self.caption
