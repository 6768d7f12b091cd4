"""Rendering the library's events (:mod:`asc_search._progress`) for a person: rich progress bars on a terminal,
dim log lines, yellow warnings. ``ASC_SEARCH_PROGRESS=0`` silences bars, ``=1`` forces them (e.g. in CI logs)."""

from __future__ import annotations

import os
import sys
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

__all__ = ["Renderer", "progress_enabled", "output_console", "stderr_console"]

#: Width of tables when the output is not a terminal (rich would assume 80 columns and wrap inside fields).
PIPED_WIDTH = 200


def output_console(stderr: bool = False) -> Console:
    """A rich Console for a command's output (stdout, or stderr): on a terminal as wide as the terminal; piped to a
    file or another program, lines are never wrapped (``soft_wrap``) and tables may be up to :data:`PIPED_WIDTH`
    columns wide, unless ``COLUMNS`` says otherwise."""
    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty() or os.environ.get("COLUMNS"):
        return Console(stderr=stderr, highlight=False)
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=PIPED_WIDTH)


def stderr_console() -> Console:
    return output_console(stderr=True)


def progress_enabled() -> bool:
    flag = os.environ.get("ASC_SEARCH_PROGRESS")
    if flag is not None:
        return flag not in ("0", "false", "no", "")
    return sys.stderr.isatty()


class Renderer:
    """An ``on_event`` for the CLI: ``progress`` events drive one bar per task, ``log`` and ``warning`` print a line;
    any other event goes to ``other(event, info)`` when given (a command's own printer). Use it as a context
    manager so that the bars are closed."""

    def __init__(self, console: Console | None = None, other: Any = None) -> None:
        self.console = console or stderr_console()
        self.other = other
        self._progress: Progress | None = None
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> Renderer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._tasks.clear()

    def _bars(self) -> Progress:
        if self._progress is None:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
                disable=not progress_enabled(),
            )
            self._progress.start()
        return self._progress

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        if event == "progress":
            bars = self._bars()
            task = str(info.get("task", ""))
            if task not in self._tasks:
                self._tasks[task] = bars.add_task(task, total=info.get("total"))
            bars.update(self._tasks[task], completed=int(info.get("done") or 0), total=info.get("total"))
        elif event == "log":
            self.console.print(f"[dim]{info.get('message', '')}[/dim]")
        elif event == "warning":
            self.console.print(f"[yellow]warning:[/yellow] {info.get('message', '')}")
        elif self.other is not None:
            self.other(event, info)
