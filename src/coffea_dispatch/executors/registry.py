"""Which kinds of executor exist: ours, and those other packages declare under the `coffea_dispatch.executors`
entry-point group (a new executor is one module with one `kinds.ExecutorKind` subclass, in any package), as
batch systems are found by `batch.registry`. Every question about an executor name is answered by its kind.

Kinds are loaded as they are asked for, ours first: a run on `futures` imports no Dask and reads no plugin.
What a result may carry beside the accumulator: `result_keys`.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from coffea_dispatch.errors import DispatchError
from coffea_dispatch.executors.kinds import ExecutorKind, first_batch_workers
from coffea_dispatch.options import ExecutorSettings, RunOptions
from coffea_dispatch.options.values import did_you_mean

BUILTIN = (
    "coffea_dispatch.executors.local:IterativeKind",
    "coffea_dispatch.executors.local:FuturesKind",
    "coffea_dispatch.executors.dask:DaskLocalKind",
    "coffea_dispatch.executors.dask:DaskCasaKind",
    "coffea_dispatch.executors.dask:DaskLpcKind",
    "coffea_dispatch.executors.dask:DaskBatchKind",  # every batch system's dask/<system>
    "coffea_dispatch.executors.parsl:ParslKind",
    "coffea_dispatch.executors.job_arrays:JobArrayKind",
)
ENTRY_POINT_GROUP = "coffea_dispatch.executors"


@functools.cache
def _builtin(target: str) -> ExecutorKind:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)()


@functools.cache
def plugin_kinds() -> tuple[ExecutorKind, ...]:
    """The kinds other packages declare (reading the entry points costs ~15 ms: only when needed); a name one
    of ours has is refused."""
    from importlib.metadata import entry_points

    found = []
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            kind = point.load()()
        except Exception as error:  # a broken plugin must not break every other executor
            raise DispatchError(f"executor plugin {point.value!r} failed to load ({error})") from None
        taken = [name for name in kind.names() if any(_builtin(t).owns(name) for t in BUILTIN)]
        if taken:
            raise DispatchError(f"executor plugin {point.value!r} claims {taken[0]!r}, one of coffea-dispatch's own")
        found.append(kind)
    return tuple(found)


def forget() -> None:
    """Look for plugins again (after one was installed in this process)."""
    plugin_kinds.cache_clear()


def kinds() -> tuple[ExecutorKind, ...]:
    return (*(_builtin(target) for target in BUILTIN), *plugin_kinds())


def executor_names() -> tuple[str, ...]:
    """Every executor: this machine's, then each batch backend's Dask clusters, parsl and job arrays, plugins'."""
    return tuple(dict.fromkeys(name for kind in kinds() for name in kind.names()))


def kind_of(name: str) -> ExecutorKind:
    """The kind that runs `name`; one line listing the known executors when none does, and the one meant when a
    name is a misspelling of it (`dask/slrum`): names share their `dask/` prefix, so only a close match counts."""
    for target in BUILTIN:
        if _builtin(target).owns(name):
            return _builtin(target)
    for kind in plugin_kinds():
        if kind.owns(name):
            return kind
    names = executor_names()
    hint = did_you_mean(name, names, cutoff=0.8) if isinstance(name, str) else ""
    raise DispatchError(f"unknown executor '{name}' ({hint}choose from: {', '.join(names)})")


class GivenExecutor(ExecutorKind):
    """An executor object the caller made (coffea's own, handed to `coffea_dispatch.run`): run as it is, with
    the run's options as they were given (its size unknown: counted as a batch cluster's first jobs)."""

    settings = ExecutorSettings

    def names(self) -> tuple[str, ...]:
        return ()

    def expected_workers(self, settings: ExecutorSettings) -> int:
        return first_batch_workers(settings)

    def open(self, settings: Any, n_items: int, announce: Callable[[str], None]):
        raise DispatchError("an executor object the caller made is used as it is, never opened")


GIVEN = GivenExecutor()


def kind_for(name: str, given: Any = None) -> ExecutorKind:
    """The kind of the run's executor: `name`'s, or the object the caller `given`."""
    return GIVEN if given is not None else kind_of(name)


def check_executor(name: str) -> None:
    kind_of(name)


def is_job_array(name: str) -> bool:
    """Submits batch jobs and returns: the results are collected later (`--wait`, `merge`)."""
    return kind_of(name).job_array


def settings_for(options: RunOptions, given: Any = None) -> Any:
    """The run's executor's own settings, from the run options, sized."""
    return kind_for(options.executor, given).settings_from(options.executor, options.executor_values())


def _ignore(line: str) -> None:
    pass


@contextmanager
def open_executor(settings: Any, *, n_items: int, announce: Callable[[str], None] = _ignore) -> Iterator[object]:
    """The coffea executor for `settings.name`, alive for the duration of the `with` block.

    `announce` receives lines the user should see while the run goes on (the Dask dashboard, for one).
    """
    with kind_of(settings.name).open(settings, n_items, announce) as executor:
        yield executor


def describe_with(executor) -> Callable:
    """planning's `describe_many` on the run's own executor: the FileDescriber mapped over the input files by
    its pool or cluster, as coffea's Runner preprocesses, so no file is opened serially in the main process."""
    mapper = executor.copy(desc="Planning", unit="file")

    def describe_many(filenames: list[str], describer) -> dict:
        result = mapper(filenames, describer, {})
        return result[0] if isinstance(result, tuple) else result

    return describe_many
