"""SLURM job arrays (vanilla_slurm): job scripts for a Submission, and `sbatch --array`.

The layout is HTCondor's: with cluster_per_sample each sample is one array job running `AN-<sample>.sh`, whose
task id is the job number (so `AN-<sample>.<i>.out/.err` name the same files as under HTCondor); otherwise
every job is its own one-task array. Resources go on the sbatch command line, not in `#SBATCH` lines, so the
script stays the same for a resubmission (`--array=2,5`) and runs by hand as `bash AN-<sample>.sh <i>`.
"""

from __future__ import annotations

import getpass
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
from coffea_dispatch.proxy import walltime_seconds

SUBMIT_COMMAND = "sbatch"
QUEUE_COMMAND = "squeue"
JOB_NUMBER = '"${1:-$SLURM_ARRAY_TASK_ID}"'  # by hand: $1; under sbatch --array: the task id
DEFAULT_MAX_ARRAY_SIZE = 1001  # SLURM's default MaxArraySize: task ids go up to 1000
# a job in these states may still write its record
ACTIVE_STATES = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING"}


def array_spec(numbers: list[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> "0-2,5,7-8": sbatch's --array syntax, short even for thousands of tasks."""
    ranges: list[list[int]] = []
    for number in sorted(set(numbers)):
        if ranges and number == ranges[-1][1] + 1:
            ranges[-1][1] = number
        else:
            ranges.append([number, number])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)


def _pattern_safe(path: Path) -> str:
    """sbatch expands %-patterns in --output/--error: a literal % in a folder name must be written %%."""
    return str(path).replace("%", "%%")


def sbatch_command(submission: Submission, script: Path, numbers: list[int]) -> list[str]:
    stem = script.stem
    logs = submission.jobs_folder
    command = [
        SUBMIT_COMMAND,
        "--parsable",
        f"--array={array_spec(numbers)}",
        f"--job-name={stem}",
        f"--output={_pattern_safe(logs / stem)}.%a.out",
        f"--error={_pattern_safe(logs / stem)}.%a.err",
        f"--mem={memory_mb(submission.memory)}M",
        f"--time={submission.walltime or '01:00:00'}",
        "--export=ALL",
    ]
    if submission.queue:
        command.append(f"--partition={submission.queue}")
    return [*command, str(script)]


def write_files(submission: Submission) -> list[tuple[Path, list[Job]]]:
    """The job scripts of a new submission: (script, the jobs its array runs) pairs."""
    if "\\" in str(submission.jobs_folder):  # a backslash turns off sbatch's %a expansion: logs would collide
        raise DispatchError(f"{submission.jobs_folder}: SLURM log paths cannot contain a backslash; submit elsewhere")
    groups = write_scripts(submission, submission.jobs, JOB_NUMBER)
    return [(submission.jobs_folder / f"{stem}.sh", jobs) for stem, jobs in groups.items()]


def resubmit_files(submission: Submission, jobs: list[Job], attempt: int) -> list[tuple[Path, list[Job]]]:
    """The scripts already written run the failed jobs again: only the --array list changes."""
    return [(submission.jobs_folder / f"{stem}.sh", group) for stem, group in script_groups(submission, jobs).items()]


def submit_commands(submission: Submission, groups: list[tuple[Path, list[Job]]]) -> list[list[str]]:
    commands = []
    limit = max_array_size()
    for script, jobs in groups:
        numbers = [number_in_script(submission, job) for job in jobs]
        if max(numbers) >= limit:
            raise DispatchError(
                f"sample {jobs[0].sample!r} needs array task ids up to {max(numbers)}, above this cluster's "
                f"MaxArraySize ({limit}): use --files-per-job to make fewer jobs, or --no-cluster-per-sample"
            )
        commands.append(sbatch_command(submission, script, numbers))
    return commands


def max_array_size() -> int:
    """The cluster's MaxArraySize (task ids must stay below it), or SLURM's default when it cannot be asked."""
    if shutil.which("scontrol") is None:
        return DEFAULT_MAX_ARRAY_SIZE
    done = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, check=False)
    for line in done.stdout.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "MaxArraySize" and value.strip().isdigit():
            return int(value.strip())
    return DEFAULT_MAX_ARRAY_SIZE


def available() -> bool:
    return shutil.which(SUBMIT_COMMAND) is not None


def submit(commands: list[list[str]]) -> list[str]:
    """Run sbatch --parsable; return the array job ids ("123" or "123;cluster")."""
    return [run_batch_command(command).strip().split(";")[0] for command in commands]


def queued_jobs(submission: Submission) -> dict[str, str] | None:
    """Job name -> SLURM state (PENDING, RUNNING, ...) for the submission's jobs still in the queue; None when
    squeue is not available (then only the job records tell)."""
    if shutil.which(QUEUE_COMMAND) is None:
        return None
    done = subprocess.run(
        [QUEUE_COMMAND, "--noheader", "--array", "--user", getpass.getuser(), "--format", "%F|%K|%T"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        return None
    by_task = {(job.cluster, str(number_in_script(submission, job))): job.name for job in submission.jobs}
    states = {}
    for line in done.stdout.splitlines():
        cluster, task, state = (line.split("|") + ["", ""])[:3]
        name = by_task.get((cluster.strip(), task.strip()))
        if name is not None:
            states[name] = state.strip()
    return states


def lifetime_seconds(options) -> int:
    """How long a job may run: its --walltime (the grid proxy must outlive it)."""
    return walltime_seconds(options.walltime or "01:00:00")


def fetch_logs(submission: Submission) -> list[str]:
    return ["SLURM jobs write their output and error files in place: nothing to fetch"]
