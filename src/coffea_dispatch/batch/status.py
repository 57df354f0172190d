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
from coffea_dispatch.batch.triage import Triage, triage

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
    failed_jobs: list[tuple[Job, int | None, str, Triage]] = field(default_factory=list)  # exit code, error tail
    gone_jobs: list[tuple[Job, str, Triage]] = field(default_factory=list)  # error tail, why


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
    """Per sample, what the jobs did and, for each failed or vanished job, why (`triage`); with `ask_queue`,
    what the batch queue says of the unfinished ones. The third value tells whether the queue could be asked."""
    submission = Submission.load(folder)
    backend = array_backend(submission.executor)
    answer = backend.queue_answer(submission) if ask_queue else None
    statuses: dict[str, SampleStatus] = {}
    for job in submission.jobs:
        status = statuses.setdefault(job.sample, SampleStatus(job.sample))
        record = read_record(job.record)
        native = (answer or {}).get(job.name)
        if record is None:
            status.unfinished += 1
            if answer is not None:
                state = backend.state(native) if native is not None else None
                if state is None or not state.in_queue:  # ended without a record
                    status.gone += 1
                    tail = error_tail(submission, job)
                    status.gone_jobs.append((job, tail, triage(backend, None, native, tail)))
                elif state is JobState.RUNNING:
                    status.running += 1
                else:
                    status.queued += 1
        elif record.status == "done":
            status.done += 1
            status.events += record.events or 0
        else:
            status.failed += 1
            tail = error_tail(submission, job)
            status.failed_jobs.append((job, record.exit_code, tail, triage(backend, record, native, tail)))
    return submission, statuses, answer is not None
