"""One analysis run: load the configuration, plan chunks, execute, collect, summarise.

This is what `coffea-dispatch run` calls, whatever the executor: a job array is submitted and, with --wait,
waited for and collected into the same RunResult (`coffea_dispatch.api.run` is the notebook's door to it).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from coffea.processor import accumulate

from coffea_dispatch.dump.completeness import Completeness, from_run, known_from_cache, plan_ranges
from coffea_dispatch.dump.completeness_file import record_completeness, record_listing
from coffea_dispatch.dump.resume import resume_from_dump
from coffea_dispatch.errors import StalePlan
from coffea_dispatch.executors import (
    ExecutorKind,
    describe_with,
    kind_for,
    settings_for,
)
from coffea_dispatch.higgsdna.plot import prefetch_plotting
from coffea_dispatch.inputs.analysis import Analysis
from coffea_dispatch.inputs.describe import describe_serially
from coffea_dispatch.inputs.filesets import json_metadata
from coffea_dispatch.inputs.metadata_cache import MetadataCache
from coffea_dispatch.inputs.ordering import slowest_first
from coffea_dispatch.inputs.planning import (
    Plan,
    refuse_one_file_twice,
    select_samples,
    uuid_keys,
)
from coffea_dispatch.inputs.proxy import is_remote
from coffea_dispatch.options import RunOptions, SubmitOptions, check_values
from coffea_dispatch.pipeline.chunk import (
    BAD_FILES_KEY,
    BAD_INPUTS_KEY,
    DESCRIBED_KEY,
    ESCAPED_KEY,
    FAILURES_KEY,
    NOT_RUN_KEY,
    OUTPUT_KEY,
    RUN_FAILED,
    STATS_KEY,
    TIMINGS_KEY,
    WRITTEN_KEY,
    ChunkRunner,
)
from coffea_dispatch.pipeline.diagnose import Diagnosis, rerun_chunk
from coffea_dispatch.pipeline.job_array import run_job_array
from coffea_dispatch.pipeline.prepare import (
    Given,
    export_proxy,
    fusion_for,
    make_plan,
    metadata_cache,
    prepare,
)
from coffea_dispatch.pipeline.result import (
    RunResult,
    ValidationResult,
    plot_wanted,
    resumed_summaries,
    save_and_plot,
    summaries,
)
from coffea_dispatch.pipeline.verdicts import (
    dead_worker_notes,
    escaped_notes,
    fail_on_overwritten_outputs,
    fail_on_unreadable,
    is_bystander,
    killed_chunk,
    raise_first_failure,
    refuse_first_bad_input,
    rerun_bystanders,
    with_reproducer,
)
from coffea_dispatch.result_keys import FOLLOW_UP_KEY, KILLED_KEY, KILLED_WORKERS_KEY


def _execute(executor, items: list, runner: ChunkRunner, skipbadfiles: bool) -> tuple[dict[str, Any], list]:
    """Run every chunk and FileTask, and the follow-up chunks of FileTasks that an executor hands back instead
    of running them in the same call (coffea's iterative one). The chunks that killed their Dask workers were
    set aside, the others run: they are returned for diagnosis."""
    collected: dict[str, Any] = {}
    remaining = list(items)
    while remaining:
        RUN_FAILED.clear()
        result = executor(remaining, runner, {})
        result = result[0] if isinstance(result, tuple) else result
        remaining = result.pop(FOLLOW_UP_KEY, [])
        collected = accumulate([result], collected)
        if remaining and (result.get(FAILURES_KEY) or (result.get(BAD_INPUTS_KEY) and not skipbadfiles)):
            collected[NOT_RUN_KEY] = collected.get(NOT_RUN_KEY, 0) + len(remaining)
            break
    return collected, collected.pop(KILLED_WORKERS_KEY, [])


class LazyExecutor:
    """The run's executor, started on first use: by planning when inputs must be read (on its workers), else
    only once there are chunks to run (a dump already complete starts none)."""

    def __init__(
        self,
        kind: ExecutorKind,
        settings: Any,
        announce: Callable[[str], None],
        stack: contextlib.ExitStack,
        given=None,
    ):
        self.kind, self.settings, self.announce, self.stack = kind, settings, announce, stack
        self.executor = given  # an executor object the caller made (coffea's, or ours for coffea's Runner)

    def get(self, n_items: int):
        """Sized for `n_items` items (a futures pool has no more workers than that)."""
        if self.executor is None:
            context = self.kind.open(self.settings, n_items, self.announce)
            self.executor = self.stack.enter_context(context)
        return self.executor

    def describe_many(self, filenames: list[str], describer) -> dict:
        """Planning on the workers (a pool grows for the chunks to come)."""
        if len(filenames) == 1 and self.executor is None:  # not worth starting workers for
            return describe_serially(filenames, describer)
        return describe_with(self.get(len(filenames)))(filenames, describer)


@dataclass
class Executed:
    """What executing a plan gave: the chunks' results summed (resumed ones added once the workers' findings
    are taken in), the chunks that killed their Dask workers, those whose futures worker died."""

    plan: Plan
    resumed: list = field(default_factory=list)
    collected: dict[str, Any] = field(default_factory=dict)
    killed: list = field(default_factory=list)
    dead_workers: list = field(default_factory=list)
    n_workers: int | None = None
    cleared: list[str] = field(default_factory=list)  # inputs whose earlier chunks resume removed (changed since)


def run_analysis(options: RunOptions, submit: SubmitOptions | None = None, given: Given | None = None) -> RunResult:
    """Run the analysis described by `options` and return its accumulator and summary; a job array (`submit`:
    how it is cut and followed) is submitted, then waited for and collected when `submit.wait`."""
    check_values(RunOptions, vars(options))
    check_values(SubmitOptions, vars(submit or SubmitOptions()))
    given = given or Given()
    kind = kind_for(options.executor, given.executor)
    if kind.job_array:
        return run_job_array(options, submit or SubmitOptions())
    started = time.perf_counter()
    analysis, processor_instance, runner, notes = prepare(options, given)
    settings = settings_for(options, given.executor)
    samples = select_samples(analysis.samples, options.only, options.limit)
    settings.remote_inputs = any(is_remote(f) for files in samples.values() for f in files)
    if settings.remote_inputs:  # before any worker starts, planning's included
        export_proxy(options.voms)
    cache = metadata_cache(options)
    in_job = submit is not None and submit.job_record is not None  # a job of a job array: its submitter writes it
    listing = None if in_job else select_samples(analysis.samples, options.only, None)
    executed = _execute_plan(analysis, runner, options, kind, settings, cache, given.executor, notes, listing)
    diagnoses = _take_in(executed, samples, runner, options, cache, notes)
    plan, collected = executed.plan, executed.collected
    completeness = _completeness(analysis, executed, options, cache, in_job)
    raise_first_failure(collected)
    if not options.skipbadfiles:
        fail_on_unreadable(collected.get(BAD_FILES_KEY, {}))
    fail_on_overwritten_outputs(collected.get(WRITTEN_KEY, {}))
    notes += escaped_notes(collected.get(ESCAPED_KEY, {}))
    output = processor_instance.postprocess(collected.get(OUTPUT_KEY, {}))
    workers = executed.n_workers or kind.worker_count(settings, len(plan.items) + len(plan.tasks))
    run = RunResult(analysis, options.executor, workers, output, summaries(plan, collected, output), 0.0, notes)
    run.completeness = completeness
    notes += completeness.warnings()
    run.retries = len(executed.killed)
    run.resumed_chunks = len(executed.resumed)
    run.resumed = resumed_summaries(executed.resumed)  # the summary tells them from what was processed now
    run.failed_chunks = [with_reproducer(d, analysis, options) for d in diagnoses if not is_bystander(d)]
    run.failed_chunks += [killed_chunk(k, analysis, options) for k in executed.dead_workers if k.final]
    save_and_plot(run, options)
    run.wall_seconds = time.perf_counter() - started
    return run


def _execute_plan(
    analysis: Analysis,
    runner: ChunkRunner,
    options: RunOptions,
    kind: ExecutorKind,
    settings: Any,
    cache: MetadataCache,
    given_executor: Any,
    notes: list[str],
    listing: dict[str, list[str]] | None = None,
) -> Executed:
    """Plan (reading inputs on the executor's workers), resume from the dump, run what is pending; the executor
    starts only when inputs must be read or chunks run (a dump already complete starts none). The dump's
    completeness.json lists the inputs (`listing`) before any chunk runs: killed at any point, the run leaves
    `check` knowing every file it was asked to read, those it never started included."""
    with contextlib.ExitStack() as stack:
        executors = LazyExecutor(kind, settings, options.announce or (lambda line: None), stack, given_executor)
        in_process = kind.runs_in_process
        describe = describe_serially if in_process else executors.describe_many
        fusion = fusion_for(options, kind, settings, cache)
        plan = make_plan(analysis, runner, options, options.skipbadfiles, describe, fusion, cache)
        if plan.from_cache:
            notes.append(f"entries and branches of {plan.from_cache} input file(s) came from the metadata cache")
        resume = resume_from_dump(runner.checkpoints, plan, options)
        pending = slowest_first(plan.tasks, resume.pending, cache, kind.expected_workers(settings))
        executed = Executed(plan, resumed=resume.done, cleared=[f for _, f in resume.changed_inputs])
        if not pending:  # all complete from an earlier run: no workers to start
            notes += resume.start(options.overwrite)
            return executed
        executor = executors.get(len(pending))  # sized for what is known now: a pool grows with follow-up chunks
        notes += resume.start(options.overwrite)
        if options.dump is not None and listing is not None:
            record_listing(options.dump, listing)
        if plot_wanted(options) and not kind.runs_in_process:
            prefetch_plotting()  # chunks run in other processes: the main one gets matplotlib ready meanwhile
        executed.collected, executed.killed = _execute(executor, pending, runner, options.skipbadfiles)
        executed.n_workers = getattr(executor, "n_workers", None)
        return executed


def _take_in(
    executed: Executed,
    samples: dict[str, list[str]],
    runner: ChunkRunner,
    options: RunOptions,
    cache: MetadataCache,
    notes: list[str],
) -> list[Diagnosis]:
    """What the workers learned and what went wrong on them: inputs they described (compared only now), dead
    workers, stale cache entries, bad inputs; killer chunks diagnosed (bystanders run here); resumed chunks
    added. Returns the diagnoses."""
    plan, collected = executed.plan, executed.collected
    plan.add_described(collected.pop(DESCRIBED_KEY, {}), collected.pop(BAD_INPUTS_KEY, {}), cache)
    executed.dead_workers = collected.pop(KILLED_KEY, [])
    notes += dead_worker_notes(executed.dead_workers)
    refuse_one_file_twice(samples, {f: uuid_keys(i.get("uuid")) for f, i in plan.identities.items()}, done=True)
    for failure in collected.get(FAILURES_KEY, []):
        if isinstance(failure, StalePlan):  # a worker found the file is not what the cache said
            cache.forget(failure.path, plan.tree_of(failure.path))
    if not options.skipbadfiles:
        refuse_first_bad_input(plan, samples)
    diagnoses = [rerun_chunk(runner, error.item, error.worker_memory_bytes) for error in executed.killed]
    collected, rerun_here = rerun_bystanders(diagnoses, runner, collected)
    notes += rerun_here
    if executed.resumed:
        collected = accumulate([collected, *executed.resumed])
    for filename, seconds in collected.pop(TIMINGS_KEY, {}).items():
        cache.store_chunk_seconds(plan.tree_of(filename), {filename: seconds})
    executed.collected = collected
    return diagnoses


def _completeness(
    analysis: Analysis, executed: Executed, options: RunOptions, cache: MetadataCache, in_job: bool = False
) -> Completeness:
    """How much of each sample this run read (with --dump: the dump holds, earlier runs' chunks included, but not
    those of inputs resume cleared; its completeness.json is rewritten, by the run itself and not by each job of
    a job array)."""
    plan, collected = executed.plan, executed.collected
    listing = select_samples(analysis.samples, options.only, None)  # --limit leaves files not run
    uuids = {f: i.get("uuid", "") for f, i in plan.identities.items()}
    known = {f: (n, plan.totals.get(f, {}), uuids.get(f, "")) for f, n in plan.entries.items()}
    unknown = [f for files in listing.values() for f in files if f not in known]
    for tree in {plan.tree_of(f) for f in unknown}:
        known.update(known_from_cache([f for f in unknown if plan.tree_of(f) == tree], cache, tree))
    problems: dict[str, dict[str, str]] = {}
    for sample, files in plan.bad_files.items():
        problems.setdefault(sample, {}).update({f: f"skipped: {why}" for f, why in files.items()})
    for sample, files in collected.get(BAD_FILES_KEY, {}).items():
        problems.setdefault(sample, {}).update({f: f"failed: {why}" for f, why in sorted(files)})
    completeness = from_run(listing, collected.get(STATS_KEY, {}), known, problems)
    for sample, reading in completeness.items():  # what is left is run with the metadata and trees it was run with
        reading.metadata = json_metadata(analysis.metadata.get(sample, {}))
        reading.trees = {f: analysis.trees[f] for f in reading.files if f in analysis.trees}
    if options.dump is None or in_job:
        return completeness
    redone = [f for files in plan.files.values() for f in files] if options.overwrite else executed.cleared
    return record_completeness(options.dump, completeness, plan_ranges(plan.items), redone)


def validate_inputs(options: RunOptions) -> ValidationResult:
    """HiggsDNA's --validate: open every input, count its events, list the bad ones; process nothing."""
    check_values(RunOptions, vars(options))
    analysis, _, runner, _ = prepare(options)
    return ValidationResult(analysis, make_plan(analysis, runner, options, skipbadfiles=True))
