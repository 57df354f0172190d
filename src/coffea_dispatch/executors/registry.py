"""Executors by name: each yields a coffea-style executor, `executor(items, function, accumulator)`.

The names of those that run on a batch system (job arrays, Dask clusters, parsl) come from its backend
(`batch.registry`); the others are here. What a result may carry beside the accumulator: `result_keys`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from coffea_dispatch.batch.registry import backends
from coffea_dispatch.errors import DispatchError
from coffea_dispatch.executors.kinds import (
    DASK_CASA,
    DASK_LOCAL,
    DASK_LPC,
    DEFAULT_BATCH_JOBS,
    LOCAL_EXECUTORS,
    MACHINE_EXECUTORS,
    backend_of,
)
from coffea_dispatch.options import ExecutorSettings, memory_mb


def executor_names() -> tuple[str, ...]:
    """Every executor: this machine's, then each batch backend's Dask clusters, parsl and job arrays."""
    every = backends()
    dask = (DASK_LOCAL, *(name for b in every for name in b.dask_executors), DASK_CASA, DASK_LPC)
    parsl = tuple(name for b in every for name in b.parsl_executors)
    return LOCAL_EXECUTORS + dask + parsl + tuple(b.array_executor for b in every if b.array_executor)


def is_job_array(name: str) -> bool:
    """Submits batch jobs and returns: the results are collected later (`--wait`, `merge`)."""
    backend = backend_of(name)
    return backend is not None and backend.array_executor == name


def is_parsl(name: str) -> bool:
    backend = backend_of(name)
    return backend is not None and name in backend.parsl_executors


def runs_in_process(name: str) -> bool:
    """Chunks run in this process, one after the other."""
    return name == "iterative"


def check_executor(name: str) -> None:
    """Unknown executors get one line listing the known ones."""
    if name not in MACHINE_EXECUTORS and backend_of(name) is None:
        raise DispatchError(f"unknown executor '{name}' (choose from: {', '.join(executor_names())})")


def default_workers(name: str, workers: int | None) -> int:
    """-j for the local executors: all cores for futures, one for iterative."""
    if workers is not None:
        if workers < 1:
            raise DispatchError(f"--workers must be at least 1, got {workers}")
        return workers
    return 1 if runs_in_process(name) else (os.cpu_count() or 1)


def sized(settings: ExecutorSettings) -> ExecutorSettings:
    """The settings with -j worked out where the executor is local (elsewhere it sizes each worker job, and the
    cluster's size and memory are checked: `-s -1` would wait forever for workers, `-m lots` fail deep in Dask)."""
    if settings.name in LOCAL_EXECUTORS:
        settings.workers = default_workers(settings.name, settings.workers)
        return settings
    for flag, value in (("-s/--scaleout", settings.scaleout), ("--max-scaleout", settings.max_scaleout)):
        if value is not None and value < 1:
            raise DispatchError(f"{flag} must be at least 1, got {value}")
    if settings.workers is not None and settings.workers < 1:
        raise DispatchError(f"--workers must be at least 1, got {settings.workers}")
    if settings.memory not in (None, "auto"):  # dask/local's LocalCluster takes "auto" too
        memory_mb(settings.memory)
    return settings


def expected_workers(settings: ExecutorSettings) -> int:
    """How many chunks may run at once, as far as it is known before the executor starts: it sizes the share of
    its chunks a FileTask runs itself (batch clusters adapt: their first --scaleout jobs are counted)."""
    per_process = settings.workers or 1
    if settings.name in LOCAL_EXECUTORS:
        return 1 if runs_in_process(settings.name) else per_process
    if settings.name == DASK_LOCAL:
        return (settings.scaleout or os.cpu_count() or 1) * per_process
    return (settings.scaleout or DEFAULT_BATCH_JOBS) * per_process


def worker_count(name: str, workers: int, n_items: int) -> int:
    """Processes actually used: one for iterative, never more than there are chunks (idle ones cost memory)."""
    return 1 if runs_in_process(name) else max(1, min(workers, n_items))


def prepare_inputs(name: str, analysis) -> list[str]:
    """What an executor changes in the inputs before planning (coffea-casa reads through its cache); notes."""
    if name == DASK_CASA:
        from coffea_dispatch.executors.dask import read_through_casa_cache

        return read_through_casa_cache(analysis)
    return []


def _ignore(line: str) -> None:
    pass


@contextmanager
def open_executor(
    settings: ExecutorSettings, *, n_items: int, announce: Callable[[str], None] = _ignore
) -> Iterator[object]:
    """The coffea executor for `settings.name`, alive for the duration of the `with` block.

    `announce` receives lines the user should see while the run goes on (the Dask dashboard, for one).
    """
    check_executor(settings.name)
    if settings.name in LOCAL_EXECUTORS:
        from coffea_dispatch.executors.local import local_executor

        workers = settings.workers or 1
        start = worker_count(settings.name, workers, n_items)
        with local_executor(settings.name, workers=workers, start=start, status=settings.status) as executor:
            yield executor
    elif is_parsl(settings.name):
        from coffea_dispatch.executors.parsl import parsl_executor

        with parsl_executor(settings, announce=announce) as executor:
            yield executor
    else:
        from coffea_dispatch.executors.dask import dask_executor

        with dask_executor(settings, announce=announce) as executor:
            yield executor


def describe_with(executor) -> Callable:
    """planning's `describe_many` on the run's own executor: the FileDescriber mapped over the input files by
    its pool or cluster, as coffea's Runner preprocesses, so no file is opened serially in the main process."""
    mapper = executor.copy(desc="Planning", unit="file")

    def describe_many(filenames: list[str], describer) -> dict:
        result = mapper(filenames, describer, {})
        return result[0] if isinstance(result, tuple) else result

    return describe_many
