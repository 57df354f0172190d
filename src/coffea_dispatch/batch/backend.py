"""The one interface a batch system implements: job arrays (write, submit, ask the queue, cancel), and the Dask
cluster and parsl provider that start worker jobs on it.

Everything that does not depend on the scheduler lives here: finding its commands, running them with one-line
failures, turning the submit command's answer into a job id (or an error that shows that answer), asking the
queue and translating its native states into one `JobState`. A backend module holds one subclass, which says
only what its scheduler does differently; `batch.registry` finds it and derives the executor names from it.
"""

from __future__ import annotations

import shlex
import shutil
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar

from coffea_dispatch.batch.network import COMMAND_TIMEOUT, TIMED_OUT, query
from coffea_dispatch.batch.submission import Job, Resources, Submission
from coffea_dispatch.errors import DispatchError
from coffea_dispatch.options import Option, format_duration

# (submit file or script, the jobs it runs): what write_files and resubmit_files return
Groups = list[tuple[Path, list["Job"]]]


class JobState(Enum):
    """A job's state in any batch queue: each backend translates its scheduler's native states to these."""

    PENDING = "pending"  # waiting for a slot
    RUNNING = "running"  # started, transferring files or completing
    SUSPENDED = "suspended"
    HELD = "held"  # kept in the queue, not run again until released
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"  # a native state the backend does not know

    @property
    def active(self) -> bool:
        """The job may still (re)write its record: the scheduler runs it now or will run it by itself."""
        return self in (JobState.PENDING, JobState.RUNNING, JobState.SUSPENDED)

    @property
    def in_queue(self) -> bool:
        """Still waiting or running: active, or held until released (the others have ended)."""
        return self.active or self is JobState.HELD


class Cause(Enum):
    """Why a job failed, in the terms a resubmission acts on."""

    MEMORY = "memory"
    WALLTIME = "walltime"
    INPUT = "bad input"  # an unreadable file, a missing branch, a wrong configuration
    PROCESSOR = "processor exception"
    NODE = "node failure or preemption"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class EndReport:
    """What the scheduler itself keeps about how a job ended: a hold or remove reason, an accounting record."""

    cause: Cause | None  # what its codes say for sure (None: read `evidence` like a line of the error file)
    evidence: str
    peak_mb: float | None = None  # the job's largest memory use as the scheduler measured it


class SubmitError(DispatchError):
    """A scheduler command failed or answered something we cannot read: one line with the command, its exit code
    and its raw answer, which is kept (stdout, stderr, returncode) for callers that want more."""

    def __init__(self, command: list[str], reason: str, *, returncode: int, stdout: str, stderr: str):
        answer = " ".join((stderr or stdout).split()) or "(no output)"
        super().__init__(f"{shlex.join(command)} {reason} (exit code {returncode}): {answer}")
        self.command, self.returncode, self.stdout, self.stderr = command, returncode, stdout, stderr


class BatchBackend(ABC):
    """One batch system. Subclasses set the class attributes and implement the abstract methods."""

    name: ClassVar[str]  # how the user calls the batch system
    array_executor: ClassVar[str | None] = None  # --executor name of its job arrays
    dask_executors: ClassVar[tuple[str, ...]] = ()  # --executor names of its Dask clusters
    parsl_executors: ClassVar[tuple[str, ...]] = ()  # --executor names of parsl on it
    submit_command: ClassVar[str]
    queue_command: ClassVar[str | None] = None
    cancel_command: ClassVar[str | None] = None
    native_states: ClassVar[dict[str, JobState]] = {}  # the scheduler's state names -> JobState
    options: ClassVar[tuple[Option, ...]] = ()  # command-line options only this backend reads
    end_causes: ClassVar[dict[str, Cause]] = {}  # native states a job ends in -> why it failed
    end_messages: ClassVar[dict[str, Cause]] = {}  # what the scheduler writes in a job's error file (lower case)
    job_number: ClassVar[str] = '"$1"'  # the shell expression by which its job scripts know which job they run

    @property
    def executors(self) -> tuple[str, ...]:
        array = (self.array_executor,) if self.array_executor else ()
        return (*array, *self.dask_executors, *self.parsl_executors)

    # --- shared by every backend ---------------------------------------------------------------------------

    def available(self) -> bool:
        return shutil.which(self.submit_command) is not None

    def run_command(self, command: list[str]) -> str:
        """Run one of the scheduler's commands: its standard output, or SubmitError naming it and its answer."""
        done = query(command, COMMAND_TIMEOUT)
        if done.returncode == TIMED_OUT:
            what = f"gave no answer within {COMMAND_TIMEOUT} s (it may have acted all the same: status tells)"
            raise SubmitError(command, what, returncode=done.returncode, stdout="", stderr=done.stderr)
        if done.returncode != 0:
            raise SubmitError(command, "failed", returncode=done.returncode, stdout=done.stdout, stderr=done.stderr)
        return done.stdout

    def submit(self, commands: list[list[str]]) -> list[str]:
        """Run each submit command; the job (cluster, array) id each one created."""
        ids = []
        for command in commands:
            answer = self.run_command(command)
            job_id = self.parse_submit_output(answer)
            if not job_id:
                raise SubmitError(command, "gave no job id we can read", returncode=0, stdout=answer, stderr="")
            ids.append(job_id)
        return ids

    def state(self, native: str) -> JobState:
        return self.native_states.get(native.strip().upper(), JobState.UNKNOWN)

    def queue_answer(self, submission: Submission) -> dict[str, str] | None:
        """Job name -> native state, for the submission's jobs the queue knows (a scheduler may keep ended jobs
        listed for a while, with the state they ended in); None when the queue cannot be asked (no queue
        command here, or it failed): then only the jobs' own records tell."""
        if self.queue_command is None or shutil.which(self.queue_command) is None:
            return None
        command = self.queue_query(submission)
        if command is None:  # nothing of this submission can be in the queue
            return {}
        done = query(command)  # bounded: a scheduler that does not answer is one that cannot be asked
        if done.returncode != 0:
            return None
        return self.parse_queue(submission, done.stdout)

    def queued_jobs(self, submission: Submission) -> dict[str, JobState] | None:
        """Job name -> state, for the submission's jobs still in the queue: active, or held until released."""
        answer = self.queue_answer(submission)
        if answer is None:
            return None
        states = {name: self.state(native) for name, native in answer.items()}
        return {name: state for name, state in states.items() if state.in_queue}

    def jobs_said(self, job_ids: list[str]) -> str | None:
        """What the queue says of these jobs (the scheduler's own ids), in one line: why worker jobs it accepted
        never started (pending for resources, held, gone). None where the queue cannot be asked here."""
        command = self.jobs_query(job_ids) if job_ids and self.queue_command else None
        if command is None or shutil.which(command[0]) is None:
            return None
        done = query(command)
        if done.returncode != 0:
            answer = " ".join((done.stderr or done.stdout).split()) or f"exit code {done.returncode}"
            return f"{command[0]} failed for job(s) {', '.join(job_ids)}: {answer}"
        states = self.parse_jobs(done.stdout)
        if not states:
            return f"{command[0]} lists none of job(s) {', '.join(job_ids)}"
        counted = Counter(states)
        said = ", ".join(f"{n} {state}" if len(states) > 1 else state for state, n in counted.items())
        return f"{command[0]} says of job(s) {', '.join(job_ids)}: {said}"

    def jobs_query(self, job_ids: list[str]) -> list[str] | None:
        """The queue command that lists these jobs (by id) with their state and why they wait (None: none)."""
        return None

    def parse_jobs(self, text: str) -> list[str]:
        """Each job's state and reason, as the scheduler words them, from `jobs_query`'s answer."""
        return []

    def cancel(self, submission: Submission, jobs: list[Job]) -> list[str]:
        """Remove `jobs` from the queue (whether queued or running); one line per command run."""
        submitted = [job for job in jobs if job.cluster]
        commands = self.cancel_commands(submission, submitted) if submitted else []
        if not commands:
            return []
        if shutil.which(commands[0][0]) is None:
            raise DispatchError(
                f"{commands[0][0]} is not on PATH here; on the submit node run: {'; '.join(map(shlex.join, commands))}"
            )
        said = []
        for command in commands:
            answer = " ".join(self.run_command(command).split())
            said.append(f"{shlex.join(command)}: {answer or 'done'}")
        return said

    def fetch_logs(self, submission: Submission) -> list[str]:
        """Bring the jobs' logs back where the scheduler kept them elsewhere; what was done, one line each."""
        return [f"{self.name} jobs write their output and error files in place: nothing to fetch"]

    def check_options(self, values: dict[str, Any]) -> None:
        """Refuse bad values of this backend's own `options` before anything is written."""
        return None

    def end_reports(self, submission: Submission, jobs: list[Job]) -> dict[str, EndReport]:
        """Job name -> what the scheduler says of how `jobs` ended, for those it still knows (asked only for
        failed or vanished jobs); empty where it cannot be asked."""
        return {}

    def peak_mb_in(self, text: str) -> float | None:
        """The peak memory (MB) the scheduler wrote in a kill message, when its messages carry one."""
        return None

    def time_limit(self, resources: Resources) -> str:
        """How long a job with these resources may run, in the scheduler's terms."""
        return f"--time {format_duration(resources.walltime_seconds)}"

    def longer(self, resources: Resources) -> Resources | None:
        """The same request with more time (a longer queue, a longer --time), or None when no longer one is
        allowed: a job killed at its walltime is resubmitted with this."""
        return None

    # --- what each scheduler does its own way --------------------------------------------------------------

    @abstractmethod
    def write_files(self, submission: Submission) -> Groups:
        """The scripts (and submit files) of a new submission."""

    @abstractmethod
    def resubmit_files(self, submission: Submission, jobs: list[Job], attempt: int) -> Groups:
        """What runs `jobs` again, with the scripts already written."""

    @abstractmethod
    def submit_commands(self, submission: Submission, groups: Groups) -> list[list[str]]:
        """One command per group; the first word is `submit_command`."""

    @abstractmethod
    def parse_submit_output(self, output: str) -> str | None:
        """The job id in the submit command's answer, or None when there is none."""

    def queue_query(self, submission: Submission) -> list[str] | None:
        """The queue command that lists the submission's jobs (None: none can be queued)."""
        raise NotImplementedError(f"{self.name} has no queue command")

    def parse_queue(self, submission: Submission, text: str) -> dict[str, str]:
        """Job name -> native state, from the queue command's answer."""
        raise NotImplementedError(f"{self.name} has no queue command")

    @abstractmethod
    def cancel_commands(self, submission: Submission, jobs: list[Job]) -> list[list[str]]:
        """The commands that remove `jobs` (all submitted) from the queue."""

    @abstractmethod
    def max_job_seconds(self, walltime_seconds: int, queue: str | None) -> int:
        """How long one job with this --walltime (in seconds) and queue may run: the grid proxy must outlive it."""

    def dask_cluster(self, executor: str, settings: Any, options: dict[str, Any]) -> Any:
        """The dask-jobqueue cluster of `executor` (one of `dask_executors`): `options` are what every cluster
        gets (worker size, TLS, dashboard, the jobs' prologue), made by the Dask launcher; the backend adds
        its own."""
        raise DispatchError(f"executor '{executor}' is not a Dask executor of {self.name}")

    def parsl_provider(self, executor: str, settings: Any, worker_init: str, blocks: dict[str, int]) -> Any:
        """The parsl ExecutionProvider of `executor` (one of `parsl_executors`)."""
        raise DispatchError(f"executor '{executor}' is not a parsl executor of {self.name}")
