"""Rich progress bars with running loss and accuracy, or a silent stand-in when disabled.

Bars go to stderr and are shown only on rank 0, when stderr is a terminal and ``--no-progress`` is not
given.
"""

from __future__ import annotations

import sys
from types import TracebackType

__all__ = ["ProgressReporter"]


class ProgressReporter:
    """``with ProgressReporter(enabled) as p: task = p.start(label, total); p.update(task, loss, acc)``."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self._progress = None

    def __enter__(self) -> ProgressReporter:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4f}  acc {task.fields[acc]:6.2%}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._progress.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def start(self, label: str, total: int) -> int | None:
        """Add a bar for ``total`` steps; returns its handle (None when disabled)."""
        if self._progress is None:
            return None
        return self._progress.add_task(label, total=total, loss=0.0, acc=0.0)

    def update(self, task: int | None, loss: float, acc: float, advance: int = 1) -> None:
        """Advance a bar and show the running loss and accuracy."""
        if self._progress is not None and task is not None:
            self._progress.update(task, advance=advance, loss=loss, acc=acc)
