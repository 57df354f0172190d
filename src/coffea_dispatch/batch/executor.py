"""The blocking batch executor (`--wait`): watch a submission until every job has ended, resubmit the failed
ones up to `retries` times, then hand back what the jobs produced.

A job has ended when it wrote its record (done or failed) and is no longer running or waiting in the batch
queue (HTCondor reruns a failing job in place, over its record). A job that left the queue without a record
was killed from outside (memory, walltime, scancel, a lost node): it counts as failed once it has been seen
missing on consecutive polls, which absorbs a shared filesystem showing the record late.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from coffea_dispatch.batch.job import JobRecord, read_record
from coffea_dispatch.batch.submission import Job, Submission, accumulator_path
from coffea_dispatch.errors import DispatchError

POLLS_BEFORE_LOST = 2


@dataclass
class WaitOutcome:
    submission: Submission
    failed: list[Job] = field(default_factory=list)  # failed for good, after the retries
    lost: list[str] = field(default_factory=list)  # names of the jobs that vanished without a record
    resubmissions: int = 0


class JobsFailed(DispatchError):
    """Some jobs still failed after the resubmissions: the run fails (exit 1), naming them and what to do."""

    exit_code = 1

    def __init__(self, outcome: WaitOutcome):
        names = ", ".join(job.name for job in outcome.failed[:5]) + (" ..." if len(outcome.failed) > 5 else "")
        lost = f" ({len(outcome.lost)} left the queue without a record: memory, walltime or a lost node?)"
        super().__init__(
            f"{len(outcome.failed)} job(s) failed after {outcome.resubmissions} resubmission(s): {names}"
            f"{lost if outcome.lost else ''}; see coffea-dispatch status {outcome.submission.folder}"
        )
        self.outcome = outcome


@dataclass
class _Watch:
    """What one poll saw: finished records, and how many polls in a row each unfinished job was not queued."""

    records: dict[str, JobRecord] = field(default_factory=dict)
    unseen_polls: dict[str, int] = field(default_factory=dict)

    def poll(self, submission: Submission, backend) -> None:
        queued = backend.queued_jobs(submission)
        for job in submission.jobs:
            if job.name in self.records:
                continue
            active = queued is not None and queued.get(job.name) in backend.ACTIVE_STATES
            record = read_record(job.record)
            if record is not None and not active:  # an active job with a record is being rerun by the scheduler
                self.records[job.name] = record
            elif queued is not None and not active:
                self.unseen_polls[job.name] = self.unseen_polls.get(job.name, 0) + 1
            else:
                self.unseen_polls.pop(job.name, None)

    def lost(self) -> list[str]:
        return [name for name, polls in self.unseen_polls.items() if polls >= POLLS_BEFORE_LOST]

    def all_ended(self, submission: Submission) -> bool:
        lost = set(self.lost())
        return all(job.name in self.records or job.name in lost for job in submission.jobs)

    def failed(self, submission: Submission) -> list[Job]:
        lost = set(self.lost())
        return [
            job
            for job in submission.jobs
            if job.name in lost or (job.name in self.records and self.records[job.name].status != "done")
        ]


def wait_for_jobs(
    submission: Submission,
    *,
    retries: int,
    poll_seconds: float = 10.0,
    on_progress: Callable[[int, int, int], None] | None = None,
) -> WaitOutcome:
    """Block until every job is done or has failed `retries` resubmissions; `on_progress(done, failed, total)`
    is called after every poll."""
    from coffea_dispatch.batch import backend_of, resubmit

    backend = backend_of(submission.executor)
    outcome = WaitOutcome(submission)
    watch = _Watch()
    while True:
        watch.poll(outcome.submission, backend)
        failed = watch.failed(outcome.submission)
        if on_progress is not None:
            done = sum(1 for r in watch.records.values() if r.status == "done")
            on_progress(done, len(failed), len(outcome.submission.jobs))
        if watch.all_ended(outcome.submission):
            outcome.lost = sorted(set(outcome.lost) | set(watch.lost()))
            if not failed or outcome.resubmissions >= retries:
                outcome.failed = failed
                return outcome
            outcome.submission = resubmit(outcome.submission.folder, jobs=[job.name for job in failed]).submission
            outcome.resubmissions += 1
            for job in failed:  # their new run starts from scratch
                watch.records.pop(job.name, None)
                watch.unseen_polls.pop(job.name, None)
            continue
        time.sleep(poll_seconds)


def job_accumulators(submission: Submission) -> list:
    """The accumulators the done jobs saved (`jobs/<sample>-<i>.coffea`), in job order."""
    from coffea.util import load

    outputs = []
    for job in submission.jobs:
        path = accumulator_path(job.record)
        if os.path.exists(path):
            outputs.append(load(path))
    return outputs
