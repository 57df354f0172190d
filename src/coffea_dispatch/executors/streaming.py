"""One executor call on a cluster's futures (Dask, parsl) in which a result may name more work.

coffea's DaskExecutor and ParslExecutor map a function over a fixed list: the chunks a FileTask hands back
(FOLLOW_UP_KEY) could only run in a second call, after the whole first round, so a cluster of 64 slots reading
16 new files kept 48 of them idle while the slowest file's first chunk ran. Here a follow-up is submitted the
moment the result naming it arrives, ahead of the items not yet started, and every result is merged into the
accumulator as it comes, so the main process holds one accumulator whatever the number of chunks. What the
cluster does when a task fails (a KilledWorker) is the executor's to decide (`Failed`).
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, wait
from dataclasses import dataclass
from typing import Any

from coffea.processor import accumulate

from coffea_dispatch.result_keys import FOLLOW_UP_KEY

FOLLOW_UP_PRIORITY = 1  # ahead of the items of the call not yet started (a file's other chunks share its slots)


@dataclass(frozen=True)
class Failed:
    """What becomes of an item whose task failed: items to run instead, and a result to merge."""

    again: list
    result: dict


def reraise(item: Any, error: BaseException) -> Failed:
    raise error


def task_key(item: Any, call: str, number: int) -> str:
    """`chunk-...`, `file-...` (a FileTask), `describe-...` (planning an input): the name a task shows under in the
    dashboard and the performance report."""
    if isinstance(item, str):
        kind = "describe"
    else:
        kind = "chunk" if hasattr(item, "entrystart") else "file" if hasattr(item, "chunks_here") else "item"
    return f"{kind}-{call}-{number}"


@dataclass
class Stream:
    """One call: `submit(items, keys, priority) -> futures` (a batch: one message to a Dask scheduler, which
    took 2.5 s to take 640 tasks one by one), `completed(futures)` yields futures as they finish and accepts
    more with `.add(future)` (distributed's as_completed does), `outcome(future)` is the result or raises the
    task's error, `failed(item, error)` decides what a failure becomes."""

    submit: Callable[[list, list[str], int], list]
    completed: Callable[[list], Any]
    outcome: Callable[[Any], Any]
    cancel: Callable[[list], None]
    failed: Callable[[Any, BaseException], Failed] = reraise

    def __call__(self, items: Iterable, accumulator: Any, progress: Callable[[int], Any]) -> Any:
        call, numbers = uuid.uuid4().hex[:8], itertools.count()
        running: dict[Any, Any] = {}

        def start(batch: list, priority: int = 0) -> list:
            if not batch:
                return []
            futures = self.submit(batch, [task_key(item, call, next(numbers)) for item in batch], priority)
            running.update(zip(futures, batch, strict=True))
            return futures

        done, total = 0, 0
        try:
            first = start(list(items))
            total = len(first)
            finished = self.completed(first)
            with progress(total) as advance:
                for future in finished:
                    item = running.pop(future)
                    try:
                        result = self.outcome(future)
                    except Exception as error:
                        failure = self.failed(item, error)
                        again, result = failure.again, failure.result
                        total += len(again) - 1  # the item is replaced by those
                    else:
                        again = (result.pop(FOLLOW_UP_KEY, None) if isinstance(result, dict) else None) or []
                        done, total = done + 1, total + len(again)
                    for follow_up in start(again, FOLLOW_UP_PRIORITY):
                        finished.add(follow_up)
                    accumulator = accumulate([result], accumulator) if result else accumulator
                    advance(done, total)
        finally:  # a failure, Ctrl-C: nothing of this call keeps running on the cluster
            if running:
                self.cancel(list(running))
        return accumulator


class FuturesCompleted:
    """distributed's `as_completed` for concurrent.futures (parsl's AppFutures): more can be added meanwhile."""

    def __init__(self, futures: Iterable) -> None:
        self.pending = set(futures)

    def add(self, future: Any) -> None:
        self.pending.add(future)

    def __iter__(self) -> Iterator[Any]:
        while self.pending:
            done, self.pending = wait(self.pending, return_when=FIRST_COMPLETED)
            yield from done
