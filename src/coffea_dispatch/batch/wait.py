"""`--wait`: watch a submission until every job has ended, resubmit the failed ones up to `retries` times,
then say which failed for good (the caller sums what the jobs saved: `dump.collect.job_accumulators`).

A job has ended when it wrote its record (done or failed) and is no longer active in the batch queue (a
scheduler may rerun a failing job in place, over its record). A job that left the queue without a record
was killed from outside (memory, walltime, a cancel, a lost node): it counts as failed once it has been seen
missing on consecutive polls, which absorbs a shared filesystem showing the record late.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from coffea_dispatch.batch.job import JobRecord, read_record
from coffea_dispatch.batch.recovery import Decision
from coffea_dispatch.batch.registry import array_backend
from coffea_dispatch.batch.submission import Job, Submission
from coffea_dispatch.batch.submit import resubmit
from coffea_dispatch.errors import DispatchError
from coffea_dispatch.signals import interruptible

POLLS_BEFORE_LOST = 2


@dataclass
class WaitOutcome:
    submission: Submission
    failed: list[Job] = field(default_factory=list)  # failed for good, after the retries
    lost: list[str] = field(default_factory=list)  # names of the jobs that vanished without a record
    resubmissions: int = 0
    decisions: list[Decision] = field(default_factory=list)  # why each failed attempt failed, what was done


class JobsFailed(DispatchError):
    """Some jobs still failed after the resubmissions: the run fails (exit 1), naming them and what to do."""

    exit_code = 1

    def __init__(self, outcome: WaitOutcome):
        names = ", ".join(job.name for job in outcome.failed[:5]) + (" ..." if len(outcome.failed) > 5 else "")
        lost = f" ({len(outcome.lost)} left the queue without a record: memory, walltime or a lost node?)"
        last = {d.job: d for d in outcome.decisions}  # the last decision on each job
        why = "; ".join(last[job.name].line() for job in outcome.failed[:3] if job.name in last)
        super().__init__(
            f"{len(outcome.failed)} job(s) failed after {outcome.resubmissions} resubmission(s): {names}"
            f"{lost if outcome.lost else ''}{'; ' + why if why else ''}; "
            f"see coffea-dispatch status {outcome.submission.folder}"
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
            state = queued.get(job.name) if queued is not None else None
            active = state is not None and state.active
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
    backend = array_backend(submission.executor)
    outcome = WaitOutcome(submission)
    watch = _Watch()
    given_up: set[str] = set()  # failed for a reason a rerun cannot fix (a processor exception, a cap reached)
    while True:
        watch.poll(outcome.submission, backend)
        failed = watch.failed(outcome.submission)
        if on_progress is not None:
            done = sum(1 for r in watch.records.values() if r.status == "done")
            on_progress(done, len(failed), len(outcome.submission.jobs))
        if watch.all_ended(outcome.submission):
            outcome.lost = sorted(set(outcome.lost) | set(watch.lost()))
            retry = [job.name for job in failed if job.name not in given_up]
            if not retry or outcome.resubmissions >= retries:
                outcome.failed = failed
                return outcome
            result = resubmit(outcome.submission.folder, jobs=retry)
            outcome.submission = result.submission
            outcome.decisions += result.decisions
            given_up |= {d.job for d in result.decisions if not d.rerun}
            rerun = [d.job for d in result.decisions if d.rerun]
            outcome.resubmissions += 1 if rerun else 0
            for name in rerun:  # their new run starts from scratch
                watch.records.pop(name, None)
                watch.unseen_polls.pop(name, None)
            continue
        time.sleep(poll_seconds)


def follow_jobs(
    submission: Submission,
    *,
    retries: int,
    poll_seconds: float,
    shown: bool,
    announce: Callable[[str], None],
    again: str = "",
) -> WaitOutcome:
    """`wait_for_jobs` as a user waits on it: a bar of the jobs done (and failed so far), Ctrl-C stopping the wait
    whatever handler a library installed (the jobs keep running: said, with `again`, how to come back), and the
    jobs that failed for good raised as JobsFailed."""
    try:
        with interruptible(), _jobs_bar(shown, len(submission.jobs)) as show:
            outcome = wait_for_jobs(submission, retries=retries, poll_seconds=poll_seconds, on_progress=show)
    except KeyboardInterrupt:
        folder = shlex.quote(str(submission.folder))
        announce(f"stopped waiting; the jobs keep running: coffea-dispatch status {folder}{again}")
        raise
    if outcome.failed:
        raise JobsFailed(outcome)
    return outcome


@contextmanager
def _jobs_bar(shown: bool, total: int) -> Iterator[Callable[[int, int, int], None]]:
    """`show(done, failed, total)` moves it; rich redraws from its own thread."""
    if not shown:
        yield lambda done, failed, total: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("jobs"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[failed]} failed"))
    with Progress(*columns, TimeElapsedColumn()) as progress:
        task = progress.add_task("jobs", total=total, failed=0)
        yield lambda done, failed, total: progress.update(task, completed=done, total=total, failed=failed)
