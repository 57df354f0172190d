"""One analysis run: load the configuration, plan chunks, execute, collect, summarise.

This is what `coffea-dispatch run` calls, whatever the executor: a job array is submitted and, with --wait,
waited for and collected into the same RunResult (`coffea_dispatch.api.run` is the notebook's door to it).
"""

from __future__ import annotations

import contextlib
import html
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coffea.nanoevents import BaseSchema, NanoAODSchema
from coffea.processor import accumulate

from coffea_dispatch.batch.job import read_record
from coffea_dispatch.batch.submission import Submission
from coffea_dispatch.batch.submit import all_done, continue_submission, earlier_submission, submit_analysis
from coffea_dispatch.batch.wait import follow_jobs
from coffea_dispatch.dump.collect import merge, submission_completeness, summed_accumulators
from coffea_dispatch.dump.completeness import (
    Completeness,
    from_run,
    known_from_cache,
    percent,
    plan_ranges,
    record_completeness,
)
from coffea_dispatch.dump.ledger import file_key, inputs_on_record
from coffea_dispatch.dump.relocate import CannotRelocate, references
from coffea_dispatch.dump.resume import checkpoints_for, resume_from_dump
from coffea_dispatch.errors import BadInputFile, DispatchError, OutputError, StalePlan
from coffea_dispatch.executors import (
    ExecutorSettings,
    check_executor,
    describe_with,
    expected_workers,
    is_job_array,
    open_executor,
    prepare_inputs,
    runs_in_process,
    sized,
    worker_count,
)
from coffea_dispatch.higgsdna import registries as higgsdna
from coffea_dispatch.higgsdna.plot import plot_mass, prefetch_plotting
from coffea_dispatch.higgsdna.workflows import DIPHOTON, Workflow, instantiate_workflow, resolve_workflow
from coffea_dispatch.inputs.analysis import Analysis, load_analysis
from coffea_dispatch.inputs.files import configure_xrootd, register_replicas
from coffea_dispatch.inputs.metadata_cache import MetadataCache, cache_at
from coffea_dispatch.inputs.ordering import slowest_first
from coffea_dispatch.inputs.planning import (
    DescribeMany,
    FileTask,
    Fusion,
    Plan,
    describe_serially,
    plan_chunks,
    refuse_bad_input,
    refuse_one_file_twice,
    select_samples,
    uuid_keys,
)
from coffea_dispatch.inputs.proxy import find_proxy, is_remote
from coffea_dispatch.options import PHYSICS_SWITCHES, RunOptions, SubmitOptions, job_arguments
from coffea_dispatch.output import save_accumulator
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
    describe_item,
)
from coffea_dispatch.pipeline.diagnose import Diagnosis, rerun_chunk, write_reproducer
from coffea_dispatch.result_keys import FOLLOW_UP_KEY, KILLED_KEY, KILLED_WORKERS_KEY

SCHEMAS = {"nano": NanoAODSchema, "base": BaseSchema}
TREE_NAME = "Events"


@dataclass
class SampleSummary:
    sample: str
    files: int = 0
    chunks: int = 0
    events: int = 0
    candidates: int | None = None
    bad_files: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    served: dict[str, list[str]] = field(default_factory=dict)  # a file with replicas -> the replicas read


@dataclass
class RunResult:
    """What a run produced: the processor's accumulator and the numbers for the summary table."""

    analysis: Analysis
    executor: str
    workers: int
    accumulator: Any
    samples: dict[str, SampleSummary]
    wall_seconds: float
    notes: list[str] = field(default_factory=list)
    saved: Path | None = None
    plot: Path | None = None
    failed_chunks: list = field(default_factory=list)  # executors.diagnose.Diagnosis, one per killer chunk
    retries: int = 0
    resumed_chunks: int = 0  # complete in --dump from an earlier run: not processed again
    submission: Submission | None = None  # a job array's folder
    waited: bool = True  # False: a job array submitted and not waited for (`merge` or `--wait` collects it)
    completeness: Completeness = field(default_factory=Completeness)  # per sample: how much of its inputs was read

    @property
    def events(self) -> int:
        return sum(s.events for s in self.samples.values())

    @property
    def bad_files(self) -> dict[str, dict[str, str]]:
        return {name: s.bad_files for name, s in self.samples.items() if s.bad_files}

    def _read_share(self, sample: str) -> str:
        reading = self.completeness.get(sample)
        return percent(reading.fraction() if reading is not None else None)

    def _repr_html_(self) -> str:
        """The summary table in Jupyter (the command line prints the same numbers with rich)."""
        columns = ("sample", "files", "chunks", "events", "candidates", "bad files", "read")
        head = "".join(f"<th>{h}</th>" for h in columns)
        rows = "".join(
            f"<tr><td>{html.escape(s.sample)}</td><td>{s.files}</td><td>{s.chunks}</td><td>{s.events:,}</td>"
            f"<td>{'' if s.candidates is None else s.candidates}</td><td>{len(s.bad_files)}</td>"
            f"<td>{self._read_share(s.sample)}</td></tr>"
            for s in self.samples.values()
        )
        caption = f"{self.events:,} events on {html.escape(self.executor)} ({self.workers} worker(s)) in "
        caption += f"{self.wall_seconds:.1f} s"
        notes = "".join(f"<li>{html.escape(note)}</li>" for note in self.notes)
        return f"<table><caption>{caption}</caption><tr>{head}</tr>{rows}</table>" + (
            f"<ul>{notes}</ul>" if notes else ""
        )


def unused_switch_notes(workflow: Workflow, physics: dict[str, Any]) -> list[str]:
    """Our diphoton workflow ignores HiggsDNA's physics switches: say so rather than pretend."""
    given = [name for name, value in physics.items() if value != PHYSICS_SWITCHES.get(name)]
    if workflow.class_path == DIPHOTON and given:
        return [
            f"HiggsDNA option(s) {', '.join('--' + g for g in sorted(given))} accepted but not used by "
            "coffea-dispatch's diphoton workflow"
        ]
    return []


def processor_arguments(analysis: Analysis, options: RunOptions) -> dict[str, Any]:
    """Everything a processor may be built with, under HiggsDNA's keyword names."""
    physics = {**PHYSICS_SWITCHES, **options.physics}
    return {
        **analysis.processor_settings(),
        "output_location": options.dump,
        "apply_trigger": physics.pop("use_trigger"),
        **physics,
    }


def build_processor(analysis: Analysis, options: RunOptions) -> tuple[Workflow, Any]:
    """HiggsDNA's workflows get exactly the keyword arguments its run_analysis.py passes (taggers built from
    its registry, --nano-version required as there); any other processor gets those it accepts."""
    workflow = resolve_workflow(analysis.workflow)
    kwargs = processor_arguments(analysis, options)
    if not workflow.from_higgsdna:
        return workflow, instantiate_workflow(workflow.cls, analysis.workflow, kwargs)
    if kwargs["nano_version"] is None:
        raise DispatchError(
            f"workflow '{analysis.workflow}' is HiggsDNA's and needs --nano-version (the NanoAOD version of the "
            "inputs, e.g. --nano-version 12), as HiggsDNA's run_analysis.py does"
        )
    kwargs["taggers"] = higgsdna.taggers(analysis.taggers, str(analysis.path))
    exact = {name: kwargs[name] for name in higgsdna.PROCESSOR_KEYWORDS}
    return workflow, instantiate_workflow(workflow.cls, analysis.workflow, exact, pass_all=True)


def _schema_for(processor_instance, options: RunOptions, notes: list[str]) -> type:
    if options.schema not in SCHEMAS:
        raise DispatchError(f"unknown --schema '{options.schema}' (choose from: {', '.join(SCHEMAS)})")
    pinned = getattr(processor_instance, "nanoevents_schema", None)
    if pinned is None:
        return SCHEMAS[options.schema]
    if options.schema != "nano":
        notes.append(f"the workflow reads NanoAOD with its own schema; --schema {options.schema} is ignored")
    return pinned


def _check_common_options(options: RunOptions) -> None:
    check_executor(options.executor)
    if options.format != "root":
        raise DispatchError(f"--format {options.format}: only ROOT (NanoAOD) inputs are supported")
    if options.dump is not None and Path(options.dump).exists() and not Path(options.dump).is_dir():
        raise DispatchError(f"--dump {options.dump}: exists and is not a directory")


@dataclass
class Given:
    """What a Python caller hands the run instead of files and names (`coffea_dispatch.api.run`): the samples
    as an Analysis, the processor instance, an executor object (ours, or any of coffea's)."""

    analysis: Analysis | None = None
    processor: Any = None
    executor: Any = None


def prepare(options: RunOptions, given: Given | None = None) -> tuple[Analysis, Any, ChunkRunner, list[str]]:
    """Everything that can fail on bad input, done before any output is written."""
    given = given or Given()
    if given.executor is None:
        _check_common_options(options)
    configure_xrootd(options.timeout)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        analysis = given.analysis or load_analysis(options.json_analysis, options.redirector)
    notes = [str(w.message) for w in caught]
    notes += prepare_inputs(options.executor, analysis)
    register_replicas(analysis.replicas)
    if given.processor is not None:
        processor_instance = given.processor
    else:
        workflow, processor_instance = build_processor(analysis, options)
        notes.append(f"workflow '{analysis.workflow}' runs {workflow.class_path}")
        notes += unused_switch_notes(workflow, options.physics)
    schema = _schema_for(processor_instance, options, notes)
    runner = ChunkRunner(
        processor_instance,
        analysis.workflow,
        schema,
        timeout=options.timeout,
        retries=options.retries,
        replicas=analysis.replicas,
        checkpoints=checkpoints_for(analysis, processor_instance, schema, options),
        output_root=options.dump,
        output_places=_places_into_dump(processor_instance, options.dump),
    )
    return analysis, processor_instance, runner, notes


def _places_into_dump(processor_instance, dump: str | None) -> list:
    """Where the processor keeps a path into the dump (its files are then staged per chunk); a place that
    cannot be pointed elsewhere stops the run here, before outputs could bypass staging."""
    if dump is None:
        return []
    try:
        return references(processor_instance, dump)
    except CannotRelocate as exc:
        raise DispatchError(
            f"the processor keeps its output folder in {exc.where}, which cannot be pointed at the chunk's private "
            f"staging folder ({exc.why}); keep it in a plain attribute such as self.output_location"
        ) from None


def metadata_cache(options: RunOptions) -> MetadataCache:
    if not options.use_metadata_cache:
        return MetadataCache(None)
    return cache_at(options.metadata_cache)


def make_plan(
    analysis: Analysis,
    runner: ChunkRunner,
    options: RunOptions,
    skipbadfiles: bool,
    describe_many: DescribeMany = describe_serially,
    fusion: Fusion | None = None,
    cache: MetadataCache | None = None,
) -> Plan:
    samples = select_samples(analysis.samples, options.only, options.limit)
    return plan_chunks(
        samples,
        chunksize=options.chunk,
        maxchunks=options.max,
        treename=TREE_NAME,
        required_branches=runner.required_branches,
        workflow=analysis.workflow,
        skipbadfiles=skipbadfiles,
        timeout=options.timeout,
        retries=options.retries,
        cache=cache if cache is not None else metadata_cache(options),
        describe_many=describe_many,
        fusion=fusion,
        entry_ranges=analysis.entry_ranges,
    )


def fusion_for(options: RunOptions, settings: ExecutorSettings, cache: MetadataCache) -> Fusion:
    """Inputs the dump holds no record of may be described on the workers while processing goes on; those it
    has records of are described first, so that resume can compare them with what an earlier run read."""
    on_record = inputs_on_record(Path(options.dump)) if options.dump else set()
    folder = str(cache.folder) if cache.folder is not None else None

    def can_fuse(sample: str, filename: str) -> bool:
        return (sample, file_key(filename)) not in on_record

    return Fusion(can_fuse, expected_workers(settings), folder)


def _summaries(plan: Plan, collected: dict[str, Any], output: Any) -> dict[str, SampleSummary]:
    stats = collected.get(STATS_KEY, {})
    bad = collected.get(BAD_FILES_KEY, {})
    summaries = {}
    for sample, files in plan.files.items():
        s = stats.get(sample, {})
        bad_files = {**plan.bad_files.get(sample, {}), **dict(sorted(bad.get(sample, set())))}
        summary = SampleSummary(
            sample,
            files=len(set(files) - set(bad_files)),
            chunks=s.get("chunks", 0),
            events=s.get("events", 0),
            seconds=s.get("seconds", 0.0),
            bad_files=bad_files,
        )
        for filename, replica in sorted(s.get("served", set())):
            summary.served.setdefault(filename, []).append(replica)
        summary.candidates = candidates_in(output, sample)
        summaries[sample] = summary
    return summaries


def candidates_in(output: Any, sample: str) -> int | None:
    """The base workflow's candidate count for the summary; None for processors that do not count them."""
    if isinstance(output, dict) and isinstance(output.get(sample), dict) and "candidates" in output[sample]:
        return int(output[sample]["candidates"])
    return None


def _save_accumulator(output: Any, options: RunOptions) -> Path | None:
    target = options.save or options.output
    if target is None:
        return None
    return save_accumulator(output, target)


def _raise_first_failure(collected: dict[str, Any]) -> None:
    """A chunk failed for good (processor bug, output not writable): the run fails with that error."""
    failures = collected.get(FAILURES_KEY)
    if failures:
        not_run = collected.get(NOT_RUN_KEY, 0)
        if not_run:
            failures[0].message += f" ({not_run} other chunk(s) were not started after this failure)"
        raise failures[0]


def _fail_on_unreadable(bad_files: dict[str, set[tuple[str, str]]]) -> None:
    """Without --skipbadfiles, a file that broke while being read fails the run, once the rest is done."""
    if not bad_files:
        return
    problems = sorted(problem for per_sample in bad_files.values() for problem in per_sample)
    filename, reason = problems[0]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    raise DispatchError(f"{filename}: {reason}{more}; use --skipbadfiles to skip unreadable files")


def _fail_on_overwritten_outputs(written: dict[str, int]) -> None:
    """Two chunks that wrote the same output path: the second replaced the first, whose events are lost."""
    clashes = sorted(path for path, count in written.items() if count > 1)
    if clashes:
        more = f" (and {len(clashes) - 1} more)" if len(clashes) > 1 else ""
        raise DispatchError(
            f"{written[clashes[0]]} chunks wrote the same output {clashes[0]}{more}, so all but one were overwritten: "
            "the processor names its outputs ambiguously; give each chunk's output a name of its own (HiggsDNA "
            "names them by the events' partition key: file UUID and entry range), then rerun with --overwrite"
        )


def _escaped_notes(escaped: dict[str, int]) -> list[str]:
    """Files a processor wrote beside its output_location are not outputs of the run: said, never kept."""
    if not escaped:
        return []
    return [
        f"the processor wrote {sum(escaped.values())} file(s) outside its output_location (e.g. {min(escaped)}): "
        "they were removed; write outputs under output_location"
    ]


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


def _is_bystander(diagnosis: Diagnosis) -> bool:
    return diagnosis.fine_alone and not isinstance(diagnosis.item, FileTask)


def _rerun_bystanders(diagnoses: list, runner: ChunkRunner, collected: dict[str, Any]) -> tuple[dict, list[str]]:
    """Dask blames every chunk running on a worker that dies: a chunk that runs fine alone, within the workers'
    memory, only shared a worker with the killer (or the worker died for another reason). It is run here, in
    this process, so it is neither lost nor reported as a failure."""
    bystanders = [d.item for d in diagnoses if _is_bystander(d)]
    if not bystanders:
        return collected, []
    collected = accumulate([collected, *(runner(item) for item in bystanders)])
    return collected, [
        f"{describe_item(item)} was running on a Dask worker that died; it runs fine alone, so it was run here"
        for item in bystanders
    ]


def _same_chunk(a, b) -> bool:
    if isinstance(a, FileTask) or isinstance(b, FileTask):
        return False
    return (a.filename, a.entrystart, a.entrystop) == (b.filename, b.entrystart, b.entrystop)


def _with_reproducer(diagnosis, analysis: Analysis, options: RunOptions):
    """The single-file analysis JSON and the command that rerun a failed chunk alone."""
    folder = Path(options.dump) / ".diagnosis" if options.dump else Path("coffea-dispatch-diagnosis")
    diagnosis.analysis_json, diagnosis.reproduce_command = write_reproducer(
        analysis, diagnosis.item, options.chunk, options.dump, folder
    )
    return diagnosis


def _dead_worker_notes(dead: list) -> list[str]:
    """Chunks whose `futures` worker died once and that completed in a fresh one; a FileTask whose describing
    killed two workers stops the run (no chunk of it is known)."""
    notes = []
    for death in dead:
        if isinstance(death.item, FileTask):
            if death.final:
                raise DispatchError(f"{death.item.filename}: reading its metadata killed two workers ({death.cause})")
            continue
        if not any(d.final and _same_chunk(d.item, death.item) for d in dead):
            notes.append(
                f"the worker running {describe_item(death.item)} died ({death.cause}); the chunk was run again "
                "in a fresh worker"
            )
    return notes


def _killed_chunk(death, analysis: Analysis, options: RunOptions):
    """A chunk that killed the fresh worker it was retried in too: said as Dask's killer chunks are, with the
    command that reruns it alone; the other chunks are done."""
    verdict = (
        f"killed the worker running it twice ({death.cause}): rerun the same command with a smaller --chunk or "
        "fewer -j (the other chunks are done)"
    )
    return _with_reproducer(Diagnosis(death.item, verdict), analysis, options)


def export_proxy(voms: str | None) -> None:
    """Remote inputs: the grid proxy (--voms, else voms-proxy-info -p, ...) goes into X509_USER_PROXY before
    any worker starts, so every process that reads a file (forked pool, Dask workers) finds it. Without one,
    servers that need no authentication still work."""
    proxy = find_proxy(voms)
    if proxy is not None:
        os.environ["X509_USER_PROXY"] = str(proxy)


def save_and_plot(run: RunResult, options: RunOptions) -> None:
    """The end of every run: the accumulator to -o/--save, the mass plot next to the outputs."""
    try:
        run.saved = _save_accumulator(run.accumulator, options)
        if _plot_wanted(options):
            run.plot = plot_mass(run.accumulator, options.dump, run.saved, run.analysis.year)
    except OutputError as exc:  # a full disk at the very end: the chunks are safe, say so
        if options.dump:
            exc.message += "; every chunk is recorded in --dump, so the rerun only writes this"
        raise


def _plot_wanted(options: RunOptions) -> bool:
    return options.plot and any((options.dump, options.save, options.output))


class LazyExecutor:
    """The run's executor, started on first use: by planning when inputs must be read (on its workers), else
    only once there are chunks to run (a dump already complete starts none)."""

    def __init__(
        self, settings: ExecutorSettings, announce: Callable[[str], None], stack: contextlib.ExitStack, given=None
    ):
        self.settings, self.announce, self.stack = settings, announce, stack
        self.executor = given  # an executor object the caller made (coffea's, or ours for coffea's Runner)

    def get(self, n_items: int):
        """Sized for `n_items` items (a futures pool has no more workers than that)."""
        if self.executor is None:
            context = open_executor(self.settings, n_items=n_items, announce=self.announce)
            self.executor = self.stack.enter_context(context)
        return self.executor

    def describe_many(self, filenames: list[str], describer) -> dict:
        """Planning on the workers (a pool grows for the chunks to come)."""
        if len(filenames) == 1 and self.executor is None:  # not worth starting workers for
            return describe_serially(filenames, describer)
        return describe_with(self.get(len(filenames)))(filenames, describer)


def run_analysis(options: RunOptions, submit: SubmitOptions | None = None, given: Given | None = None) -> RunResult:
    """Run the analysis described by `options` and return its accumulator and summary; a job array (`submit`:
    how it is cut and followed) is submitted, then waited for and collected when `submit.wait`."""
    given = given or Given()
    if given.executor is None and is_job_array(options.executor):
        return run_job_array(options, submit or SubmitOptions())
    started = time.perf_counter()
    analysis, processor_instance, runner, notes = prepare(options, given)
    settings = sized(options.executor_settings())
    samples = select_samples(analysis.samples, options.only, options.limit)
    settings.remote_inputs = any(is_remote(f) for files in samples.values() for f in files)
    if settings.remote_inputs:  # before any worker starts, planning's included
        export_proxy(options.voms)
    announce = options.announce or (lambda line: None)
    cache = metadata_cache(options)
    collected, killed, n_workers = {}, [], None
    with contextlib.ExitStack() as stack:
        executors = LazyExecutor(settings, announce, stack, given.executor)
        in_process = given.executor is None and runs_in_process(options.executor)
        describe = describe_serially if in_process else executors.describe_many
        fusion = fusion_for(options, settings, cache)
        plan = make_plan(analysis, runner, options, options.skipbadfiles, describe, fusion, cache)
        if plan.from_cache:
            notes.append(f"entries and branches of {plan.from_cache} input file(s) came from the metadata cache")
        resume = resume_from_dump(runner.checkpoints, plan, options)
        slots = expected_workers(settings)
        pending, resumed = slowest_first(plan.tasks, resume.pending, cache, TREE_NAME, slots), resume.done
        if pending:  # all complete from an earlier run: no workers to start
            # sized for what is known now: a pool grows when FileTasks hand back chunks
            executor = executors.get(len(pending))
            notes += resume.start(options.overwrite)
            if _plot_wanted(options) and not runs_in_process(options.executor):
                # chunks run in other processes, so the main one can get matplotlib ready meanwhile
                prefetch_plotting()
            collected, killed = _execute(executor, pending, runner, options.skipbadfiles)
            n_workers = getattr(executor, "n_workers", None)
        else:
            notes += resume.start(options.overwrite)
    plan.add_described(collected.pop(DESCRIBED_KEY, {}), collected.pop(BAD_INPUTS_KEY, {}), cache)
    dead_workers = collected.pop(KILLED_KEY, [])
    notes += _dead_worker_notes(dead_workers)
    # inputs described on the workers (remote, not cached) are compared only now
    refuse_one_file_twice(samples, {f: uuid_keys(i.get("uuid")) for f, i in plan.identities.items()}, done=True)
    for failure in collected.get(FAILURES_KEY, []):
        if isinstance(failure, StalePlan):  # a worker found the file is not what the cache said
            cache.forget(failure.path, TREE_NAME)
    if not options.skipbadfiles:
        _refuse_first_bad_input(plan, samples)
    diagnoses = [rerun_chunk(runner, error.item, error.worker_memory_bytes) for error in killed]
    collected, rerun_here = _rerun_bystanders(diagnoses, runner, collected)
    notes += rerun_here
    if resumed:
        collected = accumulate([collected, *resumed])
    cache.store_chunk_seconds(TREE_NAME, collected.pop(TIMINGS_KEY, {}))
    in_job = submit is not None and submit.job_record is not None  # a job of a job array: its submitter writes it
    completeness = _completeness(analysis, plan, collected, options, cache, in_job)
    _raise_first_failure(collected)
    if not options.skipbadfiles:
        _fail_on_unreadable(collected.get(BAD_FILES_KEY, {}))
    _fail_on_overwritten_outputs(collected.get(WRITTEN_KEY, {}))
    notes += _escaped_notes(collected.get(ESCAPED_KEY, {}))
    output = processor_instance.postprocess(collected.get(OUTPUT_KEY, {}))
    run = RunResult(
        analysis,
        options.executor,
        n_workers or worker_count(options.executor, settings.workers or 1, len(plan.items) + len(plan.tasks)),
        output,
        _summaries(plan, collected, output),
        wall_seconds=0.0,
        notes=notes,
    )
    run.completeness = completeness
    notes += completeness.warnings()
    run.retries = len(killed)
    run.resumed_chunks = len(resumed)
    run.failed_chunks = [_with_reproducer(d, analysis, options) for d in diagnoses if not _is_bystander(d)]
    run.failed_chunks += [_killed_chunk(k, analysis, options) for k in dead_workers if k.final]
    save_and_plot(run, options)
    run.wall_seconds = time.perf_counter() - started
    return run


def _completeness(
    analysis: Analysis,
    plan: Plan,
    collected: dict[str, Any],
    options: RunOptions,
    cache: MetadataCache,
    in_job: bool = False,
) -> Completeness:
    """How much of each sample this run read (with --dump: the dump holds, earlier runs' chunks included; its
    completeness.json is rewritten, by the run itself and not by each job of a job array)."""
    listing = select_samples(analysis.samples, options.only, None)  # --limit leaves files not run
    uuids = {f: i.get("uuid", "") for f, i in plan.identities.items()}
    known = {f: (n, plan.totals.get(f, {}), uuids.get(f, "")) for f, n in plan.entries.items()}
    unknown = [f for files in listing.values() for f in files if f not in known]
    known.update(known_from_cache(unknown, cache, TREE_NAME))
    problems: dict[str, dict[str, str]] = {}
    for sample, files in plan.bad_files.items():
        problems.setdefault(sample, {}).update({f: f"skipped: {why}" for f, why in files.items()})
    for sample, files in collected.get(BAD_FILES_KEY, {}).items():
        problems.setdefault(sample, {}).update({f: f"failed: {why}" for f, why in sorted(files)})
    completeness = from_run(listing, collected.get(STATS_KEY, {}), known, problems)
    if options.dump is None or in_job:
        return completeness
    redone = [f for files in plan.files.values() for f in files] if options.overwrite else []
    return record_completeness(options.dump, completeness, plan_ranges(plan.items), redone)


def _refuse_first_bad_input(plan: Plan, samples: dict[str, list[str]]) -> None:
    """An input a worker found unusable (FileTask) fails the run as planning would have: the first one in the
    sample JSON's order, in the same words."""
    for sample, filenames in samples.items():
        for filename in filenames:
            reason = plan.bad_files.get(sample, {}).get(filename)
            if reason is not None:
                refuse_bad_input(BadInputFile(filename, reason))


@dataclass
class ValidationResult:
    analysis: Analysis
    plan: Plan

    @property
    def bad_files(self) -> dict[str, dict[str, str]]:
        return {sample: files for sample, files in self.plan.bad_files.items() if files}


def validate_inputs(options: RunOptions) -> ValidationResult:
    """HiggsDNA's --validate: open every input, count its events, list the bad ones; process nothing."""
    analysis, _, runner, _ = prepare(options)
    return ValidationResult(analysis, make_plan(analysis, runner, options, skipbadfiles=True))


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
