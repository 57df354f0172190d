"""SLURM: job arrays (vanilla_slurm), dask-jobqueue's SLURMCluster (dask/slurm) and parsl's SlurmProvider
(parsl/slurm).

The job-array layout is every backend's: with cluster_per_sample each sample is one array job running
`AN-<sample>.sh`, whose task id is the job number (so `AN-<sample>.<i>.out/.err` name the same files as
elsewhere); otherwise every job is its own one-task array. Resources go on the sbatch command line, not in
`#SBATCH` lines, so the script stays the same for a resubmission (`--array=2,5`) and runs by hand as
`bash AN-<sample>.sh <i>`.
"""

from __future__ import annotations

import dataclasses
import functools
import getpass
import re
import shutil
from pathlib import Path
from typing import Any

from coffea_dispatch.batch.backend import BatchBackend, Cause, EndReport, Groups, JobState
from coffea_dispatch.batch.network import query
from coffea_dispatch.batch.submission import (
    Job,
    Resources,
    Submission,
    number_in_script,
    resource_groups,
    write_scripts,
)
from coffea_dispatch.errors import DispatchError
from coffea_dispatch.options import duration_seconds, format_duration, memory_gb

JOB_NUMBER = '"${1:-$SLURM_ARRAY_TASK_ID}"'  # by hand: $1; under sbatch --array: the task id
DEFAULT_MAX_ARRAY_SIZE = 1001  # SLURM's default MaxArraySize: task ids go up to 1000
# slurmstepd's memory kill: "StepId=1.batch exceeded memory limit (646205440 > 209715200), being killed" (bytes)
MEMORY_KILL = re.compile(r"exceeded memory limit \((\d+) > \d+\)")
RSS_UNITS = {"K": 2**-10, "M": 1.0, "G": 2**10, "T": 2**20}  # sacct's MaxRSS suffixes -> MB


class Slurm(BatchBackend):
    name = "SLURM"
    array_executor = "vanilla_slurm"
    dask_executors = ("dask/slurm",)
    parsl_executors = ("parsl/slurm",)
    submit_command = "sbatch"
    queue_command = "squeue"
    cancel_command = "scancel"
    job_number = JOB_NUMBER
    # a job in the active ones may still write its record
    native_states = {
        "PENDING": JobState.PENDING,
        "REQUEUED": JobState.PENDING,
        "CONFIGURING": JobState.RUNNING,
        "RUNNING": JobState.RUNNING,
        "COMPLETING": JobState.RUNNING,
        "RESIZING": JobState.RUNNING,
        "SUSPENDED": JobState.SUSPENDED,
        "REQUEUE_HOLD": JobState.HELD,
        "COMPLETED": JobState.COMPLETED,
        "FAILED": JobState.FAILED,
        "TIMEOUT": JobState.FAILED,
        "OUT_OF_MEMORY": JobState.FAILED,
        "NODE_FAIL": JobState.FAILED,
        "BOOT_FAIL": JobState.FAILED,
        "DEADLINE": JobState.FAILED,
        "PREEMPTED": JobState.FAILED,
        "CANCELLED": JobState.CANCELLED,
    }

    end_causes = {
        "OUT_OF_MEMORY": Cause.MEMORY,
        "TIMEOUT": Cause.WALLTIME,
        "DEADLINE": Cause.WALLTIME,
        "NODE_FAIL": Cause.NODE,
        "PREEMPTED": Cause.NODE,
        "BOOT_FAIL": Cause.NODE,
    }
    # slurmstepd's words in the job's --error file (memory enforced by jobacct_gather or cgroups)
    end_messages = {
        "exceeded job memory limit": Cause.MEMORY,
        "exceeded memory limit": Cause.MEMORY,
        "due to time limit": Cause.WALLTIME,
        "due to preemption": Cause.NODE,
        "due to node failure": Cause.NODE,
    }

    def write_files(self, submission: Submission) -> Groups:
        """The job scripts of a new submission: (script, the jobs its array runs) pairs."""
        if "\\" in str(submission.jobs_folder):  # a backslash turns off sbatch's %a expansion: logs would collide
            raise DispatchError(
                f"{submission.jobs_folder}: SLURM log paths cannot contain a backslash; submit elsewhere"
            )
        groups = write_scripts(submission, submission.jobs, self.job_number)
        return [(submission.jobs_folder / f"{stem}.sh", jobs) for stem, jobs in groups.items()]

    def resubmit_files(self, submission: Submission, jobs: list[Job], attempt: int) -> Groups:
        """The scripts already written run the failed jobs again: the --array list changes, and --mem and --time
        where recovery changed them (one sbatch per script and resources)."""
        groups = resource_groups(submission, jobs)
        return [(submission.jobs_folder / f"{stem}.sh", group) for (stem, _), group in groups.items()]

    def submit_commands(self, submission: Submission, groups: Groups) -> list[list[str]]:
        commands = []
        limit = max_array_size()
        for script, jobs in groups:
            numbers = [number_in_script(submission, job) for job in jobs]
            if max(numbers) >= limit:
                raise DispatchError(
                    f"sample {jobs[0].sample!r} needs array task ids up to {max(numbers)}, above this cluster's "
                    f"MaxArraySize ({limit}): use --files-per-job to make fewer jobs, or --no-cluster-per-sample"
                )
            commands.append(sbatch_command(submission, script, numbers, submission.resources(jobs[0])))
        return commands

    def parse_submit_output(self, output: str) -> str | None:
        """sbatch --parsable: "123" or "123;cluster" -> "123"."""
        job_id = output.strip().split(";")[0]
        return job_id if job_id.isdigit() else None

    def queue_query(self, submission: Submission) -> list[str] | None:
        # --states=all: jobs that ended in the last MinJobAge seconds too, with how (TIMEOUT, OUT_OF_MEMORY, ...)
        user = getpass.getuser()
        return [self.queue_command, "--noheader", "--array", "--states=all", "--user", user, "--format", "%F|%K|%T"]

    def parse_queue(self, submission: Submission, text: str) -> dict[str, str]:
        """`squeue --array --format %F|%K|%T` lines: array job id, task id, state."""
        by_task = {(job.cluster, str(number_in_script(submission, job))): job.name for job in submission.jobs}
        states = {}
        for line in text.splitlines():
            cluster, task, state = (line.split("|") + ["", ""])[:3]
            name = by_task.get((cluster.strip(), task.strip()))
            if name is not None:
                states[name] = state.strip()
        return states

    def jobs_query(self, job_ids: list[str]) -> list[str] | None:
        # --states=all: a job that already ended is listed with how it ended, not refused as unknown
        return [self.queue_command, "--noheader", "--states=all", f"--jobs={','.join(job_ids)}", "--format=%T|%r"]

    def parse_jobs(self, text: str) -> list[str]:
        """`squeue --format %T|%r` lines: "PENDING|PartitionConfig" -> "PENDING (PartitionConfig)"."""
        said = []
        for line in text.splitlines():
            state, _, reason = line.strip().partition("|")
            if state:
                said.append(f"{state} ({reason})" if reason and reason != "None" else state)
        return said

    def cancel_commands(self, submission: Submission, jobs: list[Job]) -> list[list[str]]:
        tasks = [f"{job.cluster}_{number_in_script(submission, job)}" for job in jobs]
        return [[self.cancel_command, *tasks]] if tasks else []

    def max_job_seconds(self, walltime_seconds: int, queue: str | None) -> int:
        """Its --walltime: SLURM ends the job there."""
        return walltime_seconds

    def longer(self, resources: Resources) -> Resources | None:
        """Twice the --time, up to the partition's MaxTime."""
        now = resources.walltime_seconds
        cap = partition_max_seconds(resources.queue)
        doubled = 2 * now if cap is None else min(2 * now, cap)
        return dataclasses.replace(resources, walltime_seconds=doubled) if doubled > now else None

    def peak_mb_in(self, text: str) -> float | None:
        kills = MEMORY_KILL.findall(text)
        return round(max(int(used) for used in kills) / 2**20, 1) if kills else None

    def end_reports(self, submission: Submission, jobs: list[Job]) -> dict[str, EndReport]:
        """From sacct, where accounting is on (elsewhere sacct fails and the error files tell)."""
        arrays = sorted({job.cluster for job in jobs if job.cluster})
        if not arrays or shutil.which("sacct") is None:
            return {}
        command = ["sacct", "--noheader", "--parsable2", "--jobs", ",".join(arrays), "--format=JobID,State,MaxRSS"]
        done = query(command)
        return parse_sacct(self, submission, done.stdout) if done.returncode == 0 else {}

    def dask_cluster(self, executor: str, settings: Any, options: dict[str, Any]) -> Any:
        from dask_jobqueue import SLURMCluster

        return SLURMCluster(queue=settings.queue, walltime=settings.walltime, **options)

    def parsl_provider(self, executor: str, settings: Any, worker_init: str, blocks: dict[str, int]) -> Any:
        from parsl.providers import SlurmProvider

        return SlurmProvider(
            partition=settings.queue,
            cores_per_node=settings.workers or 1,
            mem_per_node=memory_gb(settings.memory),
            walltime=settings.walltime,
            worker_init=worker_init,
            exclusive=False,  # a share of a node, like one HiggsDNA job, not the whole node
            **blocks,
        )


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


def sbatch_command(submission: Submission, script: Path, numbers: list[int], resources: Resources) -> list[str]:
    stem = script.stem
    logs = submission.jobs_folder
    command = [
        Slurm.submit_command,
        "--parsable",
        f"--array={array_spec(numbers)}",
        f"--job-name={stem}",
        f"--output={_pattern_safe(logs / stem)}.%a.out",
        f"--error={_pattern_safe(logs / stem)}.%a.err",
        f"--mem={resources.memory_mb}M",
        f"--time={format_duration(resources.walltime_seconds)}",
        "--export=ALL",
    ]
    if resources.queue:
        command.append(f"--partition={resources.queue}")
    return [*command, str(script)]


def parse_sacct(backend: Slurm, submission: Submission, text: str) -> dict[str, EndReport]:
    """`sacct --parsable2 --format=JobID,State,MaxRSS` lines: the array task's line has its state, its steps'
    lines (`<id>_<task>.batch`) the memory it used; state words after the first ("CANCELLED by 0") are dropped."""
    by_task = {f"{job.cluster}_{number_in_script(submission, job)}": job.name for job in submission.jobs}
    states: dict[str, str] = {}
    peaks: dict[str, float] = {}
    for line in text.splitlines():
        job_id, state, rss = (line.split("|") + ["", ""])[:3]
        task, _, step = job_id.partition(".")
        name = by_task.get(task)
        if name is None:
            continue
        if not step and state:
            states[name] = state.split()[0]
        if rss and rss[-1] in RSS_UNITS:
            peaks[name] = max(peaks.get(name, 0.0), float(rss[:-1]) * RSS_UNITS[rss[-1]])
    return {
        name: EndReport(
            backend.end_causes.get(state), f"sacct: {state}", round(peaks[name], 1) if peaks.get(name) else None
        )
        for name, state in states.items()
    }


@functools.lru_cache(maxsize=16)  # asked once per partition, not once per failed job
def partition_max_seconds(partition: str | None) -> int | None:
    """The partition's MaxTime in seconds (the default partition's without one); None: unlimited or unknown."""
    if shutil.which("scontrol") is None:
        return None
    command = ["scontrol", "--oneliner", "show", "partition", *([partition] if partition else [])]
    done = query(command)
    for line in done.stdout.splitlines():
        fields = dict(word.partition("=")[::2] for word in line.split())
        if partition is None and fields.get("Default") != "YES":
            continue
        limit = fields.get("MaxTime", "UNLIMITED")
        return None if limit in ("UNLIMITED", "INFINITE") else duration_seconds(limit, "MaxTime")
    return None


def max_array_size() -> int:
    """The cluster's MaxArraySize (task ids must stay below it), or SLURM's default when it cannot be asked."""
    if shutil.which("scontrol") is None:
        return DEFAULT_MAX_ARRAY_SIZE
    done = query(["scontrol", "show", "config"])
    for line in done.stdout.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "MaxArraySize" and value.strip().isdigit():
            return int(value.strip())
    return DEFAULT_MAX_ARRAY_SIZE
