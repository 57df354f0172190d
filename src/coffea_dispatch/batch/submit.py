"""Batch job arrays: plan a submission, write it, submit it; resubmit failed jobs; cancel them."""

from __future__ import annotations

import dataclasses
import glob
import os
import shlex
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from coffea_dispatch.batch.analysis_jobs import AnalysisJobs, base_arguments
from coffea_dispatch.batch.backend import BatchBackend, Groups, JobState
from coffea_dispatch.batch.job import JobRecord, read_record
from coffea_dispatch.batch.recovery import Decision, apply
from coffea_dispatch.batch.registry import array_backend
from coffea_dispatch.batch.status import diagnose
from coffea_dispatch.batch.submission import (
    EXECUTABLE,
    Job,
    JobRequests,
    Submission,
    memory_mb,
    plan_jobs,
    submission_root,
    write_job_file,
    write_scripts,
)
from coffea_dispatch.errors import DispatchError
from coffea_dispatch.inputs.analysis import Analysis, load_analysis
from coffea_dispatch.inputs.planning import each_file_once, select_samples
from coffea_dispatch.inputs.proxy import grid_proxy, is_remote
from coffea_dispatch.options import (
    DEFAULT_WALLTIME,
    ExecutorOptions,
    RunOptions,
    SubmitOptions,
    check_values,
    duration_seconds,
    job_arguments,
)

EXIT_NOT_SUBMITTED = 3


class NotSubmitted(DispatchError):
    """The files are written but no batch system is reachable here: say how to submit by hand (exit 3)."""

    exit_code = EXIT_NOT_SUBMITTED


@dataclass
class SubmitResult:
    submission: Submission
    commands: list[list[str]] = field(default_factory=list)
    clusters: list[str] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)  # a resubmission's, one per chosen job
    removed: list[str] = field(default_factory=list)  # what removed the old (held) runs from the queue

    def submitted_line(self) -> str:
        jobs, clusters = len(self.submission.jobs), ", ".join(self.clusters)
        return f"submitted {jobs} job(s) as cluster(s) {clusters} from {self.submission.folder}"

    def decision_lines(self) -> list[str]:
        """A resubmission's decisions and the old runs it removed from the queue, one line each."""
        return [*(d.line() for d in self.decisions), *(f"removed the old run: {r}" for r in self.removed)]


def job_requests(
    backend: BatchBackend, options: ExecutorOptions, submit: SubmitOptions, files: Iterable[str]
) -> JobRequests:
    """What every job asks for, parsed once and checked before anything is written: the sizes (megabytes and
    seconds from here on), the backend's own options, and the grid proxy (needed when an input is remote, and
    it must outlive the job)."""
    memory, walltime = memory_mb(options.memory), duration_seconds(options.walltime or DEFAULT_WALLTIME)
    most = memory_mb(submit.max_memory) if submit.max_memory else None
    backend.check_options(submit.backend)
    remote = any(is_remote(f) for f in files)
    proxy = grid_proxy(options.voms, needed=remote, lifetime_needed=backend.max_job_seconds(walltime, options.queue))
    backend_options = {k: v for k, v in submit.backend.items() if v is not None}
    return JobRequests(
        submit.cluster_per_sample, str(proxy) if proxy else None, memory, options.queue, walltime, most, backend_options
    )


def submit_analysis(
    options: RunOptions, submit: SubmitOptions | None = None, analysis: Analysis | None = None
) -> SubmitResult:
    """Write `.higgs_dna_<executor>/<analysis>_<time>/` and submit it (or explain how, exit 3).

    Everything that can be wrong with the input is checked before the folder is created."""
    return submit_new(array_backend(options.executor), plan_analysis(options, submit or SubmitOptions(), analysis))


def plan_analysis(options: RunOptions, submit: SubmitOptions, analysis: Analysis | None = None) -> Submission:
    """The submission of an analysis JSON's samples, written (nothing submitted)."""
    check_values(RunOptions, vars(options))
    check_values(SubmitOptions, vars(submit))
    backend = array_backend(options.executor)
    analysis = analysis or load_analysis(options.json_analysis, options.redirector)
    samples = select_samples(analysis.samples, options.only, options.limit)
    each_file_once(samples)  # jobs of one file each would never see that two are the same
    requests = job_requests(backend, options, submit, (f for files in samples.values() for f in files))
    dump = os.path.abspath(options.dump) if options.dump else None  # as its jobs get it: they run elsewhere
    spec = AnalysisJobs(analysis, job_arguments(options), dump)
    spec = dataclasses.replace(spec, inputs_digest=spec.content_digest(samples))
    work = spec.work(samples)
    more = {"files_per_job": submit.files_per_job, "metadata": analysis.metadata}
    return plan_jobs(work, spec, executor=options.executor, requests=requests, **more)


def earlier_submission(options: RunOptions, analysis: Analysis) -> Submission | None:
    """The newest submission of the same analysis, executor, options (its jobs write the same --dump) and input
    files: a second `run` continues it instead of running every job again. None without a --dump."""
    root = submission_root(options.executor)
    if options.dump is None or not root.is_dir():
        return None
    arguments = job_arguments(options)
    samples = select_samples(analysis.samples, options.only, options.limit)
    wanted = {(sample, f) for sample, files in samples.items() for f in files}
    digest = AnalysisJobs(analysis).content_digest(samples)  # entries, trees, steps, metadata: the same too
    for folder in sorted(root.glob(f"{glob.escape(analysis.name)}_*"), reverse=True):
        try:
            submission = Submission.load(folder)
        except DispatchError:
            continue
        if submission.executor != options.executor or submission.digest or submission.inputs_digest != digest:
            continue
        files = {(job.sample, f) for job in submission.jobs for f in job.files}
        if files == wanted and _arguments_of(submission) == arguments:
            return submission
    return None


def _arguments_of(submission: Submission) -> list[str] | None:
    """The options its jobs run with: kept in its manifest, or (older versions) read from the jobs' commands."""
    if submission.arguments is not None:
        return submission.arguments
    found = {tuple(base_arguments(job.command)) for job in submission.jobs}
    return list(found.pop()) if len(found) == 1 else None


def continue_submission(submission: Submission, *, wait: bool) -> SubmitResult:
    """What an earlier submission left undone: its unsubmitted jobs submitted; without `wait` (which resubmits
    as it waits), its failed and vanished jobs resubmitted by cause now."""
    if submission.unsubmitted:
        submission = submit_written(submission.folder).submission
    if wait or all_done(submission):
        return SubmitResult(submission)
    return resubmit(submission.folder, missing=True)


def all_done(submission: Submission) -> bool:
    return all((record := read_record(job.record)) is not None and record.status == "done" for job in submission.jobs)


def submit_new(backend: BatchBackend, submission: Submission) -> SubmitResult:
    """Write the scripts of a planned submission and submit them (or explain how, exit 3)."""
    return _submit(backend, submission, backend.write_files(submission), "written")


def chosen_jobs(
    submission: Submission, states: dict[str, JobState], missing: bool, names: list[str] | None
) -> list[tuple[Job, JobRecord | None]]:
    """`names` exactly; else the jobs that recorded a failure (and are not being rerun in place by the scheduler)
    or that the scheduler holds (`states`: what the queue says of the jobs it lists), and with `missing` those
    that never recorded an end and are no longer in the queue. Each with its record."""
    chosen = []
    for job in submission.jobs:
        record, state = read_record(job.record), states.get(job.name)
        failed = record is not None and record.status != "done" and not (state and state.active)
        vanished = missing and record is None and not (state and state.in_queue)
        if (job.name in names) if names is not None else (failed or vanished or state is JobState.HELD):
            chosen.append((job, record))
    return chosen


def resubmit(
    folder: str | Path, missing: bool = False, jobs: list[str] | None = None, *, force: bool = False
) -> SubmitResult:
    """Rerun the failed and held jobs of a submission (and, with `missing`, those that never recorded an end and
    are no longer in the batch queue; `jobs`: exactly these job names), each changed by why it failed
    (batch/recovery.py): more memory, a longer queue, the redirector, a split; not at all for a processor
    exception or an unreadable local file, unless `force`. An old run the queue still holds is removed first, so
    it never runs beside its rerun; a held one is removed even when it is not rerun.

    Old records are kept as `<job>.result.attempt<k>.json` and every decision on its job in the manifest.
    """
    submission = Submission.load(folder)
    backend = array_backend(submission.executor)
    answer = backend.queue_answer(submission)
    states = {name: backend.state(native) for name, native in (answer or {}).items()}
    chosen = chosen_jobs(submission, states, missing, jobs)
    failures = diagnose(backend, submission, chosen, answer, force=force)
    decisions, rerun, split_off, stale = [], [], [], []
    for job, _ in chosen:
        decision = failures[job.name].plan
        decisions.append(decision)
        if decision.rerun:
            rerun.append(job)
        new = apply(submission, job, decision)
        if new is not None:
            split_off.append(new)
        state = states.get(job.name)
        # an old run still queued never runs beside its rerun, and a held one is not left behind either way
        if state is not None and state.in_queue and (decision.rerun or state is JobState.HELD):
            stale.append(job)
    if split_off:  # the scripts of their samples must know the new jobs before anything runs
        samples = {job.sample for job in split_off}
        write_scripts(submission, [job for job in submission.jobs if job.sample in samples], backend.job_number)
    removed = backend.cancel(submission, stale)
    if not rerun:
        submission.save()
        return SubmitResult(submission, decisions=decisions, removed=removed)
    for job in rerun:  # keep the record of the run that failed, under its attempt number
        record = Path(job.record)
        if record.exists():
            record.rename(record.with_name(record.name.replace(".result.json", f".result.attempt{job.attempts}.json")))
        job.attempts += 1
    attempt = max(job.attempts for job in rerun)
    rerun += split_off
    result = _submit(backend, submission, backend.resubmit_files(submission, rerun, attempt), "ready to run again")
    result.decisions, result.removed = decisions, removed
    return result


def cancel(folder: str | Path, jobs: list[str] | None = None) -> list[str]:
    """Remove the submission's jobs (or exactly `jobs`) from the batch queue; what was done, one line each.
    Their records and outputs stay: `resubmit --missing` runs them again."""
    submission = Submission.load(folder)
    chosen = submission.jobs if jobs is None else [job for job in submission.jobs if job.name in jobs]
    return array_backend(submission.executor).cancel(submission, chosen)


SUBMIT_SCRIPT = "submit.sh"


def _submit(backend: BatchBackend, submission: Submission, groups: Groups, state: str) -> SubmitResult:
    """Submit each (submit file, jobs) group and record its cluster id on its jobs. Without the submit command
    here, the commands wait in the manifest and one line names the script that submits them where it is
    (exit 3). The manifest is saved either way."""
    result = SubmitResult(submission, backend.submit_commands(submission, groups))
    pending = [
        {"command": command, "jobs": [job.name for job in jobs]}
        for command, (_, jobs) in zip(result.commands, groups, strict=True)
    ]
    if not backend.available():
        submission.unsubmitted += pending
        submission.save()
        script = write_submit_script(submission)
        n_jobs = sum(len(jobs) for _, jobs in groups)
        raise NotSubmitted(
            f"{backend.submit_command} is not on PATH here: {n_jobs} job(s) of {submission.folder} are {state}; "
            f"where {backend.submit_command} is, submit them with: bash {shlex.quote(str(script))}"
        )
    submission.save()
    result.clusters = _run_pending(backend, submission, pending)
    return result


def _run_pending(backend: BatchBackend, submission: Submission, pending: list[dict]) -> list[str]:
    """Submit each pending command and record its cluster id on its jobs, saving after each: a failure
    halfway keeps what was submitted and what was not."""
    by_name = {job.name: job for job in submission.jobs}
    clusters = []
    for entry in pending:
        (cluster,) = backend.submit([entry["command"]])
        for name in entry["jobs"]:
            by_name[name].cluster = cluster
        clusters.append(cluster)
        submission.unsubmitted = [e for e in submission.unsubmitted if e != entry]
        submission.save()
    return clusters


def submit_written(folder: str | Path) -> SubmitResult:
    """Submit what was written where the batch system's submit command was missing (`submit.sh` runs this)."""
    submission = Submission.load(folder)
    backend = array_backend(submission.executor)
    if not submission.unsubmitted:
        return SubmitResult(submission)
    if not backend.available():
        raise DispatchError(f"{backend.submit_command} is not on PATH here either: run this where it is")
    pending = list(submission.unsubmitted)
    commands = [entry["command"] for entry in pending]
    return SubmitResult(submission, commands, _run_pending(backend, submission, pending))


def write_submit_script(submission: Submission) -> Path:
    """`<folder>/submit.sh`: submits the commands waiting in the manifest (and records their cluster ids) with
    this environment's Python; the commands are listed in it too."""
    script = submission.folder / SUBMIT_SCRIPT
    lines = [
        "#!/bin/bash",
        "# coffea-dispatch: submit the jobs written where the batch system's submit command was missing,",
        "# recording their cluster ids in submission.json. It runs:",
        *(f"#   {shlex.join(entry['command'])}" for entry in submission.unsubmitted),
        f"exec {shlex.quote(sys.executable)} -m coffea_dispatch.cli submit {shlex.quote(str(submission.folder))}",
        "",
    ]
    write_job_file(script, "\n".join(lines), EXECUTABLE)
    return script
