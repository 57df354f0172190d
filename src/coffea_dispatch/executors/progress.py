"""The progress bar of our executors: one bar per call whose total grows as results name more work."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any


@contextmanager
def progress_bar(shown: bool, desc: str, total: int, unit: str) -> Iterator[Callable[[int, int], None]]:
    """rich redraws at most 10 times a second from its own thread: an update per result costs next to nothing."""
    if not shown:
        yield lambda done, total: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit))
    with Progress(*columns, TimeElapsedColumn()) as progress:
        task = progress.add_task(desc, total=total)
        yield lambda done, total: progress.update(task, completed=done, total=total)


@dataclass(kw_only=True)
class Titled:
    """What coffea's executors carry for their bar, and `copy()`: coffea's Runner and our planning retitle an
    executor ("Preprocessing" files, "Processing" chunks) by copying it with other keywords."""

    status: bool = True
    desc: str = "Processing"
    unit: str = "chunk"

    def copy(self, **changes: Any) -> Any:
        return dataclasses.replace(self, **changes)

    def progress(self, total: int) -> AbstractContextManager[Callable[[int, int], None]]:
        return progress_bar(self.status, self.desc, total, self.unit)
