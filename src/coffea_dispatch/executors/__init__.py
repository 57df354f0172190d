"""Executors: each backend yields a coffea-style executor, `executor(items, function, accumulator)`.

A result may name more items to run under FOLLOW_UP_KEY (the chunks a FileTask leaves to the other workers).
An executor that can submit work while it runs (our futures pool) runs them in the same call; coffea's
executors return them in the accumulator, and the run starts them in a next call.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from coffea_dispatch.errors import DispatchError
from coffea_dispatch.proxy import JOB_FLAVOUR_SECONDS, grid_proxy, proxy_exports, walltime_seconds

LOCAL_EXECUTORS = ("iterative", "futures")
DASK_EXECUTORS = ("dask/local", "dask/condor", "dask/slurm", "dask/lxplus", "dask/casa", "dask/lpc")
BATCH_EXECUTORS = ("vanilla_lxplus", "vanilla_slurm")
PARSL_EXECUTORS = ("parsl/slurm", "parsl/condor")
EXECUTOR_NAMES = LOCAL_EXECUTORS + DASK_EXECUTORS + PARSL_EXECUTORS + BATCH_EXECUTORS
FOLLOW_UP_KEY = "follow_up"
DEFAULT_BATCH_JOBS = 6  # HiggsDNA's --scaleout default: worker jobs of a batch cluster (Dask or parsl)
# the batch system's submit command each cluster executor needs to start its worker jobs
SUBMIT_COMMANDS = {
    "dask/slurm": "sbatch",
    "dask/condor": "condor_submit",
    "dask/lxplus": "condor_submit",
    "parsl/slurm": "sbatch",
    "parsl/condor": "condor_submit",
}


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
    """Unknown executors get one line listing the known ones.

    `blocking`: the caller waits for the results in-process (run_analysis); batch job arrays are submitted
    first, then waited for (`--wait`).
    """
    if name not in EXECUTOR_NAMES:
        raise DispatchError(f"unknown executor '{name}' (choose from: {', '.join(EXECUTOR_NAMES)})")
    if blocking and name in BATCH_EXECUTORS:
        raise DispatchError(
            f"executor '{name}' submits batch jobs: use the command line (--wait to block until they end), or "
            "coffea_dispatch.batch.submit_analysis then coffea_dispatch.run.collect_batch"
        )


def check_submit_command(settings: ExecutorSettings, alternative: str) -> None:
    """Without the batch system's submit command no worker can ever start: say so instead of waiting forever."""
    command = SUBMIT_COMMANDS.get(settings.name)
    if command and shutil.which(command) is None:
        raise DispatchError(
            f"executor '{settings.name}' submits worker jobs with {command}, which is not on PATH here: run on a "
            f"submit node of that batch system, {alternative}"
        )


def _proxy_lifetime_needed(settings: ExecutorSettings) -> int:
    if settings.name.endswith(("/condor", "/lxplus")):
        return JOB_FLAVOUR_SECONDS.get(settings.queue or "workday", JOB_FLAVOUR_SECONDS["workday"])
    return walltime_seconds(settings.walltime)


def worker_prologue(settings: ExecutorSettings) -> list[str]:
    """What a batch worker job runs first: the grid proxy (checked to outlive the job when inputs are remote)
    and the import path of this process, so user processors given as `module:Class` import there too."""
    proxy = grid_proxy(settings.voms, needed=settings.remote_inputs, lifetime_needed=_proxy_lifetime_needed(settings))
    pythonpath = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), os.getcwd()) if p)
    return [*proxy_exports(proxy), f"export PYTHONPATH={pythonpath}"]


def expected_workers(settings: ExecutorSettings) -> int:
    """How many chunks may run at once, as far as it is known before the executor starts: it sizes the share of
    its chunks a FileTask runs itself (batch clusters adapt: their first --scaleout jobs are counted)."""
    per_process = settings.workers or 1
    if settings.name in LOCAL_EXECUTORS:
        return 1 if settings.name == "iterative" else per_process
    if settings.name == "dask/local":
        return (settings.scaleout or os.cpu_count() or 1) * per_process
    return (settings.scaleout or DEFAULT_BATCH_JOBS) * per_process


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
    elif settings.name in PARSL_EXECUTORS:
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
    inner = getattr(executor, "executor", executor)  # DaskRun wraps coffea's DaskExecutor
    mapper = inner.copy(desc="Planning", unit="file")

    def describe_many(filenames: list[str], describer) -> dict:
        result = mapper(filenames, describer, {})
        return result[0] if isinstance(result, tuple) else result

    return describe_many
