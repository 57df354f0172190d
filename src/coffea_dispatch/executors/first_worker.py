"""A Dask cluster's first worker, waited for: a worker job that the batch system refuses fails the wait at once.

dask-jobqueue submits worker jobs from distributed's adaptive scaling; a job its submit command refuses
(a partition that does not exist, more memory than the queue allows) is logged with a traceback and submitted
again every second, forever: the run or notebook waited for a worker that would never come. While a cluster we
started waits for its first worker, those errors are caught where they are logged (`Refusals`, a logging filter)
and the wait fails with the batch system's own words, in one line.
"""

from __future__ import annotations

import contextlib
import logging
import traceback
from collections.abc import Callable, Iterator
from typing import Any

from coffea_dispatch.batch.registry import backend_for
from coffea_dispatch.errors import DispatchError

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


def first_worker(client, cluster: Any, name: str, refused: Refusals, announce: Callable[[str], None]) -> None:
    """Wait for a worker, failing at once with the batch system's own words when it refuses the worker jobs
    (before, a run waited forever while every second's submission failed the same way)."""
    if client.scheduler_info().get("workers"):
        return
    announce("waiting for the first Dask worker to start ...")
    while not refused.errors:
        try:
            client.wait_for_workers(1, timeout=FIRST_WORKER_POLL_SECONDS)
            return
        except TimeoutError:
            continue
    from distributed.core import Status

    for job in list(cluster.workers.values()) if cluster is not None else []:
        if job.status == Status.created:  # never started: the cluster's close would assert it had been
            job.status = Status.failed
    backend = backend_for(name)
    submit = backend.submit_command if backend is not None else "the batch system"
    raise DispatchError(
        f"executor '{name}': {submit} refused the worker job ({_refusal_words(refused.errors[0])}); "
        "check --queue, --walltime and --memory against the site's limits"
    )


def _refusal_words(error: BaseException) -> str:
    """dask-jobqueue's error carries the command's whole output: its stderr, on one line."""
    text = str(error)
    stderr = text.rpartition("stderr:")[2] if "stderr:" in text else text
    words = "; ".join(line.strip() for line in stderr.splitlines() if line.strip()) or " ".join(text.split())
    return words if len(words) <= 300 else words[:297] + "..."
