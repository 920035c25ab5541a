"""Training progress: rich bars on a terminal, plain lines otherwise, or nothing when disabled.

Progress goes to stderr, on rank 0 only, unless ``--no-progress`` is given. When stderr is a terminal it
is a rich bar per epoch with the running loss and accuracy; when it is not (a CI log, ``2> file``,
``nohup``) it is one flushed line every ``every`` batches and at the end of each epoch, so that a log
never stays silent for a whole epoch.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TextIO

__all__ = ["DEFAULT_EVERY", "ProgressReporter"]

#: Batches between two plain progress lines (``micronet-train --progress-every``).
DEFAULT_EVERY = 50


class ProgressReporter:
    """``with ProgressReporter(enabled) as p: task = p.start(label, total); p.update(task, loss, acc)``.

    Args:
        enabled: report at all (rank 0 and no ``--no-progress``).
        every: batches between two plain lines (bars redraw on every batch).
        stream: where progress goes (default: ``sys.stderr`` at construction).
    """

    def __init__(self, enabled: bool, every: int = DEFAULT_EVERY, stream: TextIO | None = None) -> None:
        if every < 1:
            raise ValueError(f"progress every {every} batches: must be positive")
        self.stream = sys.stderr if stream is None else stream
        isatty = getattr(self.stream, "isatty", None)
        self.bars = bool(enabled and isatty is not None and isatty())
        self.lines = bool(enabled and not self.bars)
        self.enabled = self.bars or self.lines
        self.every = every
        self._progress = None
        self._tasks: dict[int, list] = {}  # plain lines: task -> [label, total, done, started]

    def __enter__(self) -> ProgressReporter:
        if self.bars:
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
                console=Console(file=self.stream),
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
        self._tasks.clear()

    def start(self, label: str, total: int) -> int | None:
        """Add a bar (or a plain-line counter) for ``total`` steps; returns its handle (None when disabled)."""
        if self._progress is not None:
            return self._progress.add_task(label, total=total, loss=0.0, acc=0.0)
        if not self.lines:
            return None
        task = len(self._tasks)
        self._tasks[task] = [label, total, 0, time.perf_counter()]
        return task

    def update(self, task: int | None, loss: float, acc: float, advance: int = 1) -> None:
        """Advance a bar (or counter) and show the running loss and accuracy."""
        if task is None:
            return
        if self._progress is not None:
            self._progress.update(task, advance=advance, loss=loss, acc=acc)
            return
        state = self._tasks.get(task)
        if state is None:
            return
        label, total, done, started = state
        before, done = done, done + advance
        state[2] = done
        if done // self.every > before // self.every or done >= total:
            self.stream.write(f"{label}: batch {done}/{total}, loss {loss:.4f}, acc {acc:.2%}, "
                              f"{time.perf_counter() - started:.1f}s\n")
            self.stream.flush()
        if done >= total:
            del self._tasks[task]
