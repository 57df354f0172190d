"""The one path of a job array, whoever starts it (the command line, `coffea_dispatch.run`, the job-array
executor in coffea's Runner): submit a planned submission, or continue the earlier one of the same work (what
it left unsubmitted submitted; without waiting, its failed and vanished jobs resubmitted by cause), then follow
its jobs until they end, resubmitting failures by cause. Summing what the jobs saved is the caller's
(`dump.collect`), as is what its answer becomes (a RunResult, coffea's accumulator).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from coffea_dispatch.batch.registry import array_backend
from coffea_dispatch.batch.submission import Submission
from coffea_dispatch.batch.submit import all_done, continue_submission, submit_new
from coffea_dispatch.batch.wait import WaitOutcome, follow_jobs


@dataclass(frozen=True)
class Following:
    """How a job array is followed once submitted."""

    wait: bool  # block until every job ended (else return once submitted, unless all are done)
    retries: int  # resubmissions of a failed job, each changed by why it failed
    poll_seconds: float
    shown: bool  # the jobs' progress bar
    again: str = ""  # how to come back after Ctrl-C, beside `coffea-dispatch status` ({folder}: the submission's)


@dataclass
class ArrayRun:
    submission: Submission
    outcome: WaitOutcome | None = None  # None: submitted and not waited for


def run_array(
    earlier: Submission | None,
    plan: Callable[[], Submission],
    following: Following,
    announce: Callable[[str], None],
) -> ArrayRun:
    """`earlier` continued, or `plan()` written and submitted; then followed as `following` says."""
    submission = _submitted(earlier, plan, following.wait, announce)
    if not following.wait and not all_done(submission):
        return ArrayRun(submission)
    outcome = follow_jobs(
        submission,
        retries=following.retries,
        poll_seconds=following.poll_seconds,
        shown=following.shown,
        announce=announce,
        again=following.again.format(folder=str(submission.folder)),
    )
    return ArrayRun(outcome.submission, outcome)


def _submitted(
    earlier: Submission | None, plan: Callable[[], Submission], wait: bool, announce: Callable[[str], None]
) -> Submission:
    if earlier is None:
        submission = plan()
        submitted = submit_new(array_backend(submission.executor), submission)
        announce(submitted.submitted_line())
        return submitted.submission
    announce(f"continuing {earlier.folder}: {len(earlier.jobs)} job(s) of the same work")
    continued = continue_submission(earlier, wait=wait)
    for line in continued.decision_lines():
        announce(line)
    return continued.submission
