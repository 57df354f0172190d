"""A third-party executor, as another package would ship it: one module, one `ExecutorKind` subclass, declared
under the `coffea_dispatch.executors` entry-point group (the tests declare it: test_executor_plugin.py).

It runs every item in this process, one after the other, and writes one line per item to --toy-log, an
option of its own: the command line, `coffea_dispatch.run` and `coffea_dispatch.executor` take it from here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from coffea.processor import accumulate

from coffea_dispatch.executors.kinds import ExecutorKind
from coffea_dispatch.executors.progress import Titled
from coffea_dispatch.options import ExecutorState, option


@dataclass(kw_only=True)
class ToySettings(ExecutorState):
    toy_log: str | None = option("--toy-log", group="toy executor", help="one line per item run, appended here")


@dataclass(kw_only=True)
class ToyRun(Titled):
    """coffea's executor interface: `executor(items, function, accumulator)` -> (accumulator, 0)."""

    log: str | None = None

    def __call__(self, items, function: Callable, accumulator: Any) -> tuple[Any, int]:
        for item in items:
            accumulator = accumulate([function(item)], accumulator)
            if self.log:
                with open(self.log, "a") as log:
                    log.write(f"{self.desc}: {type(item).__name__}\n")
        return accumulator, 0


class Toy(ExecutorKind):
    settings = ToySettings
    keeps_workers = False

    def names(self) -> tuple[str, ...]:
        return ("toy",)

    @contextmanager
    def open(self, settings: ToySettings, n_items: int, announce: Callable[[str], None]) -> Iterator[ToyRun]:
        announce(f"toy: {n_items} item(s) to start with")
        yield ToyRun(status=False, log=settings.toy_log)
