"""HTCondor job arrays (vanilla_lxplus): submit files and job scripts for a Submission, and condor_submit.

With cluster_per_sample (the default) each sample is one cluster, `AN-<sample>.sub` with `queue N`, and
`AN-<sample>.sh` runs job `$1` (`arguments = $(ProcId)`); otherwise every job is its own cluster.
"""

from __future__ import annotations

import getpass
import shlex
import shutil
import subprocess
from pathlib import Path

from coffea_dispatch.batch.submission import (
    Job,
    Submission,
    memory_mb,
    number_in_script,
    run_batch_command,
    script_groups,
    write_scripts,
)
from coffea_dispatch.errors import DispatchError
from coffea_dispatch.proxy import JOB_FLAVOUR_SECONDS

SUBMIT_COMMAND = "condor_submit"
QUEUE_COMMAND = "condor_q"
RETRIES = 2  # automatic re-runs of a failing job before it is held
RELEASES = 3  # held jobs are released automatically at most this many starts, then stay held
DEFAULT_FLAVOUR = "workday"


def submit_file(submission: Submission, stem: str, queue_statement: str, job_macro: str = "$(ProcId)") -> str:
    """`queue_statement`: `queue N` for a new cluster (job number = ProcId), or `queue job in (2, 5)` to rerun
    some jobs of the same script (job number = $(job)); output and error files are named by job number."""
    jobs = submission.jobs_folder
    flavour = submission.queue or DEFAULT_FLAVOUR
    lines = [
        f"executable = {jobs / (stem + '.sh')}",
        f"arguments = {job_macro}",
        f"output = {jobs / stem}.{job_macro}.out",
        f"error = {jobs / stem}.{job_macro}.err",
        f"log = {jobs / stem}.log",
        f"request_memory = {memory_mb(submission.memory)}",
        f'+JobFlavour = "{flavour}"',
        "getenv = True",
        f"max_retries = {RETRIES}",
        # after the retries, hold instead of leaving the queue; release a few times, then stay held
        f"on_exit_hold = (ExitCode =!= 0) && (NumJobStarts > {RETRIES})",
        f"periodic_release = (NumJobStarts < {RETRIES + RELEASES}) && ((time() - EnteredCurrentStatus) > 600)",
        "requirements = Machine =!= LastRemoteHost",
    ]
    if submission.max_materialize:  # the schedd keeps at most this many jobs of the cluster in the queue
        lines.append(f"max_materialize = {submission.max_materialize}")
    lines += [queue_statement, ""]
    return "\n".join(lines)


def write_files(submission: Submission) -> list[tuple[Path, list[Job]]]:
    """The .sh and .sub files of a new submission: (submit file, the jobs it queues) pairs."""
    written = []
    for stem, jobs in write_scripts(submission, submission.jobs).items():
        sub = submission.jobs_folder / f"{stem}.sub"
        sub.write_text(submit_file(submission, stem, f"queue {len(jobs)}"))
        written.append((sub, jobs))
    return written


def resubmit_files(submission: Submission, jobs: list[Job], attempt: int) -> list[tuple[Path, list[Job]]]:
    """Submit files that rerun `jobs` with the scripts already written (`queue job in (...)`)."""
    written = []
    for stem, group in script_groups(submission, jobs).items():
        sub = submission.jobs_folder / f"{stem}.resubmit{attempt}.sub"
        numbers = ", ".join(str(number_in_script(submission, job)) for job in group)
        sub.write_text(submit_file(submission, stem, f"queue job in ({numbers})", job_macro="$(job)"))
        written.append((sub, group))
    return written


def submit_commands(submission: Submission, groups: list[tuple[Path, list[Job]]]) -> list[list[str]]:
    return [[SUBMIT_COMMAND, *spool_option(submission), str(sub)] for sub, _ in groups]


def spool_option(submission: Submission) -> list[str]:
    """Under /eos the schedd cannot write the job's output and logs: spool them (condor_transfer_data brings
    them back, see `status --fetch-logs`)."""
    return ["-spool"] if on_eos(submission) else []


def on_eos(submission: Submission) -> bool:
    return str(submission.folder).startswith("/eos/")


def available() -> bool:
    return shutil.which(SUBMIT_COMMAND) is not None


def submit(commands: list[list[str]]) -> list[str]:
    """Run condor_submit; return the cluster ids ("... submitted to cluster 123.")."""
    return [run_batch_command(command).strip().rsplit("cluster", 1)[-1].strip(" .") for command in commands]


def lifetime_seconds(options) -> int:
    """How long a job may run: its JobFlavour's limit (the grid proxy must outlive it)."""
    return JOB_FLAVOUR_SECONDS.get(options.queue or DEFAULT_FLAVOUR, JOB_FLAVOUR_SECONDS[DEFAULT_FLAVOUR])


# condor_q's JobStatus numbers
JOB_STATES = {
    "1": "IDLE",
    "2": "RUNNING",
    "3": "REMOVED",
    "4": "COMPLETED",
    "5": "HELD",
    "6": "TRANSFERRING",
    "7": "SUSPENDED",
}
# a job in these states may still (re)write its record: HTCondor's own max_retries reruns it in place
ACTIVE_STATES = {"IDLE", "RUNNING", "TRANSFERRING", "SUSPENDED"}


def queued_jobs(submission: Submission) -> dict[str, str] | None:
    """Job name -> state (IDLE, RUNNING, HELD...) for the submission's jobs in the schedd's queue; None when
    condor_q is not available (then only the job records tell)."""
    if shutil.which(QUEUE_COMMAND) is None:
        return None
    clusters = sorted({job.cluster for job in submission.jobs if job.cluster})
    if not clusters:
        return {}
    done = subprocess.run(
        [QUEUE_COMMAND, *clusters, "-af", "ClusterId", "Args", "JobStatus"], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        return None
    return parse_queue(submission, done.stdout)


def parse_queue(submission: Submission, text: str) -> dict[str, str]:
    """`condor_q -af ClusterId Args JobStatus` lines: the job number is the script argument (ProcId for a new
    cluster, $(job) for a resubmission), so (cluster, argument) names the job."""
    by_argument = {(job.cluster, str(number_in_script(submission, job))): job.name for job in submission.jobs}
    states = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and (parts[0], parts[1]) in by_argument:
            states[by_argument[parts[0], parts[1]]] = JOB_STATES.get(parts[2], parts[2])
    return states


def fetch_logs(submission: Submission) -> list[str]:
    """EOS submissions are spooled: bring the jobs' output and logs back (condor_transfer_data), then remove the
    completed jobs that only waited for that from the queue. Returns what was done, one line each."""
    if not on_eos(submission):
        return [f"{submission.folder} is not under /eos: the jobs wrote their logs in place, nothing to fetch"]
    user = getpass.getuser()
    commands = [
        ["condor_transfer_data", user],
        ["condor_rm", user, "-constraint", "JobStatus == 4"],
    ]
    if shutil.which(commands[0][0]) is None:
        raise DispatchError(
            f"condor_transfer_data is not on PATH here; on the submit node run: {'; '.join(map(shlex.join, commands))}"
        )
    said = []
    for command in commands:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        answer = " ".join((done.stdout + done.stderr).split())
        said.append(f"{shlex.join(command)}: {answer or 'done'}" + ("" if done.returncode == 0 else " (failed)"))
    return said
