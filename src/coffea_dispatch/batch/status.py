"""`coffea-dispatch status <submission folder>`: what every job of a submission did, from its own records.

Works without the batch system's queue command: each job writes `jobs/<sample>-<i>.result.json` when it ends;
a job with no record has not finished. Where the queue can be asked, those are split into queued, running and
gone (left the queue without a record: killed from outside by memory, walltime, a cancel or a lost node).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from coffea_dispatch.batch.backend import BatchBackend, JobState
from coffea_dispatch.batch.job import JobRecord, read_record
from coffea_dispatch.batch.recovery import Decision, decide
from coffea_dispatch.batch.registry import array_backend
from coffea_dispatch.batch.submission import MANIFEST, Job, Submission
from coffea_dispatch.batch.triage import Triage, triage
from coffea_dispatch.errors import DispatchError
from coffea_dispatch.output import LEDGER

ERROR_TAIL_LINES = 5


@dataclass(frozen=True)
class Failure:
    """A failed job (a record says so) or a gone one (left the queue without a record), and why."""

    job: Job
    exit_code: int | None  # None: gone, or held before it could write a record
    tail: str  # the end of its error file
    why: Triage
    plan: Decision  # what `resubmit` (and --wait) will do about it
    held: bool = False  # the scheduler keeps it, held (it runs again only when released)


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
    failed_jobs: list[Failure] = field(default_factory=list)
    gone_jobs: list[Failure] = field(default_factory=list)


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


def diagnose(
    backend: BatchBackend,
    submission: Submission,
    jobs: list[tuple[Job, JobRecord | None]],
    answer: dict[str, str] | None,
    *,
    force: bool = False,
) -> dict[str, Failure]:
    """Why each of these failed or vanished jobs ended (their records, error files, the queue's `answer` and
    what the scheduler kept of their end) and what resubmitting it will do."""
    reports = backend.end_reports(submission, [job for job, _ in jobs]) if jobs else {}
    failures = {}
    for job, record in jobs:
        tail = error_tail(submission, job)
        why = triage(backend, record, (answer or {}).get(job.name), tail, reports.get(job.name))
        plan = decide(backend, submission, job, why, force=force)
        held = (answer or {}).get(job.name) is not None and backend.state(answer[job.name]) is JobState.HELD
        failures[job.name] = Failure(job, record.exit_code if record else None, tail, why, plan, held)
    return failures


def refuse_dump(folder: str | Path) -> None:
    """A run's --dump folder is no submission: `check` is what reads it (`status demo/output` is a newcomer's
    first guess after the demo)."""
    path = Path(folder)
    if not (path / MANIFEST).exists() and (path / LEDGER).is_dir():
        quoted = shlex.quote(str(folder))
        raise DispatchError(
            f"{folder}: a --dump folder, not a job array's submission folder (status follows job arrays): "
            f"`coffea-dispatch check {quoted}` says what it holds and what is left to run"
        )


def submission_status(folder: str | Path, ask_queue: bool = False) -> tuple[Submission, dict[str, SampleStatus], bool]:
    """Per sample, what the jobs did and, for each failed or vanished job, why (`triage`) and what a
    resubmission will do; with `ask_queue`, what the batch queue says of the unfinished ones. The third value
    tells whether the queue could be asked."""
    refuse_dump(folder)
    submission = Submission.load(folder)
    backend = array_backend(submission.executor)
    answer = backend.queue_answer(submission) if ask_queue else None
    statuses: dict[str, SampleStatus] = {}
    ended: list[tuple[Job, JobRecord | None]] = []
    for job in submission.jobs:
        status = statuses.setdefault(job.sample, SampleStatus(job.sample))
        record = read_record(job.record)
        native = (answer or {}).get(job.name)
        if record is None:
            status.unfinished += 1
            if answer is not None:
                state = backend.state(native) if native is not None else None
                if state is None or not state.active:  # ended without a record, or held
                    status.gone += 1
                    ended.append((job, None))
                elif state is JobState.RUNNING:
                    status.running += 1
                else:
                    status.queued += 1
        elif record.status == "done":
            status.done += 1
            status.events += record.events or 0
        else:
            status.failed += 1
            ended.append((job, record))
    failures = diagnose(backend, submission, ended, answer)
    for job, record in ended:
        status = statuses[job.sample]
        (status.failed_jobs if record is not None else status.gone_jobs).append(failures[job.name])
    return submission, statuses, answer is not None
