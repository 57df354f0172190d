"""Executors: each backend yields a coffea-style executor, `executor(items, function, accumulator)`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from coffea_dispatch.errors import DispatchError

LOCAL_EXECUTORS = ("iterative", "futures")
DASK_EXECUTORS = ("dask/local", "dask/condor", "dask/slurm", "dask/lxplus")
BATCH_EXECUTORS = ("vanilla_lxplus", "vanilla_slurm")
EXECUTOR_NAMES = LOCAL_EXECUTORS + DASK_EXECUTORS + BATCH_EXECUTORS
AVAILABLE_EXECUTORS = LOCAL_EXECUTORS


def check_executor(name: str) -> None:
    """Unknown and not-yet-available executors get one line saying what to use instead."""
    if name not in EXECUTOR_NAMES:
        raise DispatchError(f"unknown executor '{name}' (choose from: {', '.join(EXECUTOR_NAMES)})")
    if name not in AVAILABLE_EXECUTORS:
        raise DispatchError(
            f"executor '{name}' is not available yet in this version of coffea-dispatch "
            f"(available now: {', '.join(AVAILABLE_EXECUTORS)})"
        )


def worker_count(name: str, workers: int, n_items: int) -> int:
    """Processes actually used: one for iterative, never more than there are chunks (idle ones cost memory)."""
    return 1 if name == "iterative" else max(1, min(workers, n_items))


@contextmanager
def open_executor(name: str, *, workers: int, n_items: int, status: bool = True) -> Iterator[object]:
    """The coffea executor for `name`, alive for the duration of the `with` block."""
    check_executor(name)
    from coffea_dispatch.executors.local import local_executor

    with local_executor(name, workers=workers, n_items=n_items, status=status) as executor:
        yield executor
