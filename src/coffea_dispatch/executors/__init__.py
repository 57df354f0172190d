"""Executors: each backend yields a coffea-style executor, `executor(items, function, accumulator)`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from coffea_dispatch.errors import DispatchError

LOCAL_EXECUTORS = ("iterative", "futures")
DASK_EXECUTORS = ("dask/local", "dask/condor", "dask/slurm", "dask/lxplus")
BATCH_EXECUTORS = ("vanilla_lxplus", "vanilla_slurm")
EXECUTOR_NAMES = LOCAL_EXECUTORS + DASK_EXECUTORS + BATCH_EXECUTORS
AVAILABLE_EXECUTORS = (*LOCAL_EXECUTORS, *DASK_EXECUTORS, "vanilla_lxplus")


@dataclass
class ExecutorSettings:
    """What a backend needs from the command line (HiggsDNA's option names)."""

    name: str
    workers: int | None = None
    memory: str | None = None
    walltime: str = "01:00:00"
    disk: str = "20GB"
    scaleout: int | None = None
    max_scaleout: int | None = None
    queue: str | None = None
    voms: str | None = None
    status: bool = True
    dashboard_port: int | None = None
    show_tunnel: bool = False
    dask_report: str | None = None
    scheduler_address: str | None = None
    worker_image: str | None = None  # dask/lxplus: the container the workers run in
    log_directory: str = "dask-worker-logs"
    remote_inputs: bool = False  # some input is root://: workers need the grid proxy


def check_executor(name: str, *, blocking: bool = False) -> None:
    """Unknown and not-yet-available executors get one line saying what to use instead.

    `blocking`: the caller waits for the results (run_analysis); batch job arrays only submit for now.
    """
    if name not in EXECUTOR_NAMES:
        raise DispatchError(f"unknown executor '{name}' (choose from: {', '.join(EXECUTOR_NAMES)})")
    if name not in AVAILABLE_EXECUTORS:
        raise DispatchError(
            f"executor '{name}' is not available yet in this version of coffea-dispatch "
            f"(available now: {', '.join(AVAILABLE_EXECUTORS)})"
        )
    if blocking and name in BATCH_EXECUTORS:
        raise DispatchError(
            f"executor '{name}' submits batch jobs and returns: use the command line (or "
            "coffea_dispatch.batch.submit_analysis); waiting for the jobs (--wait) is not available yet"
        )


def worker_count(name: str, workers: int, n_items: int) -> int:
    """Processes actually used: one for iterative, never more than there are chunks (idle ones cost memory)."""
    return 1 if name == "iterative" else max(1, min(workers, n_items))


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
        with local_executor(settings.name, workers=workers, n_items=n_items, status=settings.status) as executor:
            yield executor
    else:
        from coffea_dispatch.executors.dask import dask_executor

        with dask_executor(settings, announce=announce) as executor:
            yield executor
