"""Progress bars on long work (shown on interactive terminals, silent elsewhere)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator


def _enabled() -> bool:
    if os.environ.get("NNCOMPRESS_PROGRESS") == "0":
        return False
    return os.environ.get("NNCOMPRESS_PROGRESS") == "1" or sys.stderr.isatty()


def progress_iter(items: Iterable, total: int | None, label: str) -> Iterator:
    """Yield ``items`` while showing a progress bar titled ``label``."""
    if not _enabled():
        yield from items
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task(label, total=total)
        for item in items:
            yield item
            bar.advance(task)


class ProgressSteps:
    """One progress bar over ``total`` steps whose title names the current one (``step(description)``);
    a context manager. Silent where ``progress_iter`` is."""

    def __init__(self, total: int, label: str):
        self.total, self.label = total, label
        self._bar = None
        self._task = None
        self._started = False

    def __enter__(self) -> ProgressSteps:
        if _enabled():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
            self._bar = Progress(*columns, transient=True)
            self._bar.__enter__()
            self._task = self._bar.add_task(self.label, total=self.total)
        return self

    def step(self, description: str) -> None:
        """Start the step ``description`` (the previous one is counted as done)."""
        self.current = description
        if self._bar is None:
            return
        if self._started:
            self._bar.advance(self._task)
        self._started = True
        self._bar.update(self._task, description=f"{self.label}: {description}")

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
