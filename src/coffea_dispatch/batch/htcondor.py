"""HTCondor job arrays (vanilla_lxplus): submit files and job scripts for a Submission, and condor_submit.

With cluster_per_sample (the default) each sample is one cluster, `AN-<sample>.sub` with `queue N`, and
`AN-<sample>.sh` runs job `$1` (`arguments = $(ProcId)`); otherwise every job is its own cluster.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

from coffea_dispatch.batch.submission import Job, Submission
from coffea_dispatch.errors import DispatchError
from coffea_dispatch.proxy import JOB_FLAVOUR_SECONDS

SUBMIT_COMMAND = "condor_submit"
RETRIES = 2  # automatic re-runs of a failing job before it is held
RELEASES = 3  # held jobs are released automatically at most this many starts, then stay held
DEFAULT_FLAVOUR = "workday"


def memory_mb(memory: str | None) -> int:
    """--memory 10GB -> request_memory in MB (HTCondor's unit)."""
    from dask.utils import parse_bytes

    return max(1, parse_bytes(memory or "10GB") // 10**6)


def job_script(submission: Submission, jobs: list[Job]) -> str:
    """A bash script that runs job `$1` of `jobs`: each command written with every argument shell-quoted."""
    lines = [
        "#!/bin/bash",
        f"# coffea-dispatch: {len(jobs)} job(s) of sample {jobs[0].sample!r}; job number in $1",
        f"cd {shlex.quote(str(submission.folder))} || exit 1",
    ]
    if submission.proxy:
        lines.append(f"export X509_USER_PROXY={shlex.quote(submission.proxy)}")
    lines.append('case "$1" in')
    for position, job in enumerate(jobs):
        lines.append(f"  {position}) exec {job.shell_command()} ;;")
    lines += ['  *) echo "coffea-dispatch: no job $1 in this script" >&2; exit 2 ;;', "esac", ""]
    return "\n".join(lines)


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
    lines += [queue_statement, ""]
    return "\n".join(lines)


def script_groups(submission: Submission, jobs: list[Job]) -> dict[str, list[Job]]:
    """Jobs by the script that runs them: `AN-<sample>` (one cluster per sample) or `AN-<sample>-<i>`."""
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        stem = f"AN-{job.sample}" if submission.cluster_per_sample else f"AN-{job.name}"
        groups.setdefault(stem, []).append(job)
    return groups


def number_in_script(submission: Submission, job: Job) -> int:
    """The `$1` that makes a job's script run that job."""
    return job.index if submission.cluster_per_sample else 0


def write_files(submission: Submission) -> list[tuple[Path, list[Job]]]:
    """The .sh and .sub files of a new submission: (submit file, the jobs it queues) pairs."""
    written = []
    for stem, jobs in script_groups(submission, submission.jobs).items():
        script = submission.jobs_folder / f"{stem}.sh"
        script.write_text(job_script(submission, jobs))
        script.chmod(0o755)
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


def submit_commands(submission: Submission, submit_files: list[Path]) -> list[list[str]]:
    spool = ["-spool"] if str(submission.folder).startswith("/eos/") else []  # EOS is not writable by the schedd
    return [[SUBMIT_COMMAND, *spool, str(sub)] for sub in submit_files]


def available() -> bool:
    return shutil.which(SUBMIT_COMMAND) is not None


def submit(commands: list[list[str]]) -> list[str]:
    """Run condor_submit; return the cluster ids."""
    clusters = []
    for command in commands:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise DispatchError(f"{shlex.join(command)} failed: {' '.join((done.stderr or done.stdout).split())}")
        clusters.append(done.stdout.strip().rsplit("cluster", 1)[-1].strip(" ."))
    return clusters


def lifetime_seconds(queue: str | None) -> int:
    return JOB_FLAVOUR_SECONDS.get(queue or DEFAULT_FLAVOUR, JOB_FLAVOUR_SECONDS[DEFAULT_FLAVOUR])
