"""Batch job arrays (vanilla_lxplus, vanilla_slurm): plan a submission, write it, submit it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from coffea_dispatch.analysis import load_analysis
from coffea_dispatch.batch import htcondor
from coffea_dispatch.batch.submission import Submission, plan_submission
from coffea_dispatch.errors import DispatchError
from coffea_dispatch.planning import select_samples
from coffea_dispatch.proxy import grid_proxy, is_remote

EXIT_NOT_SUBMITTED = 3
BACKENDS = {"vanilla_lxplus": htcondor}


class NotSubmitted(DispatchError):
    """The files are written but no batch system is reachable here: say how to submit by hand (exit 3)."""

    exit_code = EXIT_NOT_SUBMITTED


@dataclass
class SubmitResult:
    submission: Submission
    commands: list[list[str]] = field(default_factory=list)
    clusters: list[str] = field(default_factory=list)


def submit_analysis(
    options, base_argv: list[str], *, files_per_job: int = 1, cluster_per_sample: bool = True, root: Path | None = None
) -> SubmitResult:
    """Write `.higgs_dna_<executor>/<analysis>_<time>/` and submit it (or explain how, exit 3)."""
    backend = BACKENDS.get(options.executor)
    if backend is None:
        raise DispatchError(f"executor '{options.executor}' is not available yet in this version of coffea-dispatch")
    analysis = load_analysis(options.json_analysis)
    samples = select_samples(analysis.samples, options.only, options.limit)
    remote = any(is_remote(f) for files in samples.values() for f in files)
    proxy = grid_proxy(options.voms, needed=remote, lifetime_needed=backend.lifetime_seconds(options.queue))
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
    )
    return _submit(backend, submission, backend.write_files(submission), "written")


def resubmit(folder: str | Path, missing: bool = False) -> SubmitResult:
    """Rerun the failed jobs of a submission (and, with `missing`, those that never recorded an end).

    Their old records are kept as `<job>.result.attempt<k>.json`, so the history is not lost.
    """
    from coffea_dispatch.batch.job import read_record

    submission = Submission.load(folder)
    backend = BACKENDS[submission.executor]
    chosen = []
    for job in submission.jobs:
        record = read_record(job.record)
        if (record is not None and record.status != "done") or (record is None and missing):
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
    result = SubmitResult(submission, backend.submit_commands(submission, [sub for sub, _ in groups]))
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
