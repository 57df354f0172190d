"""A job array as a run: submitted (or the earlier submission of the same work into the same --dump continued),
followed until its jobs end with --wait, and collected into the same RunResult as any other executor's.
"""

from __future__ import annotations

import time
from pathlib import Path

from coffea_dispatch.batch.job import read_record
from coffea_dispatch.batch.submission import Submission
from coffea_dispatch.batch.submit import all_done, continue_submission, earlier_submission, submit_analysis
from coffea_dispatch.batch.wait import follow_jobs
from coffea_dispatch.dump.collect import merge, submission_completeness, summed_accumulators
from coffea_dispatch.dump.completeness import (
    record_completeness,
)
from coffea_dispatch.errors import DispatchError
from coffea_dispatch.inputs.analysis import Analysis, load_analysis
from coffea_dispatch.inputs.planning import (
    select_samples,
)
from coffea_dispatch.options import RunOptions, SubmitOptions, job_arguments
from coffea_dispatch.pipeline.prepare import (
    metadata_cache,
)
from coffea_dispatch.pipeline.result import (
    RunResult,
    SampleSummary,
    candidates_in,
    save_and_plot,
)


def run_job_array(options: RunOptions, submit: SubmitOptions) -> RunResult:
    """Write and submit the job array, or continue the earlier submission of the same samples and options into
    the same --dump; with `submit.wait` (or once every job is done), block until its jobs end (failures
    resubmitted by cause, up to --retries times), then sum their accumulators and merge their outputs. Ctrl-C
    while waiting leaves the jobs running and says how to follow them."""
    if options.retries < 0:
        raise DispatchError(f"--retries must be 0 or more, got {options.retries}")
    started = time.perf_counter()
    announce = options.announce or (lambda line: None)
    analysis = load_analysis(options.json_analysis, options.redirector)
    submission = _submitted(options, submit, analysis, announce)
    if not submit.wait and not all_done(submission):
        run = RunResult(analysis, options.executor, len(submission.jobs), None, {}, 0.0, submission=submission)
        run.waited = False
        return run
    outcome = follow_jobs(
        submission,
        retries=options.retries,
        poll_seconds=submit.poll_seconds,
        shown=options.progress,
        announce=announce,
    )
    run = _collected(outcome.submission, analysis, options)
    notes = [f"{len(run.submission.jobs)} batch job(s) in {run.submission.folder}"]
    if outcome.resubmissions:
        notes.append(f"failed jobs were resubmitted {outcome.resubmissions} time(s)")
    notes += [f"resubmission: {decision.line()}" for decision in outcome.decisions]
    run.notes = notes + run.notes
    save_and_plot(run, options)
    run.wall_seconds = time.perf_counter() - started
    return run


def _submitted(options: RunOptions, submit: SubmitOptions, analysis: Analysis, announce) -> Submission:
    """A new submission, or the earlier one whose jobs write the same --dump from the same inputs and options
    (what it left undone submitted again): a second `run` finishes the first."""
    root = Path.cwd() / f".higgs_dna_{options.executor}"
    samples = select_samples(analysis.samples, options.only, options.limit)
    base_argv = job_arguments(options)
    earlier = earlier_submission(root, analysis.name, options.executor, base_argv, samples) if options.dump else None
    if earlier is None:
        submitted = submit_analysis(options, submit, root=root, analysis=analysis)
        announce(submitted.submitted_line())
        return submitted.submission
    announce(f"continuing {earlier.folder}: its jobs run the same inputs and options into the same --dump")
    continued = continue_submission(earlier, wait=submit.wait)
    for line in continued.decision_lines():
        announce(line)
    return continued.submission


def _collected(submission: Submission, analysis: Analysis, options: RunOptions) -> RunResult:
    """The done jobs' accumulators summed and their records summed per sample, as any other executor's run;
    with --dump, each sample's outputs merged."""
    output = summed_accumulators(submission) or {}
    summaries: dict[str, SampleSummary] = {}
    for job in submission.jobs:
        record = read_record(job.record)
        summary = summaries.setdefault(job.sample, SampleSummary(job.sample))
        bad_files = record.bad_files.get(job.sample, {})
        summary.bad_files.update(bad_files)
        summary.files += len(job.files) - len(bad_files)
        summary.chunks += record.chunks
        summary.events += record.events or 0
        summary.seconds += record.wall_seconds
    for sample, summary in summaries.items():
        summary.candidates = candidates_in(output, sample)
    merged = merge(submission.folder, record=False) if options.dump else []
    notes = [f"merged {m.sample}: {m.rows:,} rows -> {m.path}" for m in merged]
    listing = select_samples(analysis.samples, options.only, None)
    completeness = submission_completeness(submission, listing, metadata_cache(options))
    if options.dump:
        completeness = record_completeness(options.dump, completeness)
    run = RunResult(
        analysis, submission.executor, len(submission.jobs), output, summaries, 0.0, notes, submission=submission
    )
    run.completeness = completeness
    run.notes += completeness.warnings()
    return run
