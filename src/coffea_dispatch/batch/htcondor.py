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


def submit_file(
    submission: Submission,
    stem: str,
    queue_statement: str,
    *,
    memory: str | None,
    queue: str | None,
    job_macro: str = "$(ProcId)",
    max_materialize: int | None = None,
) -> str:
    """`queue_statement`: `queue N` for a new cluster (job number = ProcId), or `queue job in (2, 5)` to rerun
    some jobs of the same script (job number = $(job)); output and error files are named by job number."""
    jobs = submission.jobs_folder
    flavour = queue or DEFAULT_FLAVOUR
    lines = [
        f"executable = {jobs / (stem + '.sh')}",
        f"arguments = {job_macro}",
        f"output = {jobs / stem}.{job_macro}.out",
        f"error = {jobs / stem}.{job_macro}.err",
        f"log = {jobs / stem}.log",
        f"request_memory = {memory_mb(memory)}",
        f'+JobFlavour = "{flavour}"',
        "getenv = True",
        f"max_retries = {RETRIES}",
        # after the retries, hold instead of leaving the queue; release a few times, then stay held
        f"on_exit_hold = (ExitCode =!= 0) && (NumJobStarts > {RETRIES})",
        f"periodic_release = (NumJobStarts < {RETRIES + RELEASES}) && ((time() - EnteredCurrentStatus) > 600)",
        "requirements = Machine =!= LastRemoteHost",
    ]
    if max_materialize:
        lines.append(f"max_materialize = {max_materialize}")
    lines += [queue_statement, ""]
    return "\n".join(lines)


def write_files(submission: Submission, *, memory: str | None, queue: str | None) -> list[Path]:
    """The .sub and .sh files of a submission; returns the submit files."""
    groups = (
        [(f"AN-{sample}", jobs) for sample, jobs in submission.samples().items()]
        if submission.cluster_per_sample
        else [(f"AN-{job.name}", [job]) for job in submission.jobs]
    )
    submit_files = []
    for stem, jobs in groups:
        script = submission.jobs_folder / f"{stem}.sh"
        script.write_text(job_script(submission, jobs))
        script.chmod(0o755)
        sub = submission.jobs_folder / f"{stem}.sub"
        sub.write_text(submit_file(submission, stem, f"queue {len(jobs)}", memory=memory, queue=queue))
        submit_files.append(sub)
    return submit_files


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
            raise RuntimeError(f"{shlex.join(command)} failed: {done.stderr.strip() or done.stdout.strip()}")
        clusters.append(done.stdout.strip().rsplit("cluster", 1)[-1].strip(" ."))
    return clusters


def lifetime_seconds(queue: str | None) -> int:
    return JOB_FLAVOUR_SECONDS.get(queue or DEFAULT_FLAVOUR, JOB_FLAVOUR_SECONDS[DEFAULT_FLAVOUR])


def resubmit_files(submission: Submission, jobs: list[Job], attempt: int) -> list[Path]:
    """Submit files that rerun `jobs` with the scripts already written (`queue job in (...)`)."""
    if submission.cluster_per_sample:
        by_script: dict[str, list[int]] = {}
        for job in jobs:
            by_script.setdefault(f"AN-{job.sample}", []).append(job.index)
    else:
        by_script = {f"AN-{job.name}": [0] for job in jobs}
    files = []
    for stem, numbers in by_script.items():
        sub = submission.jobs_folder / f"{stem}.resubmit{attempt}.sub"
        queue_statement = f"queue job in ({', '.join(map(str, numbers))})"
        sub.write_text(
            submit_file(
                submission, stem, queue_statement, memory=submission.memory, queue=submission.queue, job_macro="$(job)"
            )
        )
        files.append(sub)
    return files
