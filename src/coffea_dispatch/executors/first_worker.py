"""A Dask cluster's first worker, waited for: a worker job that the batch system refuses fails the wait at once.

dask-jobqueue submits worker jobs from distributed's adaptive scaling; a job its submit command refuses
(a partition that does not exist, more memory than the queue allows) is logged with a traceback and submitted
again every second, forever: the run or notebook waited for a worker that would never come. While a cluster we
started waits for its first worker, those errors are caught where they are logged (`Refusals`, a logging filter)
and the wait fails with the batch system's own words, in one line.

Jobs the batch system accepts but never starts (a partition whose nodes are down, a request no node meets, a
queue that stays full) would keep the run waiting just as long: the wait is bounded (--worker-wait), and ends
with what the queue says of the jobs, which are then cancelled as the cluster closes. parsl's worker jobs are
waited for the same way (executors/parsl.py), with these messages.
"""

from __future__ import annotations

import contextlib
import logging
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

from coffea_dispatch.batch.registry import backend_for
from coffea_dispatch.errors import DispatchError
from coffea_dispatch.options import duration_seconds, format_duration

# where a worker job the batch system refused is logged: distributed's adaptive scaling submits jobs from a
# callback of the cluster's event loop (tornado logs its error), or awaits them (distributed logs it)
SUBMISSION_LOGGERS = ("tornado.application", "distributed.deploy.adaptive")
STARTING_WORKERS = "_correct_state_internal"  # SpecCluster's coroutine starting workers (dask-jobqueue's: jobs)
FIRST_WORKER_POLL_SECONDS = 1.0


class Refusals(logging.Filter):
    """Worker jobs the batch system refused (dask-jobqueue's submit command failed) while the cluster
    starts: each is logged with a traceback and submitted again every second, forever. The first error is kept
    (the run fails with its words, in one line) and the tracebacks are not printed; other records pass."""

    def __init__(self) -> None:
        super().__init__()
        self.errors: list[BaseException] = []

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if error is None or not any(f.name == STARTING_WORKERS for f in traceback.extract_tb(error.__traceback__)):
            return True
        if not self.errors:
            self.errors.append(error)
        return False

    def stop(self) -> None:
        for name in SUBMISSION_LOGGERS:
            logging.getLogger(name).removeFilter(self)


@contextlib.contextmanager
def refused_submissions() -> Iterator[Refusals]:
    refusals = Refusals()
    for name in SUBMISSION_LOGGERS:
        logging.getLogger(name).addFilter(refusals)
    try:
        yield refusals
    finally:
        refusals.stop()


def first_worker(client, cluster: Any, settings: Any, refused: Refusals, announce: Callable[[str], None]) -> None:
    """Wait for a worker, failing at once with the batch system's own words when it refuses the worker jobs
    (before, a run waited forever while every second's submission failed the same way), and after --worker-wait
    with what the queue says of jobs that never started."""
    if client.scheduler_info().get("workers"):
        return
    announce("waiting for the first Dask worker to start ...")
    waited = WorkerDeadline(settings.worker_wait)
    while not refused.errors:
        try:
            client.wait_for_workers(1, timeout=FIRST_WORKER_POLL_SECONDS)
            return
        except TimeoutError:
            if waited.over():
                raise DispatchError(_no_worker(settings.name, cluster, waited)) from None
    from distributed.core import Status

    for job in _jobs(cluster):
        if job.status == Status.created:  # never started: the cluster's close would assert it had been
            job.status = Status.failed
    raise DispatchError(refused_line(settings.name, _refusal_words(refused.errors[0])))


def _no_worker(name: str, cluster: Any, waited: WorkerDeadline) -> str:
    if cluster is None:  # attached to a scheduler: its workers are someone else's to start
        return (
            f"executor '{name}': no worker joined the scheduler within {format_duration(waited.seconds)} "
            "(--worker-wait): scale its cluster up, or wait longer (--worker-wait)"
        )
    return never_started(name, waited, [job.job_id for job in _jobs(cluster) if getattr(job, "job_id", None)])


def _jobs(cluster: Any) -> list[Any]:
    """The worker jobs of a cluster we started (none for one attached to)."""
    return list(cluster.workers.values()) if cluster is not None else []


class WorkerDeadline:
    """--worker-wait, running: over once that long has passed since the workers were asked for (never, at 0)."""

    def __init__(self, wait: str) -> None:
        self.seconds = duration_seconds(wait, "--worker-wait")
        self.start = time.monotonic()

    def over(self) -> bool:
        return self.seconds > 0 and time.monotonic() - self.start >= self.seconds


def refused_line(name: str, words: str) -> str:
    """One line for worker jobs the batch system refused, quoting its answer (Dask's and parsl's)."""
    backend = backend_for(name)
    submit = backend.submit_command if backend is not None else "the batch system"
    return (
        f"executor '{name}': {submit} refused the worker job ({shortened(words)}); "
        "check --queue, --walltime and --memory against the site's limits"
    )


def never_started(name: str, waited: WorkerDeadline, job_ids: list[str]) -> str:
    """One line for worker jobs that were accepted but did not start within --worker-wait: what the queue says
    of them (pending and why, held, gone), asked before they are cancelled."""
    backend = backend_for(name)
    said = backend.jobs_said(job_ids) if backend is not None else None
    if said is None:
        said = f"job(s) {', '.join(job_ids)}" if job_ids else "no worker job was submitted"
    return (
        f"executor '{name}': no worker started within {format_duration(waited.seconds)} (--worker-wait); {said}; "
        "the worker jobs are cancelled: ask for what the queue can give (--queue, --memory, --walltime) or wait "
        "longer (--worker-wait)"
    )


def _refusal_words(error: BaseException) -> str:
    """dask-jobqueue's error carries the command's whole output: its stderr, on one line."""
    text = str(error)
    stderr = text.rpartition("stderr:")[2] if "stderr:" in text else text
    return "; ".join(line.strip() for line in stderr.splitlines() if line.strip()) or " ".join(text.split())


def shortened(words: str, most: int = 400) -> str:
    """A scheduler's answer kept to a line's share: its beginning and its end, where its verdict usually is
    (its "fatal: ...")."""
    if len(words) <= most:
        return words
    return f"{words[: most // 2 - 3]} ... {words[-(most // 2 - 2) :]}"
