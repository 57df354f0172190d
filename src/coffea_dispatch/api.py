"""The Python API for notebooks and scripts: `coffea_dispatch.run(...)` and `coffea_dispatch.executor(...)`.

`run` is the command line's run without files or names: a coffea fileset (or an analysis JSON), a processor
instance (or an import path), an executor name or object. It goes through the same pipeline as
`coffea-dispatch run` (planning on the workers, resume and staging with `dump=`, the summary, the plot) and
raises the typed errors whose one-line messages the command line prints, naming keywords where the command line
names flags (`keywords.py`). Every option value is checked before anything starts.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy
from coffea.processor import ProcessorABC
from coffea.processor.executor import ExecutorBase

from coffea_dispatch.batch.registry import backends
from coffea_dispatch.dump.collect import folder_completeness
from coffea_dispatch.dump.completeness import Completeness
from coffea_dispatch.errors import DispatchError
from coffea_dispatch.executors.for_runner import DispatchExecutor, print_line, runner_executor
from coffea_dispatch.executors.registry import is_job_array, kind_of, settings_for
from coffea_dispatch.higgsdna.workflows import instantiate_workflow, resolve_workflow
from coffea_dispatch.inputs.analysis import Analysis, check_sample_name
from coffea_dispatch.inputs.filesets import RANGE_HINT, Fileset, dataset_entries, shown
from coffea_dispatch.inputs.metadata_cache import cache_at
from coffea_dispatch.options import Option, RunOptions, SubmitOptions, check_values, options_of
from coffea_dispatch.options.keywords import keywords_named, python_options
from coffea_dispatch.options.values import encodable, refusal
from coffea_dispatch.pipeline.prepare import Given
from coffea_dispatch.pipeline.result import RunResult
from coffea_dispatch.pipeline.run import run_analysis
from coffea_dispatch.signals import interruptible

# the keywords of the API that are no command-line option, checked as the spec's are
API_ONLY = (Option(("status=",), dest="status", action="store_true"), Option(("folder=",), dest="folder", path=True))
FILESET_PATH = Option(("fileset",), dest="fileset", path=True)  # run()'s analysis JSON


def executor(name: str, **options: Any) -> DispatchExecutor:
    """The executor `name` for coffea's `processor.Runner`, with the options its kind reads under their Python
    names (`workers`, `scaleout`, `memory`, `queue`, `files_per_job`, ...), `retries`, `announce` and (job
    arrays) `folder`, with the command line's defaults. Every value is checked here, before anything starts."""
    options = _plain(options)
    with keywords_named(lambda: _api_options(name), options):
        _check_api_values(options)
        return runner_executor(name, **options)


def completeness_of(folder: str | os.PathLike, metadata_cache: str | os.PathLike | None = None) -> Completeness:
    """How much of each sample a --dump folder, or a job array's submission folder, holds: files read, partly
    read, skipped, failed and not run, entries and sums of generator weights (`.unprocessed()`: what is
    left, as a sample JSON). `metadata_cache` tells what files not run hold (default: the user's cache)."""
    return folder_completeness(folder, cache_at(metadata_cache))


NOT_KEYWORDS = {"json_analysis", "executor", "physics", "announce", "executor_options", "chunk"}  # chunk: chunksize=
RUN_KEYWORDS = {f.name for f in dataclasses.fields(RunOptions)} - NOT_KEYWORDS
SUBMIT_KEYWORDS = {f.name for f in dataclasses.fields(SubmitOptions)} - {"backend", "job_record"}


def run(
    fileset: dict | str | os.PathLike,
    processor: ProcessorABC | str | None = None,
    *,
    executor: str | ExecutorBase = "futures",
    dump: str | os.PathLike | None = None,
    chunksize: int = RunOptions.__dataclass_fields__["chunk"].default,
    **options: Any,
) -> RunResult:
    """Run `processor` over `fileset` and return the accumulator with the per-sample summary and bad files.

    `fileset`: `{"ds": ["f.root"]}`, `{"ds": {"files": {"f.root": "Events"}}}` or an analysis JSON path (then
    `processor` may be omitted: the JSON's workflow runs). `processor`: a ProcessorABC instance, or
    "module:Class". `executor`: a name (`futures`, `dask/local`, a batch system's `dask/...`) or an executor
    object (ours from `coffea_dispatch.executor`, or any of coffea's). `dump=`: per-chunk outputs with resume,
    as `--dump`.
    Every other keyword is a command-line option under its Python name (`workers`, `skipbadfiles`, ...). Each
    value is checked before anything starts; refusals name keywords (`chunksize=`), not flags (`--chunk`).
    """
    options, chunksize = _plain(options), _plain({"chunksize": chunksize})["chunksize"]
    given = {**options, "dump": dump, "chunksize": chunksize}
    with keywords_named(lambda: _api_options(executor), given), interruptible():  # an import took Ctrl-C
        return _run(fileset, processor, executor, dump, chunksize, options)


def _plain(options: dict[str, Any]) -> dict[str, Any]:
    """numpy's scalars as Python's (a chunk size computed with numpy is an int64, which the dump's JSON
    records cannot hold)."""
    return {k: v.item() if isinstance(v, numpy.generic) else v for k, v in options.items()}


def _run(
    fileset: dict | str | os.PathLike,
    processor: ProcessorABC | str | None,
    executor: str | ExecutorBase,
    dump: str | os.PathLike | None,
    chunksize: int,
    options: dict[str, Any],
) -> RunResult:
    name, executor_values, object_given = _executor_options(executor)
    declared = {o.dest for o in options_of(kind_of(name).settings)} if object_given is None else set()
    own = declared - RUN_KEYWORDS  # options an executor plugin declares
    unknown = sorted(set(options) - RUN_KEYWORDS - SUBMIT_KEYWORDS - own - {"announce"})
    if unknown:
        raise DispatchError(f"run(): unknown option(s) {', '.join(unknown)} (see help(coffea_dispatch.run))")
    check_values(RunOptions, {**options, "dump": dump, "chunk": chunksize})
    check_values(SubmitOptions, options)
    _check_api_values(options)
    run_values = {k: v for k, v in options.items() if k in RUN_KEYWORDS}
    run_values.setdefault("progress", True)
    run_values["executor_options"] = {k: v for k, v in {**executor_values, **options}.items() if k in own}
    executor_values = {k: v for k, v in executor_values.items() if k in RUN_KEYWORDS}
    given, json_analysis = _inputs(fileset, processor)
    given.executor = object_given
    if given.analysis is not None and object_given is None and is_job_array(name):
        raise DispatchError(
            f"run(): {name} jobs run an analysis JSON's workflow by name; for a fileset and a processor object, "
            f"hand coffea_dispatch.executor({name!r}) to coffea's processor.Runner"
        )
    settings = RunOptions(
        json_analysis=json_analysis,
        executor=name,
        dump=os.fspath(dump) if dump is not None else None,
        chunk=chunksize,
        announce=options.get("announce", print_line),
        **{**run_values, **executor_values},
    )
    settings_for(settings, object_given)  # the executor's own values too (a plugin's, --memory's size), now
    submit = SubmitOptions(**{k: v for k, v in options.items() if k in SUBMIT_KEYWORDS})
    return run_analysis(settings, submit, given)


def _check_api_values(options: dict[str, Any]) -> None:
    """The keywords that are no command-line option: checked as the spec's are, in one line naming them."""
    for spec in API_ONLY:
        refused = refusal(spec, options[spec.dest]) if spec.dest in options else None
        if refused:
            raise DispatchError(refused)
    announce = options.get("announce")
    if announce is not None and not callable(announce):
        raise DispatchError(f"announce= must be a function taking one line of text, got {announce!r}")


def _api_options(chosen: Any) -> Iterator[Option]:
    """Every option a refusal may name by its flag: the run's, job arrays', the batch backends' and the
    executor's own (a plugin's)."""
    name = chosen.name if isinstance(chosen, DispatchExecutor) else chosen
    try:
        own = list(options_of(kind_of(name).settings)) if isinstance(name, str) else []
    except DispatchError:  # an unknown executor: its refusal names no option
        own = []
    return python_options(own, *(backend.options for backend in backends()))


def _inputs(fileset: dict | str | os.PathLike, processor: ProcessorABC | str | None) -> tuple[Given, str]:
    """The samples and the processor, as the run pipeline takes them; an analysis JSON is read by the run."""
    if isinstance(fileset, (str, os.PathLike)):
        refused = refusal(FILESET_PATH, fileset)
        if refused:
            raise DispatchError(refused)
        given = Given(processor=_processor(processor) if processor is not None else None)
        return given, os.fspath(fileset)
    if processor is None:
        raise DispatchError("run(): give the processor (an instance, or 'module:Class') with a fileset dict")
    instance = _processor(processor)
    samples = samples_of(fileset)
    name = type(instance).__name__
    analysis = Analysis.of_fileset(Path(f"{name}.json"), Path(f"{name}-samples.json"), samples, name)
    return Given(analysis=analysis, processor=instance), str(analysis.path)


def _processor(processor: ProcessorABC | str) -> ProcessorABC:
    if isinstance(processor, ProcessorABC):
        return processor
    if isinstance(processor, str):
        resolved = resolve_workflow(processor)
        return instantiate_workflow(resolved.cls, processor, {})
    raise DispatchError(f"run(): processor must be a coffea ProcessorABC instance or 'module:Class', not {processor!r}")


def samples_of(fileset: dict) -> Fileset:
    """coffea's fileset forms (metadata, tree names, preprocessed steps), and what
    `RunResult.completeness.unprocessed()` and `check --unprocessed` write; what this pipeline cannot honour is
    refused in one line naming the dataset."""
    if not isinstance(fileset, dict) or not fileset:
        raise DispatchError("run(): fileset must be a non-empty dict {dataset: [files]} or an analysis JSON path")
    samples = Fileset()
    for dataset, value in fileset.items():
        name = check_sample_name(str(dataset), Path("fileset"))
        place = f"fileset[{dataset!r}]"
        entries, metadata = dataset_entries(value, place, _copies)
        samples.add(name, entries, place)
        if metadata:
            samples.metadata[name] = metadata
    return samples


def _copies(entry: Any, place: str) -> list[str]:
    """A path or a list of replicas of one file (tried in order)."""
    copies = list(entry) if isinstance(entry, (list, tuple)) and entry else [entry]
    paths = [os.fspath(c) if isinstance(c, os.PathLike) else c for c in copies]
    if not all(isinstance(p, str) and p.strip() and encodable(p) for p in paths):
        raise DispatchError(
            f"{place}: invalid file entry {shown(entry)} (expected a path, a list of replicas, or "
            f"{{'file': path, 'entries': {RANGE_HINT}}})"
        )
    return paths


def _executor_options(chosen: str | ExecutorBase) -> tuple[str, dict[str, Any], ExecutorBase | None]:
    """A name; one of our executor objects, whose options the run takes over; or coffea's own, run as it is."""
    if isinstance(chosen, str):
        return chosen, {}, None
    if isinstance(chosen, DispatchExecutor):
        shared = {o.dest: getattr(chosen.settings, o.dest) for o in options_of(type(chosen.settings))}
        shared.pop("executor", None)
        return chosen.name, {**shared, "retries": chosen.retries}, None
    if isinstance(chosen, ExecutorBase):
        return type(chosen).__name__, {}, chosen
    raise DispatchError(f"run(): executor must be a name or an executor object, not {chosen!r}")
