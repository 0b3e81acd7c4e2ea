"""Progress on long work and the summary tables users read at the end of a stage."""
from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress
from rich.table import Table

console = Console(stderr=True)  # progress and log lines
out = Console()  # results: summary tables, query output


class Progress:
    """A progress bar over units of work; also counts rows as results come in."""

    def __init__(self, description: str, total: int):
        self.rows = 0
        self._bar = RichProgress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rows]} rows"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=console,
        )
        self._task = self._bar.add_task(description, total=total, rows=0)

    def __enter__(self) -> "Progress":
        self._bar.start()
        return self

    def __exit__(self, *exc) -> None:
        self._bar.stop()

    def advance(self, result: dict[str, Any]) -> None:
        self.rows += int(result.get("rows", 0) or 0)
        self._bar.update(self._task, advance=1, rows=self.rows)


def render_table(title: str, columns: list[str], rows: list[list[Any]]) -> Table:
    table = Table(title=title, title_justify="left")
    for i, c in enumerate(columns):
        table.add_column(c, justify="left" if i == 0 else "right")
    for r in rows:
        table.add_row(*["" if v is None else str(v) for v in r])
    return table
