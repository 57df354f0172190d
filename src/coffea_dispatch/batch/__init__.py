"""Batch job arrays (vanilla_lxplus, vanilla_slurm): plan a submission, write it, submit it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from coffea_dispatch.analysis import load_analysis
from coffea_dispatch.batch import htcondor, slurm
from coffea_dispatch.batch.submission import Submission, memory_mb, plan_submission
from coffea_dispatch.errors import DispatchError
from coffea_dispatch.planning import select_samples
from coffea_dispatch.proxy import grid_proxy, is_remote

EXIT_NOT_SUBMITTED = 3
BACKENDS = {"vanilla_lxplus": htcondor, "vanilla_slurm": slurm}


class NotSubmitted(DispatchError):
    """The files are written but no batch system is reachable here: say how to submit by hand (exit 3)."""

    exit_code = EXIT_NOT_SUBMITTED


@dataclass
class SubmitResult:
    submission: Submission
    commands: list[list[str]] = field(default_factory=list)
    clusters: list[str] = field(default_factory=list)


def backend_of(executor: str):
    """The module (htcondor, slurm) that writes and submits job arrays for a batch executor."""
    backend = BACKENDS.get(executor)
    if backend is None:
        raise DispatchError(f"executor '{executor}' is not a batch executor; choose one of {', '.join(BACKENDS)}")
    return backend


def submit_analysis(
    options,
    base_argv: list[str],
    *,
    files_per_job: int = 1,
    cluster_per_sample: bool = True,
    max_materialize: int | None = None,
    root: Path | None = None,
) -> SubmitResult:
    """Write `.higgs_dna_<executor>/<analysis>_<time>/` and submit it (or explain how, exit 3).

    Everything that can be wrong with the input is checked before the folder is created."""
    backend = backend_of(options.executor)
    analysis = load_analysis(options.json_analysis, options.redirector)
    samples = select_samples(analysis.samples, options.only, options.limit)
    memory_mb(options.memory)
    if max_materialize is not None and max_materialize < 1:
        raise DispatchError(f"--max-materialize must be at least 1, got {max_materialize}")
    remote = any(is_remote(f) for files in samples.values() for f in files)
    proxy = grid_proxy(options.voms, needed=remote, lifetime_needed=backend.lifetime_seconds(options))
    submission = plan_submission(
        analysis,
        samples,
        root=root or Path.cwd() / f".higgs_dna_{options.executor}",
        executor=options.executor,
        base_argv=base_argv,
        files_per_job=files_per_job,
        cluster_per_sample=cluster_per_sample,
        proxy=str(proxy) if proxy else None,
        memory=options.memory,
        queue=options.queue,
        walltime=options.walltime,
        max_materialize=max_materialize,
    )
    return _submit(backend, submission, backend.write_files(submission), "written")


def resubmit(folder: str | Path, missing: bool = False, jobs: list[str] | None = None) -> SubmitResult:
    """Rerun the failed jobs of a submission (and, with `missing`, those that never recorded an end and are no
    longer in the batch queue; `jobs`: exactly these job names).

    Their old records are kept as `<job>.result.attempt<k>.json`, so the history is not lost.
    """
    from coffea_dispatch.batch.job import read_record

    submission = Submission.load(folder)
    backend = backend_of(submission.executor)
    queued = (backend.queued_jobs(submission) or {}) if missing else {}
    chosen = []
    for job in submission.jobs:
        record = read_record(job.record)
        if jobs is not None:
            wanted = job.name in jobs
        else:
            wanted = (record is not None and record.status != "done") or (
                record is None and missing and job.name not in queued
            )
        if wanted:
            chosen.append(job)
    if not chosen:
        return SubmitResult(submission)
    for job in chosen:  # keep the record of the run that failed, under its attempt number
        record = Path(job.record)
        if record.exists():
            record.rename(record.with_name(record.name.replace(".result.json", f".result.attempt{job.attempts}.json")))
        job.attempts += 1
    attempt = max(job.attempts for job in chosen)
    return _submit(backend, submission, backend.resubmit_files(submission, chosen, attempt), "ready to run again")


def _submit(backend, submission: Submission, groups: list[tuple[Path, list]], state: str) -> SubmitResult:
    """Submit each (submit file, jobs) group and record its cluster id on its jobs; without the submit command,
    say exactly how to submit by hand (exit 3). The manifest is saved either way."""
    submission.save()
    result = SubmitResult(submission, backend.submit_commands(submission, groups))
    if not backend.available():
        commands = "; ".join(" ".join(c) for c in result.commands)
        n_jobs = sum(len(jobs) for _, jobs in groups)
        raise NotSubmitted(
            f"{backend.SUBMIT_COMMAND} is not on PATH here: {n_jobs} job(s) of {submission.folder} "
            f"are {state}; submit them by hand with: {commands}"
        )
    result.clusters = backend.submit(result.commands)
    for cluster, (_, jobs) in zip(result.clusters, groups, strict=True):
        for job in jobs:
            job.cluster = cluster
    submission.save()
    return result
