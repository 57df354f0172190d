"""HiggsDNA's parsl executors: a HighThroughputExecutor whose workers are batch jobs (the parsl provider comes
from the batch system's backend), alive for the duration of the `with` block, fed by our streaming call
(executors/streaming.py: a FileTask's other chunks are submitted as soon as it returns).

Sized like the Dask batch clusters: `--scaleout` jobs to start with, up to `--max-scaleout`, each running
`-j` worker processes with `--memory`, `--walltime` and `--queue`. Worker jobs run this process's Python
environment and import path, and get the grid proxy.

Until the first worker connects, the run watches its worker jobs (`FirstWorker`): parsl marks a block whose
submit command failed as failed and submits another, and its tasks waited until every block had failed, then
raised BadStateException's traceback; jobs accepted but never started kept the run waiting forever. Now a
refused submission stops the run within seconds, in one line quoting the batch system's answer, and jobs that
do not start within --worker-wait end it with what the queue says of them (they are cancelled at cleanup).
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coffea_dispatch.batch.registry import backend_for
from coffea_dispatch.errors import DispatchError
from coffea_dispatch.executors.first_worker import WorkerDeadline, never_started, refused_line, shortened
from coffea_dispatch.executors.kinds import (
    DEFAULT_BATCH_JOBS,
    ExecutorKind,
    check_submit_command,
    first_batch_workers,
    worker_prologue,
)
from coffea_dispatch.executors.progress import Titled
from coffea_dispatch.executors.streaming import FuturesCompleted, Stream
from coffea_dispatch.options import BatchResources, ExecutorState, ProcessOptions, WorkerLogs, WorkerWait

LABEL = "coffea_dispatch"
WATCH_SECONDS = 1.0  # how often a call with no result yet looks at the worker jobs


@dataclass(kw_only=True)
class ParslSettings(WorkerWait, WorkerLogs, BatchResources, ProcessOptions, ExecutorState):
    """parsl on a batch system: worker jobs sized as the batch clusters' are."""


# parsl starts its interchange and worker pools by script name: ours are in this environment's bin/, which
# need not be on PATH (e.g. `.venv/bin/python -m ...`)
ENVIRONMENT_BIN = Path(sys.executable).parent


def _worker_init(settings: ParslSettings) -> str:
    """The job's first lines: this environment's bin/ first on PATH, the proxy and the import path."""
    return "\n".join([f"export PATH={ENVIRONMENT_BIN}:$PATH", *worker_prologue(settings)])


def _blocks(settings: ParslSettings) -> dict[str, int]:
    initial = settings.scaleout or DEFAULT_BATCH_JOBS
    return {"init_blocks": initial, "min_blocks": 0, "max_blocks": max(initial, settings.max_scaleout or initial)}


def provider(settings: ParslSettings):
    """The batch system's parsl provider for `settings.name`, from its backend."""
    backend = backend_for(settings.name)
    return backend.parsl_provider(settings.name, settings, _worker_init(settings), _blocks(settings))


def parsl_config(settings: ParslSettings):
    """The parsl configuration for `settings.name`: one HighThroughputExecutor on that batch system."""
    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor
    from parsl.executors.high_throughput.executor import DEFAULT_INTERCHANGE_LAUNCH_CMD, DEFAULT_LAUNCH_CMD

    logs = Path(settings.log_directory).absolute()
    executor = HighThroughputExecutor(
        label=LABEL,
        launch_cmd=f"{ENVIRONMENT_BIN}/{DEFAULT_LAUNCH_CMD}",
        interchange_launch_cmd=[f"{ENVIRONMENT_BIN}/{DEFAULT_INTERCHANGE_LAUNCH_CMD[0]}"],
        provider=provider(settings),
        max_workers_per_node=settings.workers or 1,
        worker_logdir_root=str(logs),
        # CurveZMQ between the interchange and the worker pools, with keys parsl makes for the run (in its run
        # folder, which the worker jobs see): nobody else can send the pools work or read their results
        encrypted=True,
    )
    # retries: a chunk whose worker job was lost (preempted, walltime) runs again; a chunk that fails returns
    # its failure as a result instead (coffea_dispatch.pipeline.chunk), so it is never retried blindly
    return Config(executors=[executor], retries=2, run_dir=str(logs / "parsl"), initialize_logging=False)


def apply(function: Callable, item: Any) -> Any:
    return function(item)


def _cancel(futures: list) -> None:
    """parsl cannot cancel a submitted app (its AppFuture says so); the kernel's cleanup ends the workers."""
    for future in futures:
        with contextlib.suppress(NotImplementedError):
            future.cancel()


class SubmitAnswers:
    """The batch system's answers to the provider's submit commands that failed, kept as they come: parsl only
    logs them (in a block's status, among its own words) and submits another block."""

    def __init__(self, provider: Any, submit_command: str) -> None:
        self.refusals: list[str] = []
        self.submit_command = submit_command
        self.execute_wait = provider.execute_wait
        provider.execute_wait = self  # the provider runs every scheduler command through it

    def __call__(self, command: str, *args: Any, **kwargs: Any) -> tuple[int, str, str]:
        code, stdout, stderr = self.execute_wait(command, *args, **kwargs)
        words = command.split(maxsplit=1)
        if code != 0 and words and words[0].rpartition("/")[2] == self.submit_command:
            answer = "; ".join(line.strip() for line in (stderr or stdout or "").splitlines() if line.strip())
            self.refusals.append(answer or f"exit code {code}, no output")
        return code, stdout, stderr


@dataclass
class FirstWorker:
    """The worker jobs, watched until a worker connects: a refused submission or --worker-wait passed ends the
    run in one line."""

    executor: Any  # parsl's HighThroughputExecutor
    settings: ParslSettings
    answers: SubmitAnswers
    waited: WorkerDeadline = field(init=False)
    started: bool = False

    def __post_init__(self) -> None:
        self.waited = WorkerDeadline(self.settings.worker_wait)

    def watch(self) -> None:
        if self.started:
            return
        name = self.settings.name
        if self.answers.refusals:
            raise DispatchError(refused_line(name, self.answers.refusals[0]))
        if self.executor.connected_managers():
            self.started = True
        elif self.executor.bad_state_is_set:
            words = " ".join(str(self.executor.executor_exception).split())
            raise DispatchError(f"executor '{name}': parsl gave up on its worker jobs ({shortened(words)})")
        elif self.waited.over():
            raise DispatchError(never_started(name, self.waited, list(self.executor.blocks_to_job_id.values())))


class WatchedCompleted(FuturesCompleted):
    """Futures as they complete; while none does, the worker jobs are looked at (`watch`) every second."""

    def __init__(self, futures: Iterable, watch: Callable[[], None]) -> None:
        super().__init__(futures)
        self.watch = watch

    def __iter__(self) -> Iterator[Any]:
        while self.pending:
            done, self.pending = wait(self.pending, timeout=WATCH_SECONDS, return_when=FIRST_COMPLETED)
            if not done:
                self.watch()
            yield from done


@dataclass
class ParslRun(Titled):
    """coffea's executor interface, `executor(items, function, accumulator)`, on the loaded DataFlowKernel."""

    first_worker: FirstWorker | None = None

    def __call__(self, items, function, accumulator):
        from parsl.app.app import python_app

        app = python_app(apply, executors=[LABEL])

        def submit(items: list, keys: list[str], priority: int) -> list:
            return [app(function, item) for item in items]

        watch = self.first_worker.watch if self.first_worker is not None else lambda: None
        completed = functools.partial(WatchedCompleted, watch=watch)
        stream = Stream(submit, completed, lambda future: future.result(), _cancel)
        return stream(items, accumulator, self.progress)


@contextlib.contextmanager
def parsl_executor(settings: ParslSettings, announce: Callable[[str], None]) -> Iterator[ParslRun]:
    import parsl

    check_submit_command(settings, "or use the dask or vanilla executors")
    config = parsl_config(settings)
    try:
        parsl.dfk()
    except Exception:  # none loaded (NoDataFlowKernelError; RuntimeError in older parsl): ours is the only one
        pass
    else:
        raise DispatchError("a parsl DataFlowKernel is already loaded in this process: run in a fresh process")
    (executor,) = config.executors
    answers = SubmitAnswers(executor.provider, backend_for(settings.name).submit_command)
    kernel = parsl.load(config)
    blocks = _blocks(settings)
    announce(
        f"parsl: {blocks['init_blocks']} to {blocks['max_blocks']} {settings.name.split('/')[1]} worker job(s) of "
        f"{settings.workers or 1} worker(s) requested; logs in {config.run_dir}"
    )
    try:
        yield ParslRun(status=settings.status, first_worker=FirstWorker(executor, settings, answers))
    finally:
        kernel.cleanup()
        parsl.clear()


class ParslKind(ExecutorKind):
    """`parsl/<system>`: every backend's parsl provider."""

    settings = ParslSettings

    def names(self) -> tuple[str, ...]:
        from coffea_dispatch.batch.registry import backends

        return tuple(name for backend in backends() for name in backend.parsl_executors)

    def owns(self, name: str) -> bool:
        backend = backend_for(name)  # built-in backends first: no plugin is read for theirs
        return backend is not None and name in backend.parsl_executors

    def expected_workers(self, settings: ParslSettings) -> int:
        return first_batch_workers(settings)

    def open(self, settings: ParslSettings, n_items: int, announce: Callable[[str], None]):
        return parsl_executor(settings, announce)
