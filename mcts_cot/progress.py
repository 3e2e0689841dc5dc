"""The progress bar of long commands (search, eval, export-pairs): description, bar, done/total, elapsed time,
live figures. On a terminal it is rich's live bar; elsewhere (a log file, a pipe) rich draws only at the end,
so a 15-minute search would log nothing: there it is a plain line every `MCTS_COT_PROGRESS_EVERY` seconds
instead (an environment variable, so Ray actors and subprocesses follow the CLI's --progress-every too)."""

from __future__ import annotations

import os
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn


def every_s() -> float:
    """Seconds between plain progress lines (default 30)."""
    return float(os.environ.get("MCTS_COT_PROGRESS_EVERY", 30.0))


def progress_bar(console: Console, transient: bool = False) -> Progress:
    """One task per bar; its `info` field carries the live figures (tok/s, solved %, ...)."""
    if not console.is_terminal:
        return LineProgress(console, every_s())
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("{task.fields[info]}"), console=console, transient=transient)


class LineProgress(Progress):
    """The same tasks, drawn as one plain line per task every `every_s` seconds and once at the end."""

    def __init__(self, console: Console, every_s: float):
        super().__init__(console=console, disable=True)
        self.every_s = every_s
        self._last = time.monotonic()
        self._changed = False  # since the last line: the closing line is not a copy of the one before

    def add_task(self, description: str, *args, **fields) -> TaskID:
        fields.setdefault("info", "")
        return super().add_task(description, *args, **fields)

    def update(self, task_id: TaskID, **kwargs) -> None:
        super().update(task_id, **kwargs)
        self._changed = True
        if time.monotonic() - self._last >= self.every_s:
            self._print()

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def stop(self) -> None:
        if self._changed:
            self._print()
        super().stop()

    def _print(self) -> None:
        self._last, self._changed = time.monotonic(), False
        for task in self.tasks:
            total = "?" if task.total is None else f"{task.total:.0f}"
            info = task.fields.get("info") or ""
            self.console.print(f"{task.description}: {task.completed:.0f}/{total} in {task.elapsed or 0:.0f} s"
                               f"{' · ' + info if info else ''}", highlight=False, markup=False, soft_wrap=True)
