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
