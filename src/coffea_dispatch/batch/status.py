"""`coffea-dispatch status <submission folder>`: what every job of a submission did, from its own records.

Works without the batch system's queue command: each job writes `jobs/<sample>-<i>.result.json` when it ends;
a job with no record has not finished. Where the queue can be asked, those are split into queued, running and
gone (left the queue without a record: killed from outside by memory, walltime, a cancel or a lost node).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from coffea_dispatch.batch.backend import JobState
from coffea_dispatch.batch.job import read_record
from coffea_dispatch.batch.registry import array_backend
from coffea_dispatch.batch.submission import Job, Submission

ERROR_TAIL_LINES = 5


@dataclass
class SampleStatus:
    sample: str
    done: int = 0
    failed: int = 0
    unfinished: int = 0  # no record yet: queued + running + gone (+ unknown without a queue to ask)
    queued: int = 0
    running: int = 0
    gone: int = 0
    events: int = 0
    failed_jobs: list[tuple[Job, int | None, str]] = field(default_factory=list)  # job, exit code, error tail
    gone_jobs: list[tuple[Job, str]] = field(default_factory=list)  # job, error tail


def error_files(submission: Submission, job: Job) -> list[Path]:
    """The job's stderr: `AN-<sample>.<proc>.err` (one cluster per sample) or `AN-<sample>-<i>.<proc>.err`."""
    jobs = submission.jobs_folder
    if submission.cluster_per_sample:
        return [jobs / f"AN-{job.sample}.{job.index}.err"]
    return sorted(jobs.glob(f"AN-{job.name}.*.err"))


def error_tail(submission: Submission, job: Job, lines: int = ERROR_TAIL_LINES) -> str:
    for path in error_files(submission, job):
        if path.exists():
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def submission_status(folder: str | Path, ask_queue: bool = False) -> tuple[Submission, dict[str, SampleStatus], bool]:
    """Per sample, what the jobs did; with `ask_queue`, what the batch queue says of the unfinished ones.
    The third value tells whether the queue could be asked."""
    submission = Submission.load(folder)
    queue = array_backend(submission.executor).queued_jobs(submission) if ask_queue else None
    statuses: dict[str, SampleStatus] = {}
    for job in submission.jobs:
        status = statuses.setdefault(job.sample, SampleStatus(job.sample))
        record = read_record(job.record)
        if record is None:
            status.unfinished += 1
            if queue is not None:
                state = queue.get(job.name)
                if state is None:
                    status.gone += 1
                    status.gone_jobs.append((job, error_tail(submission, job)))
                elif state is JobState.RUNNING:
                    status.running += 1
                else:
                    status.queued += 1
        elif record.status == "done":
            status.done += 1
            status.events += record.events or 0
        else:
            status.failed += 1
            status.failed_jobs.append((job, record.exit_code, error_tail(submission, job)))
    return submission, statuses, queue is not None
