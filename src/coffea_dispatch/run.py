"""One analysis run: load the configuration, plan chunks, execute, collect, summarise.

This is the Python API under `run_analysis.py`: tests and notebooks call `run_analysis(RunOptions(...))`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from coffea.nanoevents import BaseSchema, NanoAODSchema
from coffea.processor import accumulate

from coffea_dispatch import higgsdna
from coffea_dispatch.analysis import Analysis, load_analysis
from coffea_dispatch.chunk import (
    BAD_FILES_KEY,
    BAD_INPUTS_KEY,
    DESCRIBED_KEY,
    FAILURES_KEY,
    NOT_RUN_KEY,
    OUTPUT_KEY,
    RUN_FAILED,
    STATS_KEY,
    WRITTEN_KEY,
    ChunkRunner,
)
from coffea_dispatch.errors import BadInputFile, DispatchError, KilledWorkerError, OutputError
from coffea_dispatch.executors import (
    FOLLOW_UP_KEY,
    LOCAL_EXECUTORS,
    ExecutorSettings,
    check_executor,
    describe_with,
    expected_workers,
    open_executor,
    worker_count,
)
from coffea_dispatch.inputs import configure_xrootd, register_replicas
from coffea_dispatch.ledger import file_key, inputs_on_record
from coffea_dispatch.metadata_cache import MetadataCache
from coffea_dispatch.metadata_cache import default_folder as default_metadata_folder
from coffea_dispatch.output import temporary_path
from coffea_dispatch.planning import (
    DescribeMany,
    FileTask,
    Fusion,
    Plan,
    describe_serially,
    plan_chunks,
    refuse_bad_input,
    select_samples,
)
from coffea_dispatch.proxy import find_proxy, is_remote
from coffea_dispatch.workflows import DIPHOTON, Workflow, instantiate_workflow, resolve_workflow

SCHEMAS = {"nano": NanoAODSchema, "base": BaseSchema}
TREE_NAME = "Events"
# HiggsDNA physics switches: accepted so HiggsDNA command lines run unchanged, passed to user processors.
PHYSICS_SWITCHES: dict[str, Any] = {
    "skipCQR": False,
    "applyCQR": False,
    "skipJetVetoMap": False,
    "use_trigger": True,
    "fiducialCuts": "classical",
    "doDeco": False,
    "Smear_sigma_m": False,
    "doFlow_corrections": False,
    "output_format": "parquet",
    "nano_version": None,
    "analysis": "mainAnalysis",
    "trigger_group": ".*DoubleEG.*",  # --triggerGroup
}


@dataclass
class RunOptions:
    """The command line's options, with HiggsDNA's names and defaults."""

    json_analysis: str
    dump: str | None = None
    output: str | None = None
    save: str | None = None
    schema: str = "nano"
    format: str = "root"
    executor: str = "futures"
    workers: int | None = None
    memory: str | None = None
    walltime: str = "01:00:00"
    disk: str = "20GB"
    scaleout: int | None = None
    max_scaleout: int | None = None
    queue: str | None = None
    voms: str | None = None
    timeout: int = 60
    redirector: str | None = None  # bare /store/... paths are read through it (root://host)
    retries: int = 2  # a remote file that fails to open or read is tried this many more times
    validate: bool = False
    metadata_cache: str | None = None  # folder; None: $XDG_CACHE_HOME/coffea-dispatch/metadata
    use_metadata_cache: bool = True
    skipbadfiles: bool = False
    overwrite: bool = False  # redo every chunk of --dump instead of resuming
    only: str | None = None
    limit: int | None = None
    chunk: int = 500_000
    max: int | None = None
    debug: bool = False
    physics: dict[str, Any] = field(default_factory=dict)
    progress: bool = True
    plot: bool = True
    dashboard_port: int | None = None
    show_tunnel: bool = False
    dask_report: str | None = None
    scheduler_address: str | None = None
    worker_image: str | None = None
    log_directory: str = "dask-worker-logs"
    # lines the user should see while the run goes on (the Dask dashboard); the CLI prints them
    announce: Callable[[str], None] | None = None

    def executor_settings(self) -> ExecutorSettings:
        """The executor's share of the options: same names, except `name` (--executor) and `status` (progress)."""
        shared = {f.name: getattr(self, f.name) for f in fields(ExecutorSettings) if hasattr(self, f.name)}
        shared["workers"] = self.workers_for_executor() if self.executor in LOCAL_EXECUTORS else self.workers
        return ExecutorSettings(**{**shared, "name": self.executor, "status": self.progress})

    def workers_for_executor(self) -> int:
        if self.workers is not None:
            if self.workers < 1:
                raise DispatchError(f"--workers must be at least 1, got {self.workers}")
            return self.workers
        return 1 if self.executor == "iterative" else (os.cpu_count() or 1)


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

    @property
    def events(self) -> int:
        return sum(s.events for s in self.samples.values())

    @property
    def bad_files(self) -> dict[str, dict[str, str]]:
        return {name: s.bad_files for name, s in self.samples.items() if s.bad_files}


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
        "metaconditions": analysis.metaconditions,
        "systematics": analysis.systematics,
        "corrections": analysis.corrections,
        "taggers": analysis.taggers,
        "year": analysis.year,
        "bTagEffFileName": analysis.btag_eff_file,
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
    check_executor(options.executor, blocking=True)
    if options.format != "root":
        raise DispatchError(f"--format {options.format}: only ROOT (NanoAOD) inputs are supported")
    if options.dump is not None and Path(options.dump).exists() and not Path(options.dump).is_dir():
        raise DispatchError(f"--dump {options.dump}: exists and is not a directory")


def prepare(options: RunOptions) -> tuple[Analysis, Any, ChunkRunner, list[str]]:
    """Everything that can fail on bad input, done before any output is written."""
    _check_common_options(options)
    configure_xrootd(options.timeout)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        analysis = load_analysis(options.json_analysis, options.redirector)
    notes = [str(w.message) for w in caught]
    if options.executor == "dask/casa":
        notes += _read_through_casa_cache(analysis)
    register_replicas(analysis.replicas)
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
    )
    return analysis, processor_instance, runner, notes


def _read_through_casa_cache(analysis: Analysis) -> list[str]:
    from coffea_dispatch.executors.dask import CASA_CACHE_HOST, through_casa_cache

    before = analysis.samples
    analysis.samples = {name: [through_casa_cache(f) for f in files] for name, files in before.items()}
    replicas = analysis.replicas
    analysis.replicas = {through_casa_cache(f): [through_casa_cache(r) for r in rs] for f, rs in replicas.items()}
    if analysis.samples == before:
        return []
    return [f"dask/casa: root:// inputs are read through coffea-casa's cache (root://{CASA_CACHE_HOST}/...)"]


def configuration(analysis: Analysis, processor_instance, schema: type, options: RunOptions) -> dict[str, Any]:
    """What decides a chunk's output: the processor class and everything it was built with, and the schema."""
    kind = type(processor_instance)
    return {
        "processor": f"{kind.__module__}.{kind.__qualname__}",
        "schema": f"{schema.__module__}.{schema.__qualname__}",
        "metaconditions": analysis.metaconditions,
        "systematics": analysis.systematics,
        "corrections": analysis.corrections,
        "taggers": analysis.taggers,
        "year": analysis.year,
        "bTagEffFileName": analysis.btag_eff_file,
        "physics": {**PHYSICS_SWITCHES, **options.physics},
    }


@dataclass
class Resume:
    """With --dump: the chunks still to run and the saved results of those an earlier run completed
    (coffea_dispatch.ledger). Deciding this only reads the dump; `start` claims it for this configuration,
    repairs and records, once the executor is up."""

    ledger: Any = None
    chunks_per_file: dict[str, dict[str, list[tuple[int, int]]]] = field(default_factory=dict)
    pending: list = field(default_factory=list)
    done: list[dict[str, Any]] = field(default_factory=list)
    identities: dict[str, dict[str, Any]] = field(default_factory=dict)
    ranges: dict[str, set[tuple[int, int]]] = field(default_factory=dict)  # per file: this chunking's ranges
    changed_inputs: list[tuple[str, str]] = field(default_factory=list)
    stray: list[Path] = field(default_factory=list)  # records of another chunking of these inputs
    damaged: list = field(default_factory=list)  # chunks with a record that failed verification: redone
    notes: list[str] = field(default_factory=list)

    def start(self, runner: ChunkRunner, overwrite: bool) -> list[str]:
        """Forget the earlier run (--overwrite), the chunks of replaced inputs and of another chunking, and
        damaged chunks about to be redone; record this run's chunks, and let the workers record theirs."""
        if self.ledger is None:
            return []
        self.ledger.claim(replace=overwrite)  # the first write: a run racing with another configuration stops here
        notes = list(self.notes)
        if overwrite:
            removed = self.ledger.clear(self.chunks_per_file)
            if removed:
                notes.append(f"--overwrite: removed {removed} output file(s) of the earlier run")
        for sample, filename in self.changed_inputs:
            removed = self.ledger.clear({sample: {filename: []}})
            notes.append(f"{filename} changed since the earlier run: its chunks are redone ({removed} outputs removed)")
        if self.stray:
            removed = self.ledger.remove_records(self.stray)
            notes.append(
                f"removed {len(self.stray)} chunk(s) of another --chunk ({removed} output(s)) that duplicated events"
            )
        for item in self.damaged:
            self.ledger.discard(item)
        self.ledger.record_plan(self.chunks_per_file, self.identities, self.ranges)
        runner.ledger = self.ledger
        return notes


def resume_from_dump(analysis: Analysis, runner: ChunkRunner, plan: Plan, options: RunOptions) -> Resume:
    from coffea_dispatch.ledger import Ledger, fingerprint
    from coffea_dispatch.planning import chunk_ranges

    if options.dump is None:
        return Resume(pending=list(plan.items))
    config = configuration(analysis, runner.processor, runner.schema, options)
    ledger = Ledger(Path(options.dump), fingerprint(config), options.chunk)
    resume = Resume(ledger, identities=plan.identities)
    for item in plan.items:
        resume.chunks_per_file.setdefault(item.dataset, {}).setdefault(item.filename, []).append(
            (item.entrystart, item.entrystop)
        )
    resume.ranges = {f: set(chunk_ranges(n, options.chunk)) for f, n in plan.entries.items()}
    resume.notes = ledger.open_folder(plan.files)
    if options.overwrite:
        resume.pending = list(plan.items)
        return resume
    if ledger.configuration() is None:  # a new dump, or one of an older version: its plan files decide
        ledger.check_plan(resume.chunks_per_file)
    ledger.check_configuration()
    resume.changed_inputs = ledger.changed_inputs(plan.identities, resume.chunks_per_file)
    resume.stray = ledger.stray_chunks(resume.chunks_per_file, resume.ranges)
    redo = set(resume.changed_inputs)
    for item in plan.items:
        result = None if (item.dataset, item.filename) in redo else ledger.completed(item)
        if result is None:
            resume.pending.append(item)
            if ledger.marker(item).exists():
                resume.damaged.append(item)
        else:
            resume.done.append(result)
    return resume


def metadata_cache(options: RunOptions) -> MetadataCache:
    if not options.use_metadata_cache:
        return MetadataCache(None)
    return MetadataCache(Path(options.metadata_cache) if options.metadata_cache else default_metadata_folder())


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
        summary.candidates = _candidates(output, sample)
        summaries[sample] = summary
    return summaries


def _candidates(output: Any, sample: str) -> int | None:
    """The base workflow's candidate count for the summary; None for processors that do not count them."""
    if isinstance(output, dict) and isinstance(output.get(sample), dict) and "candidates" in output[sample]:
        return int(output[sample]["candidates"])
    return None


def _save_accumulator(output: Any, options: RunOptions) -> Path | None:
    target = options.save or options.output
    if target is None:
        return None
    from coffea.util import save

    path = Path(target)
    temporary = temporary_path(path)
    try:
        save(output, str(temporary))
        os.replace(temporary, path)
    except OSError as exc:
        raise OutputError(str(path), f"{type(exc).__name__}: {exc.strerror or exc}") from None
    finally:
        temporary.unlink(missing_ok=True)
    return path


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
            "the processor names its outputs ambiguously (HiggsDNA names them by the file's UUID: are two inputs "
            "copies of one file?); remove the duplicate inputs, then rerun with --overwrite"
        )


MAX_KILLER_CHUNKS = 5


def _execute(executor, items: list, runner: ChunkRunner, skipbadfiles: bool) -> tuple[dict[str, Any], list]:
    """Run every chunk and FileTask, and the follow-up chunks of FileTasks that executors hand back. A chunk
    that kills its workers is set aside and the others are run again without it, so their outputs are
    complete; the killers are returned for diagnosis."""
    killed: list[KilledWorkerError] = []
    collected: dict[str, Any] = {}
    remaining = list(items)
    while remaining:
        RUN_FAILED.clear()
        try:
            result = executor(remaining, runner, {})
        except KilledWorkerError as error:
            remaining = _without_killer(remaining, error, killed)
            continue
        result = result[0] if isinstance(result, tuple) else result
        remaining = result.pop(FOLLOW_UP_KEY, [])
        collected = accumulate([result], collected)
        if remaining and (result.get(FAILURES_KEY) or (result.get(BAD_INPUTS_KEY) and not skipbadfiles)):
            collected[NOT_RUN_KEY] = collected.get(NOT_RUN_KEY, 0) + len(remaining)
            break
    return collected, killed


def _without_killer(remaining: list, error: KilledWorkerError, killed: list) -> list:
    """What to run again after `error`: a FileTask that killed its workers is run again describing only, its
    chunks handed back one by one (so the next round names the chunk that kills); a chunk is left out."""
    if isinstance(error.item, FileTask):
        if error.item.chunks_here == 0:
            raise DispatchError(f"{error.item.filename}: reading its metadata killed the Dask workers (KilledWorker)")
        return [dataclasses.replace(i, chunks_here=0) if i is error.item else i for i in remaining]
    killed.append(error)
    if len(killed) >= MAX_KILLER_CHUNKS:
        raise DispatchError(f"{len(killed)} chunks killed their workers; stopping (last: {error.message})") from None
    return [i for i in remaining if not _same_chunk(i, error.item)]


def _same_chunk(a, b) -> bool:
    if isinstance(a, FileTask) or isinstance(b, FileTask):
        return False
    return (a.filename, a.entrystart, a.entrystop) == (b.filename, b.entrystart, b.entrystop)


def _diagnose(error, runner: ChunkRunner, analysis: Analysis, options: RunOptions):
    from coffea_dispatch.executors.diagnose import rerun_chunk, write_reproducer

    diagnosis = rerun_chunk(runner, error.item, error.worker_memory_bytes)
    folder = Path(options.dump) / ".diagnosis" if options.dump else Path("coffea-dispatch-diagnosis")
    diagnosis.analysis_json, diagnosis.reproduce_command = write_reproducer(
        analysis, error.item, options.chunk, options.dump, folder
    )
    return diagnosis


def export_proxy(voms: str | None) -> None:
    """Remote inputs: the grid proxy (--voms, else voms-proxy-info -p, ...) goes into X509_USER_PROXY before
    any worker starts, so every process that reads a file (forked pool, Dask workers) finds it. Without one,
    servers that need no authentication still work."""
    proxy = find_proxy(voms)
    if proxy is not None:
        os.environ["X509_USER_PROXY"] = str(proxy)


def _save_and_plot(run: RunResult, options: RunOptions) -> None:
    """The end of every run: the accumulator to -o/--save, the mass plot next to the outputs."""
    run.saved = _save_accumulator(run.accumulator, options)
    if _plot_wanted(options):
        from coffea_dispatch.report import plot_mass

        run.plot = plot_mass(run.accumulator, options.dump, run.saved)


def _plot_wanted(options: RunOptions) -> bool:
    return options.plot and any((options.dump, options.save, options.output))


class LazyExecutor:
    """The run's executor, started on first use: by planning when inputs must be read (on its workers), else
    only once there are chunks to run (a dump already complete starts none)."""

    def __init__(self, settings: ExecutorSettings, announce: Callable[[str], None], stack: contextlib.ExitStack):
        self.settings, self.announce, self.stack = settings, announce, stack
        self.executor = None

    def get(self, n_items: int):
        """Sized for `n_items` items (a futures pool has no more workers than that)."""
        if self.executor is None:
            context = open_executor(self.settings, n_items=n_items, announce=self.announce)
            self.executor = self.stack.enter_context(context)
        return self.executor

    def describe_many(self, filenames: list[str], describer) -> dict:
        """Planning on the workers; sized for the chunks to come, not for the few files to describe."""
        if len(filenames) == 1 and self.executor is None:  # not worth starting workers for
            return describe_serially(filenames, describer)
        return describe_with(self.get(max(len(filenames), self.settings.workers or 1)))(filenames, describer)


def run_analysis(options: RunOptions) -> RunResult:
    """Run the analysis described by `options` and return its accumulator and summary."""
    started = time.perf_counter()
    analysis, processor_instance, runner, notes = prepare(options)
    settings = options.executor_settings()
    samples = select_samples(analysis.samples, options.only, options.limit)
    settings.remote_inputs = any(is_remote(f) for files in samples.values() for f in files)
    if settings.remote_inputs:  # before any worker starts, planning's included
        export_proxy(options.voms)
    announce = options.announce or (lambda line: None)
    cache = metadata_cache(options)
    collected, killed, n_workers = {}, [], None
    with contextlib.ExitStack() as stack:
        executors = LazyExecutor(settings, announce, stack)
        describe = describe_serially if options.executor == "iterative" else executors.describe_many
        fusion = fusion_for(options, settings, cache)
        plan = make_plan(analysis, runner, options, options.skipbadfiles, describe, fusion, cache)
        if plan.from_cache:
            notes.append(f"entries and branches of {plan.from_cache} input file(s) came from the metadata cache")
        resume = resume_from_dump(analysis, runner, plan, options)
        pending, resumed = [*plan.tasks, *resume.pending], resume.done
        if pending:  # all complete from an earlier run: no workers to start
            # a FileTask may hand back chunks for every worker
            executor = executors.get(max(len(pending), fusion.workers) if plan.tasks else len(pending))
            notes += resume.start(runner, options.overwrite)
            if _plot_wanted(options) and options.executor != "iterative":
                # chunks run in other processes, so the main one can get matplotlib ready meanwhile
                from coffea_dispatch.report import prefetch_plotting

                prefetch_plotting()
            collected, killed = _execute(executor, pending, runner, options.skipbadfiles)
            n_workers = getattr(executor, "n_workers", None)
        else:
            notes += resume.start(runner, options.overwrite)
    plan.add_described(collected.pop(DESCRIBED_KEY, {}), collected.pop(BAD_INPUTS_KEY, {}), cache)
    if not options.skipbadfiles:
        _refuse_first_bad_input(plan, samples)
    if resumed:
        collected = accumulate([collected, *resumed])
    _raise_first_failure(collected)
    if not options.skipbadfiles:
        _fail_on_unreadable(collected.get(BAD_FILES_KEY, {}))
    _fail_on_overwritten_outputs(collected.get(WRITTEN_KEY, {}))
    output = processor_instance.postprocess(collected.get(OUTPUT_KEY, {}))
    run = RunResult(
        analysis,
        options.executor,
        n_workers or worker_count(options.executor, settings.workers, len(plan.items) + len(plan.tasks)),
        output,
        _summaries(plan, collected, output),
        wall_seconds=0.0,
        notes=notes,
    )
    run.retries = len(killed)
    run.resumed_chunks = len(resumed)
    run.failed_chunks = [_diagnose(error, runner, analysis, options) for error in killed]
    _save_and_plot(run, options)
    run.wall_seconds = time.perf_counter() - started
    return run


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


def collect_batch(
    options: RunOptions,
    submission,
    *,
    retries: int,
    poll_seconds: float = 10.0,
    on_progress: Callable[[int, int, int], None] | None = None,
) -> RunResult:
    """`--wait` for a batch submission: block until its jobs end (resubmitting failures up to `retries` times),
    merge the outputs per sample, and summarise like any other executor, accumulators summed over the jobs."""
    from coffea_dispatch.batch.executor import JobsFailed, job_accumulators, wait_for_jobs
    from coffea_dispatch.batch.job import read_record
    from coffea_dispatch.batch.merge import merge

    started = time.perf_counter()
    outcome = wait_for_jobs(submission, retries=retries, poll_seconds=poll_seconds, on_progress=on_progress)
    if outcome.failed:
        raise JobsFailed(outcome)
    submission = outcome.submission
    output = accumulate(job_accumulators(submission)) or {}
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
        summary.candidates = _candidates(output, sample)
    notes = [f"{len(submission.jobs)} batch job(s) in {submission.folder}"]
    if outcome.resubmissions:
        notes.append(f"failed jobs were resubmitted {outcome.resubmissions} time(s)")
    if options.dump:
        notes += [f"merged {m.sample}: {m.rows:,} rows -> {m.path}" for m in merge(submission.folder)]
    run = RunResult(
        load_analysis(options.json_analysis, options.redirector),
        submission.executor,
        len(submission.jobs),
        output,
        summaries,
        wall_seconds=0.0,
        notes=notes,
    )
    _save_and_plot(run, options)
    run.wall_seconds = time.perf_counter() - started
    return run
