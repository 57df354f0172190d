"""What a resubmission changes for a failed job, by why it failed (batch/triage.py).

Sending a job again unchanged only helps when it failed by chance. A job killed for memory asks for more, measured
from its peak; one killed at its walltime goes to a longer queue; one that could not read a remote file reads it
again, through the global redirector after its own replicas; one whose processor raised is not sent again (it
would raise again: the reproduce command is shown instead, and `resubmit --force`, which reruns it as it is once
the code is fixed), nor one that cannot read a local file. Every decision is kept on its job in the manifest, so
`status` and the `--wait` summary can show the history.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from coffea_dispatch.batch.backend import BatchBackend, Cause
from coffea_dispatch.batch.submission import (
    Job,
    Resources,
    Submission,
    number_in_script,
    script_groups,
    split_job,
    write_job_file,
)
from coffea_dispatch.batch.triage import Triage
from coffea_dispatch.inputs.proxy import is_remote

GB_MB = 1024  # memory requests are rounded up to whole GB
MEMORY_FACTOR = 1.5  # the next request: this much above the measured peak ...
MEMORY_STEP_MB = GB_MB  # ... and at least this much above the last request
GLOBAL_REDIRECTOR = "root://cms-xrd-global.cern.ch/"  # CMS's AAA redirector: finds any site holding an LFN


@dataclass(frozen=True)
class Decision:
    """Why `job`'s attempt failed and what its resubmission does about it."""

    job: str
    attempt: int
    cause: Cause
    evidence: str
    rerun: bool
    action: str  # in words, for status, the --wait summary and the manifest
    resources: Resources | None = None  # what the rerun asks for (None: not rerun)
    peak_mb: float | None = None
    split: bool = False  # half of the job's files go to a new job (memory at --max-memory, several files)

    def line(self) -> str:
        return f"{self.job} (attempt {self.attempt}): {self.cause.value} ({self.evidence}) -> {self.action}"

    def as_record(self) -> dict[str, Any]:
        record = dataclasses.asdict(self)
        record["cause"] = self.cause.value
        record["decided"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        return record


class _Plan(NamedTuple):
    rerun: bool
    action: str
    resources: Resources
    split: bool = False
    forced: str = ""  # what a rerun with --force goes against (default: the action itself)


def decide(backend: BatchBackend, submission: Submission, job: Job, why: Triage, *, force: bool = False) -> Decision:
    """What resubmitting `job` should change; with `force`, jobs a rerun cannot help are rerun too, unchanged."""
    now = submission.resources(job)
    plan = _by_cause(backend, submission, job, why, now)
    if not plan.rerun and force:
        plan = _Plan(True, f"rerun as asked (--force), although {plan.forced or plan.action}", now)
    return Decision(
        job=job.name,
        attempt=job.attempts,
        cause=why.cause,
        evidence=why.evidence,
        rerun=plan.rerun,
        action=plan.action,
        resources=plan.resources if plan.rerun else None,
        peak_mb=why.peak_mb,
        split=plan.split,
    )


def _by_cause(backend: BatchBackend, submission: Submission, job: Job, why: Triage, now: Resources) -> _Plan:
    if why.cause is Cause.MEMORY:
        cap = submission.max_memory_mb
        more = more_memory(now.memory_mb, why.peak_mb, cap)
        if more is None and len(job.files) > 1:
            half = (len(job.files) + 1) // 2
            action = f"split: {now.memory_mb} MB is already --max-memory; {half} of its {len(job.files)} files stay"
            return _Plan(True, f"{action}, the others go to a new job", now, True)
        if more is None:
            return _Plan(
                False, f"not resubmitted: {now.memory_mb} MB is already --max-memory; raise it or lower --chunk", now
            )
        measured = f", peak {why.peak_mb:.0f} MB" if why.peak_mb else ""
        return _Plan(
            True, f"memory {now.memory_mb} MB -> {more} MB{measured}", dataclasses.replace(now, memory_mb=more)
        )
    if why.cause is Cause.WALLTIME:
        longer = backend.longer(now)
        if longer is None:
            limit = backend.time_limit(now)
            return _Plan(False, f"not resubmitted: {limit} is already the longest {backend.name} allows here", now)
        return _Plan(True, f"walltime {backend.time_limit(now)} -> {backend.time_limit(longer)}", longer)
    if why.cause is Cause.PROCESSOR:
        again = f"once the code is fixed, `coffea-dispatch resubmit --force {shlex.quote(str(submission.folder))}`"
        again += " reruns it as it is"
        action = f"not resubmitted: the processor raised ({again}); reproduce: {reproduce_command(submission, job)}"
        return _Plan(False, action, now, forced="the processor raised")
    if why.cause is Cause.INPUT:
        remote = [f for f in job.files if is_remote(f)]
        if not remote and not all(_looks_like_root(f) for f in job.files):
            return _Plan(False, "not resubmitted: a local input cannot be read; fix or drop it (--skipbadfiles)", now)
        if not remote:
            return _Plan(True, "rerun: its local input looks like a ROOT file now (fixed since?)", now)
        through = " then through the global redirector" if any(_lfn(f) for f in remote) else ""
        return _Plan(True, f"read the remote input again: its replicas{through}", now)
    return _Plan(True, "rerun with the same resources", now)


def more_memory(last_mb: int, peak_mb: float | None, cap_mb: int | None) -> int | None:
    """max(1.5 x peak, last + 1 GB), rounded up to whole GB, at most `cap_mb`; None when that is no more than
    the last request (the cap is reached)."""
    wanted = max(MEMORY_FACTOR * (peak_mb or last_mb), last_mb + MEMORY_STEP_MB)
    request = math.ceil(wanted / GB_MB) * GB_MB
    if cap_mb is not None:
        request = min(request, cap_mb)
    return request if request > last_mb else None


def apply(submission: Submission, job: Job, decision: Decision) -> Job | None:
    """Record the decision on the job and give it the rerun's resources (and inputs); the new job a split made."""
    record = decision.as_record()
    job.decisions.append(record)
    if not decision.rerun or decision.resources is None:
        return None
    default = submission.resources(dataclasses.replace(job, memory_mb=None, walltime_seconds=None, queue=None))
    now = decision.resources
    job.memory_mb = now.memory_mb if now.memory_mb != default.memory_mb else None
    job.walltime_seconds = now.walltime_seconds if now.walltime_seconds != default.walltime_seconds else None
    job.queue = decision.resources.queue if decision.resources.queue != default.queue else None
    if decision.cause is Cause.INPUT:
        add_redirector(job)
    if not decision.split:
        return None
    new = split_job(submission, job)
    record["new_job"] = new.name
    return new


def add_redirector(job: Job) -> None:
    """Give each remote file of the job's sample JSON the global redirector as its last replica (the file keeps
    its name, its first replica, so its outputs and checks are unchanged)."""
    path = Path(job.sample_json)
    value = json.loads(path.read_text())[job.sample]
    listed = value["files"] if isinstance(value, dict) else value  # with coffea's dataset metadata: its files
    entries = []
    for entry in listed:
        if isinstance(entry, dict) and "chunks" in entry:  # a Runner's (batch/items.py): its function opens the name
            entries.append(entry)
        elif isinstance(entry, dict):  # read in part, another tree, preprocessed steps: the same, with the replica
            entries.append({**entry, "file": _with_redirector(entry["file"])})
        else:
            entries.append(_with_redirector(entry))
    written = {**value, "files": entries} if isinstance(value, dict) else entries
    write_job_file(path, json.dumps({job.sample: written}) + "\n")


def _with_redirector(entry: str | list[str]) -> str | list[str]:
    copies = entry if isinstance(entry, list) else [entry]
    via = _lfn(copies[0])
    if via and via not in copies:
        copies = [*copies, via]
    return copies if len(copies) > 1 else copies[0]


def _looks_like_root(path: str) -> bool:
    """Whether a local file starts like a ROOT file: a failed job's input may have been fixed since."""
    try:
        with open(path, "rb") as file:
            return file.read(4) == b"root"
    except OSError:
        return False


def _lfn(url: str) -> str | None:
    """The file through the global redirector, for a remote CMS file (its path holds /store/)."""
    if not is_remote(url) or "/store/" not in url:
        return None
    return GLOBAL_REDIRECTOR.rstrip("/") + "/" + url[url.index("/store/") :]


def reproduce_command(submission: Submission, job: Job) -> str:
    """The job's script with its number: it runs the job here, exactly as the batch system did."""
    stem = next(iter(script_groups(submission, [job])))
    return f"bash {shlex.quote(str(submission.jobs_folder / (stem + '.sh')))} {number_in_script(submission, job)}"
