"""Planning and recording a batch submission: one folder, self-contained per-job inputs, one manifest.

Layout (what HiggsDNA users expect): `.higgs_dna_<executor>/<analysis>_YYYYMMDD_HHMMSS/` with `input/`
(`<sample>-<i>.json` and `AN-<sample>-<i>.json` per job, each runnable by hand with --executor iterative)
and `jobs/` (scripts, logs and one `<sample>-<i>.result.json` per finished job). `submission.json` lists
jobs, files, commands, cluster ids and attempts. Nothing is ever overwritten: a second submission in the
same second gets its own folder.
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

from coffea_dispatch.errors import DispatchError
from coffea_dispatch.options import DEFAULT_JOB_MEMORY_MB, DEFAULT_WALLTIME, duration_seconds, memory_mb
from coffea_dispatch.output import write_bytes_atomic

MANIFEST = "submission.json"
DEFAULT_WALLTIME_SECONDS = duration_seconds(DEFAULT_WALLTIME)
READABLE, EXECUTABLE = 0o644, 0o755  # what the batch system reads or runs: nobody else may write it
# jobs share most of their arguments: quoting each distinct one once saves seconds at 100,000 jobs
_quote = functools.lru_cache(maxsize=4096)(shlex.quote)


@dataclass(frozen=True)
class Resources:
    """What one job asks the batch system for. A resubmission may change them per job (batch/recovery.py)."""

    memory_mb: int
    walltime_seconds: int
    queue: str | None  # None: the backend's default queue


@dataclass
class Job:
    """One batch job: some files of one sample, and the command that processes them."""

    sample: str
    index: int
    files: list[str]
    sample_json: str
    analysis_json: str
    command: list[str]
    record: str
    cluster: str | None = None
    attempts: int = 1  # runs prepared: 1 at planning, +1 per resubmission
    # what a resubmission changed for this job alone (None: the submission's --memory, --walltime, --queue)
    memory_mb: int | None = None
    walltime_seconds: int | None = None
    queue: str | None = None
    decisions: list[dict[str, Any]] = field(default_factory=list)  # per failed attempt: why, and what was done

    @property
    def name(self) -> str:
        return f"{self.sample}-{self.index}"

    def shell_command(self) -> str:
        """The command as one shell line, every argument quoted: paths with spaces, quotes or $() stay inert."""
        return " ".join(map(_quote, self.command))


@dataclass
class Submission:
    folder: Path
    analysis: str
    executor: str
    cluster_per_sample: bool
    jobs: list[Job] = field(default_factory=list)
    proxy: str | None = None
    created: str = ""
    # --memory, --walltime, --queue: what every job of the submission requests, parsed once (batch.submit)
    memory_mb: int | None = None
    walltime_seconds: int | None = None
    queue: str | None = None
    backend_options: dict[str, Any] = field(default_factory=dict)  # the options only its backend reads
    unsubmitted: list[dict[str, Any]] = field(default_factory=list)  # {command, jobs} written, not yet submitted
    max_memory_mb: int | None = None  # --max-memory: what a resubmission after a memory failure may ask at most
    digest: str | None = None  # a Runner's work items and function (batch/items.py); None: an analysis JSON's
    inputs_digest: str | None = None  # an analysis JSON's jobs: what they read beyond file names (AnalysisJobs)
    dump: str | None = None  # the --dump every job writes to (None: a Runner's jobs, or a manifest of an older version)
    arguments: list[str] | None = None  # the options every job runs with (None: a manifest of an older version)

    def resources(self, job: Job) -> Resources:
        """What `job` asks for: its own resources where a resubmission changed them, else the submission's."""
        return Resources(
            job.memory_mb or self.memory_mb or DEFAULT_JOB_MEMORY_MB,
            job.walltime_seconds or self.walltime_seconds or DEFAULT_WALLTIME_SECONDS,
            job.queue or self.queue,
        )

    @property
    def input_folder(self) -> Path:
        return self.folder / "input"

    @property
    def jobs_folder(self) -> Path:
        return self.folder / "jobs"

    def samples(self) -> dict[str, list[Job]]:
        grouped: dict[str, list[Job]] = {}
        for job in self.jobs:
            grouped.setdefault(job.sample, []).append(job)
        return grouped

    def save(self) -> None:
        # built by hand, not with dataclasses.asdict: that deep-copies every job (seconds at 100k jobs)
        content = {
            "folder": str(self.folder),
            "analysis": self.analysis,
            "executor": self.executor,
            "cluster_per_sample": self.cluster_per_sample,
            "proxy": self.proxy,
            "created": self.created,
            "memory_mb": self.memory_mb,
            "queue": self.queue,
            "walltime_seconds": self.walltime_seconds,
            "backend_options": self.backend_options,
            "unsubmitted": self.unsubmitted,
            "max_memory_mb": self.max_memory_mb,
            "digest": self.digest,
            "inputs_digest": self.inputs_digest,
            "dump": self.dump,
            "arguments": self.arguments,
            "jobs": [vars(job) for job in self.jobs],
        }
        write_job_file(self.folder / MANIFEST, json.dumps(content) + "\n")  # `submit` runs the commands it holds

    @classmethod
    def load(cls, folder: str | os.PathLike) -> Submission:
        path = Path(folder) / MANIFEST
        try:
            content = json.loads(path.read_text())
        except FileNotFoundError:
            raise DispatchError(f"{folder}: not a submission folder (no {MANIFEST})") from None
        except json.JSONDecodeError as error:
            raise DispatchError(f"{path}: damaged manifest ({error.msg})") from None
        jobs = [Job(**_typed(job)) for job in content.pop("jobs")]
        content = _typed(content)
        # a manifest written before backends declared their own options kept them at the top level
        known = {f.name for f in fields(cls)}
        older = {key: content.pop(key) for key in list(content) if key not in known}
        content.setdefault("backend_options", {}).update({k: v for k, v in older.items() if v is not None})
        return cls(**{**content, "folder": Path(content["folder"]), "jobs": jobs})


def _typed(content: dict[str, Any]) -> dict[str, Any]:
    """A manifest of an older version kept --memory, --walltime and --max-memory as the user wrote them."""
    content = dict(content)
    for text, typed, parse in (
        ("memory", "memory_mb", memory_mb),
        ("max_memory", "max_memory_mb", memory_mb),
        ("walltime", "walltime_seconds", duration_seconds),
    ):
        if text in content:
            value = content.pop(text)
            content[typed] = parse(value) if value else None
    return content


def write_job_file(path: str | os.PathLike, text: str, mode: int = READABLE, durable: bool = True) -> None:
    """A file the batch system (or `submit`) reads or runs, replaced atomically (bash reads a running script
    as it goes) and never writable by others, whatever the umask."""
    write_bytes_atomic(path, text.encode(), durable=durable)
    os.chmod(path, mode)


def not_writable_by_others(folder: Path) -> None:
    """A folder holding what the batch system runs: a group-writable one (umask 002) is made ours alone, one of
    another user's that others may write to is refused."""
    status = folder.stat()
    if status.st_mode & 0o022:
        if status.st_uid != os.getuid():
            raise DispatchError(f"{folder}: others may write there and it is not yours; submit from another folder")
        folder.chmod(status.st_mode & ~0o022)


def new_submission_folder(root: Path, analysis_name: str) -> Path:
    """`<root>/<analysis>_YYYYMMDD_HHMMSS`, or with `_2`, `_3`... when that exists: never reuse a folder."""
    root.mkdir(parents=True, exist_ok=True)
    not_writable_by_others(root)
    stamp = time.strftime("%Y%m%d_%H%M%S")
    for attempt in range(1, 1000):
        folder = root / f"{analysis_name}_{stamp}" if attempt == 1 else root / f"{analysis_name}_{stamp}_{attempt}"
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        not_writable_by_others(folder)
        return folder
    raise DispatchError(f"{root}: could not create a new submission folder")


@dataclass(frozen=True)
class JobRequests:
    """What every job of a submission asks the batch system for, and how its jobs are grouped."""

    cluster_per_sample: bool = True
    proxy: str | None = None
    memory_mb: int | None = None
    queue: str | None = None
    walltime_seconds: int | None = None
    max_memory_mb: int | None = None
    backend_options: dict[str, Any] | None = None


def start_submission(folder: Path, name: str, executor: str, requests: JobRequests, **more: Any) -> Submission:
    """A new submission in `folder` (already made, ours), with its `input/` and `jobs/` folders."""
    submission = Submission(
        folder.resolve(),
        name,
        executor,
        requests.cluster_per_sample,
        proxy=requests.proxy,
        created=time.strftime("%Y-%m-%dT%H:%M:%S"),
        memory_mb=requests.memory_mb,
        queue=requests.queue,
        walltime_seconds=requests.walltime_seconds,
        max_memory_mb=requests.max_memory_mb,
        backend_options=dict(requests.backend_options or {}),
        **more,
    )
    for sub in (submission.input_folder, submission.jobs_folder):
        sub.mkdir()
        not_writable_by_others(sub)
    return submission


def group_files(files: list[str], files_per_job: int) -> list[list[str]]:
    return [files[i : i + files_per_job] for i in range(0, len(files), files_per_job)]


def accumulator_path(record: str | Path) -> str:
    """`jobs/<sample>-<i>.coffea`, beside the job's `<sample>-<i>.result.json`."""
    return str(record).removesuffix(".result.json") + ".coffea"


def _write_new(path: str | Path, text: str) -> None:
    """Create a file that must not exist yet (a submission never overwrites), with as few system calls as possible."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, READABLE)
    try:
        os.write(descriptor, text.encode())
    finally:
        os.close(descriptor)


def submission_root(executor: str) -> Path:
    """`.higgs_dna_<executor>/` in the current folder, where HiggsDNA's vanilla submitter writes its submissions."""
    return Path.cwd() / f".higgs_dna_{executor}"


def submission_folder(executor: str, name: str, folder: str | Path | None = None) -> Path:
    """`folder` exactly when given (it must not exist yet, or be empty), else a new
    `.higgs_dna_<executor>/<name>_YYYYMMDD_HHMMSS`."""
    if folder is None:
        return new_submission_folder(submission_root(executor), name)
    folder = Path(folder).absolute()
    if folder.exists() and any(folder.iterdir()):
        raise DispatchError(f"{folder}: exists and is not a submission folder (no {MANIFEST}): give a new folder")
    folder.mkdir(parents=True, exist_ok=True)
    not_writable_by_others(folder)
    return folder


class JobSpec(Protocol):
    """What the jobs of a job array run, the one thing that differs between the jobs of an analysis JSON (each
    runs `coffea-dispatch run` on its own analysis JSON: `batch/analysis_jobs.py`) and those of coffea's Runner
    (each runs its work items through the pickled function: `batch/items.py`); `plan_jobs` does the rest."""

    name: str  # the submission's name: `<name>_YYYYMMDD_HHMMSS`
    dump: str | None  # the --dump every job writes to
    arguments: list[str]  # the options every job runs with
    digest: str | None  # what the jobs compute, when it is not said by `arguments` and the files
    inputs_digest: str | None  # what an analysis JSON's jobs read beyond file names (entries, trees, metadata)

    def write_shared(self, submission: Submission) -> None:
        """Whatever every job reads, written once into `input/`."""

    def analysis_text(self, sample_json_name: str) -> str:
        """A job's `input/AN-<sample>-<i>.json`, naming its `input/<sample>-<i>.json`."""

    def command(self, analysis_json: str, record: str) -> list[str]:
        """What a job runs, given its `input/AN-<sample>-<i>.json` and its record's path."""


Work = dict[str, dict[str, Any]]  # sample -> file -> what a job's sample JSON lists for it, in order


def plan_jobs(
    work: Work,
    spec: JobSpec,
    *,
    executor: str,
    requests: JobRequests,
    files_per_job: int = 1,
    folder: str | Path | None = None,
    metadata: dict[str, dict] | None = None,
) -> Submission:
    """Write the submission folder of `work`, `files_per_job` files a job (no batch system is contacted here):
    per job `input/<sample>-<i>.json` (its files as a sample JSON lists them), `input/AN-<sample>-<i>.json`
    and the command that runs them, recording to `jobs/<sample>-<i>.result.json`. A sample's `metadata` (coffea's
    dataset metadata) goes into each of its jobs' sample JSONs."""
    target = submission_folder(executor, spec.name, folder)
    more = {"digest": spec.digest, "dump": spec.dump, "arguments": list(spec.arguments)}
    more["inputs_digest"] = spec.inputs_digest
    submission = start_submission(target, spec.name, executor, requests, **more)
    spec.write_shared(submission)
    # plain strings, not Path objects, in this loop: 100,000 jobs made pathlib the largest cost of planning
    inputs, logs = str(submission.input_folder), str(submission.jobs_folder)
    for sample, files in work.items():
        for index, group in enumerate(group_files(list(files), files_per_job)):
            name = f"{sample}-{index}"
            sample_json, analysis_json = f"{inputs}/{name}.json", f"{inputs}/AN-{name}.json"
            record = f"{logs}/{name}.result.json"
            _write_new(sample_json, _sample_json({sample: [files[f] for f in group]}, metadata or {}))
            _write_new(analysis_json, spec.analysis_text(f"{name}.json"))
            command = spec.command(analysis_json, record)
            submission.jobs.append(Job(sample, index, group, sample_json, analysis_json, command, record))
    submission.save()
    return submission


def _sample_json(samples: dict[str, list], metadata: dict[str, dict]) -> str:
    """A job's sample JSON: its files, in coffea's `{"files": ..., "metadata": ...}` where its sample has metadata."""
    values = {}
    for name, files in samples.items():
        values[name] = {"files": files, "metadata": metadata[name]} if metadata.get(name) else files
    return json.dumps(values) + "\n"


def split_job(submission: Submission, job: Job) -> Job:
    """Move the second half of `job`'s files to a new job of the same sample (the next index, its own inputs and
    record, the same resources); `job` keeps the first half. The scripts must be written again
    (`write_scripts`) before either runs."""
    half = (len(job.files) + 1) // 2
    index = 1 + max(other.index for other in submission.jobs if other.sample == job.sample)
    name = f"{job.sample}-{index}"
    sample_json, analysis_json = f"{submission.input_folder}/{name}.json", f"{submission.input_folder}/AN-{name}.json"
    record = f"{submission.jobs_folder}/{name}.result.json"
    value = json.loads(Path(job.sample_json).read_text())[job.sample]
    entries = value["files"] if isinstance(value, dict) else value  # one entry (or replica list) per file
    metadata = {job.sample: value["metadata"]} if isinstance(value, dict) else {}
    _write_new(sample_json, _sample_json({job.sample: entries[half:]}, metadata))
    write_job_file(job.sample_json, _sample_json({job.sample: entries[:half]}, metadata))
    analysis = json.loads(Path(job.analysis_json).read_text())
    _write_new(analysis_json, json.dumps({**analysis, "samplejson": f"{name}.json"}, indent=2) + "\n")
    renamed = {
        job.analysis_json: analysis_json,
        job.record: record,
        accumulator_path(job.record): accumulator_path(record),
    }
    command = [renamed.get(argument, argument) for argument in job.command]
    new = Job(job.sample, index, job.files[half:], sample_json, analysis_json, command, record)
    new.memory_mb, new.walltime_seconds, new.queue = job.memory_mb, job.walltime_seconds, job.queue
    job.files = job.files[:half]
    submission.jobs.append(new)
    return new


def job_script(submission: Submission, jobs: list[Job], job_number: str = '"$1"') -> str:
    """A bash script that runs job `$1` of `jobs` (`job_number` is the shell expression that picks it), each
    command written with every argument shell-quoted: the same script runs under any scheduler or by hand."""
    lines = [
        "#!/bin/bash",
        f"# coffea-dispatch: {len(jobs)} job(s) of sample {jobs[0].sample!r}; by hand: bash <this script> <job number>",
        f"cd {shlex.quote(str(submission.folder))} || exit 1",
    ]
    if submission.proxy:
        lines.append(f"export X509_USER_PROXY={shlex.quote(submission.proxy)}")
    lines += [f"job={job_number}", 'case "$job" in']
    for job in jobs:
        lines.append(f"  {number_in_script(submission, job)}) exec {job.shell_command()} ;;")
    lines += ['  *) echo "coffea-dispatch: no job $job in this script" >&2; exit 2 ;;', "esac", ""]
    return "\n".join(lines)


def write_scripts(submission: Submission, jobs: list[Job], job_number: str = '"$1"') -> dict[str, list[Job]]:
    """Write `jobs/<stem>.sh` for every script group of `jobs`; returns the groups."""
    groups = script_groups(submission, jobs)
    for stem, group in groups.items():
        script = submission.jobs_folder / f"{stem}.sh"
        write_job_file(script, job_script(submission, group, job_number), EXECUTABLE, durable=False)
    return groups


def script_groups(submission: Submission, jobs: list[Job]) -> dict[str, list[Job]]:
    """Jobs by the script that runs them: `AN-<sample>` (one cluster per sample) or `AN-<sample>-<i>`."""
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        stem = f"AN-{job.sample}" if submission.cluster_per_sample else f"AN-{job.name}"
        groups.setdefault(stem, []).append(job)
    return groups


def resource_groups(submission: Submission, jobs: list[Job]) -> dict[tuple[str, Resources], list[Job]]:
    """Jobs by script and by what they ask for: one submission (cluster, array) each, since a batch system takes
    resources per submission. A new submission is one group per script; a resubmission may split one."""
    groups: dict[tuple[str, Resources], list[Job]] = {}
    for stem, group in script_groups(submission, jobs).items():
        for job in group:
            groups.setdefault((stem, submission.resources(job)), []).append(job)
    return groups


def number_in_script(submission: Submission, job: Job) -> int:
    """The `$1` that makes a job's script run that job."""
    return job.index if submission.cluster_per_sample else 0
