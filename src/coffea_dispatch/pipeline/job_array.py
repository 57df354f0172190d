"""A job array as a run: submitted (or the earlier submission of the same work into the same --dump continued),
followed until its jobs end with --wait, and collected into the same RunResult as any other executor's.
"""

from __future__ import annotations

import time

from coffea_dispatch.batch.arrays import Following, run_array
from coffea_dispatch.batch.job import read_record
from coffea_dispatch.batch.submission import Submission
from coffea_dispatch.batch.submit import earlier_submission, plan_analysis
from coffea_dispatch.dump.collect import merge, submission_completeness, summed_accumulators
from coffea_dispatch.dump.completeness_file import record_completeness
from coffea_dispatch.inputs.analysis import Analysis, load_analysis
from coffea_dispatch.inputs.planning import (
    select_samples,
)
from coffea_dispatch.options import RunOptions, SubmitOptions
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
    started = time.perf_counter()
    announce = options.announce or (lambda line: None)
    analysis = load_analysis(options.json_analysis, options.redirector)
    following = Following(submit.wait, options.retries, submit.poll_seconds, options.progress)
    earlier = earlier_submission(options, analysis)
    array = run_array(earlier, lambda: plan_analysis(options, submit, analysis), following, announce)
    if array.outcome is None:
        run = RunResult(
            analysis, options.executor, len(array.submission.jobs), None, {}, 0.0, submission=array.submission
        )
        run.waited = False
        return run
    run = _collected(array.submission, analysis, options)
    notes = [f"{len(run.submission.jobs)} batch job(s) in {run.submission.folder}"]
    if array.outcome.resubmissions:
        notes.append(f"failed jobs were resubmitted {array.outcome.resubmissions} time(s)")
    notes += [f"resubmission: {decision.line()}" for decision in array.outcome.decisions]
    run.notes = notes + run.notes
    save_and_plot(run, options)
    run.wall_seconds = time.perf_counter() - started
    return run


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
