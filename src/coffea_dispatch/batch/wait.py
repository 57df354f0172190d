"""`--wait`: watch a submission until every job has ended, resubmit the failed ones up to `retries` times,
then hand back what the jobs produced, summed and merged.

A job has ended when it wrote its record (done or failed) and is no longer active in the batch queue (a
scheduler may rerun a failing job in place, over its record). A job that left the queue without a record
was killed from outside (memory, walltime, a cancel, a lost node): it counts as failed once it has been seen
missing on consecutive polls, which absorbs a shared filesystem showing the record late.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from coffea_dispatch.analysis import load_analysis
from coffea_dispatch.batch.job import JobRecord, read_record
from coffea_dispatch.batch.recovery import Decision
from coffea_dispatch.batch.registry import array_backend
from coffea_dispatch.batch.submission import Job, Submission, accumulator_path
from coffea_dispatch.errors import DispatchError
from coffea_dispatch.options import RunOptions

if TYPE_CHECKING:
    from coffea_dispatch.run import RunResult

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
    from coffea_dispatch.batch.submit import resubmit

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


def job_accumulators(submission: Submission) -> list:
    """The accumulators the done jobs saved (`jobs/<sample>-<i>.coffea`), in job order."""
    from coffea.util import load

    outputs = []
    for job in submission.jobs:
        path = accumulator_path(job.record)
        if os.path.exists(path):
            outputs.append(load(path))
    return outputs


def collect_batch(
    options: RunOptions,
    submission,
    *,
    retries: int,
    poll_seconds: float = 10.0,
    on_progress: Callable[[int, int, int], None] | None = None,
) -> RunResult:
    """`--wait` for a batch submission: block until its jobs end (resubmitting failures up to `retries` times),
    merge the outputs per sample, and summarise like any other executor, accumulators summed over the jobs."""
    from coffea.processor import accumulate

    from coffea_dispatch.batch.merge import merge
    from coffea_dispatch.run import RunResult, SampleSummary, candidates_in, save_and_plot

    started = time.perf_counter()
    outcome = wait_for_jobs(submission, retries=retries, poll_seconds=poll_seconds, on_progress=on_progress)
    if outcome.failed:
        raise JobsFailed(outcome)
    submission = outcome.submission
    output = accumulate(job_accumulators(submission)) or {}
    summaries: dict[str, SampleSummary] = {}
    for job in submission.jobs:
        record = read_record(job.record)
        summary = summaries.setdefault(job.sample, SampleSummary(job.sample))
        bad_files = record.bad_files.get(job.sample, {})
        summary.bad_files.update(bad_files)
        summary.files += len(job.files) - len(bad_files)
        summary.chunks += record.chunks
        summary.events += record.events or 0
        summary.seconds += record.wall_seconds
    for sample, summary in summaries.items():
        summary.candidates = candidates_in(output, sample)
    notes = [f"{len(submission.jobs)} batch job(s) in {submission.folder}"]
    if outcome.resubmissions:
        notes.append(f"failed jobs were resubmitted {outcome.resubmissions} time(s)")
    notes += [f"resubmission: {decision.line()}" for decision in outcome.decisions]
    if options.dump:
        notes += [f"merged {m.sample}: {m.rows:,} rows -> {m.path}" for m in merge(submission.folder)]
    run = RunResult(
        load_analysis(options.json_analysis, options.redirector),
        submission.executor,
        len(submission.jobs),
        output,
        summaries,
        wall_seconds=0.0,
        notes=notes,
    )
    save_and_plot(run, options)
    run.wall_seconds = time.perf_counter() - started
    return run
