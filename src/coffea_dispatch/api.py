"""The Python API for notebooks and scripts: `coffea_dispatch.run(...)` and `coffea_dispatch.executor(...)`.

`run` is the command line's run without files or names: a coffea fileset (or an analysis JSON), a processor
instance (or an import path), an executor name or object. It goes through the same pipeline as
`coffea-dispatch run` (planning on the workers, resume and staging with `dump=`, the summary, the plot) and
raises the typed errors whose one-line messages the command line prints.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from coffea.processor import ProcessorABC
from coffea.processor.executor import ExecutorBase

from coffea_dispatch.dump.collect import folder_completeness
from coffea_dispatch.dump.completeness import Completeness
from coffea_dispatch.errors import DispatchError
from coffea_dispatch.executors.for_runner import DispatchExecutor, print_line, runner_executor
from coffea_dispatch.executors.registry import is_job_array, kind_of
from coffea_dispatch.higgsdna.workflows import instantiate_workflow, resolve_workflow
from coffea_dispatch.inputs.analysis import Analysis, check_sample_name
from coffea_dispatch.inputs.metadata_cache import cache_at
from coffea_dispatch.options import RunOptions, SubmitOptions, options_of
from coffea_dispatch.pipeline.prepare import TREE_NAME, Given
from coffea_dispatch.pipeline.result import RunResult
from coffea_dispatch.pipeline.run import run_analysis

executor = runner_executor


def completeness_of(folder: str | os.PathLike, metadata_cache: str | os.PathLike | None = None) -> Completeness:
    """How much of each sample a --dump folder, or a job array's submission folder, holds: files read, partly
    read, skipped, failed and not run, entries and sums of generator weights (`.unprocessed()`: what is
    left, as a sample JSON). `metadata_cache` tells what files not run hold (default: the user's cache)."""
    return folder_completeness(folder, cache_at(metadata_cache))


NOT_KEYWORDS = {"json_analysis", "executor", "physics", "announce", "executor_options"}
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
    Every other keyword is a command-line option under its Python name (`workers`, `skipbadfiles`, ...).
    """
    name, executor_values, object_given = _executor_options(executor)
    declared = {o.dest for o in options_of(kind_of(name).settings)} if object_given is None else set()
    own = declared - RUN_KEYWORDS  # options an executor plugin declares
    unknown = sorted(set(options) - RUN_KEYWORDS - SUBMIT_KEYWORDS - own - {"announce"})
    if unknown:
        raise DispatchError(f"run(): unknown option(s) {', '.join(unknown)} (see help(coffea_dispatch.run))")
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
        dump=str(dump) if dump is not None else None,
        chunk=chunksize,
        announce=options.get("announce", print_line),
        **{**run_values, **executor_values},
    )
    submit = SubmitOptions(**{k: v for k, v in options.items() if k in SUBMIT_KEYWORDS})
    return run_analysis(settings, submit, given)


def _inputs(fileset: dict | str | os.PathLike, processor: ProcessorABC | str | None) -> tuple[Given, str]:
    """The samples and the processor, as the run pipeline takes them; an analysis JSON is read by the run."""
    if isinstance(fileset, (str, os.PathLike)):
        given = Given(processor=_processor(processor) if processor is not None else None)
        return given, str(fileset)
    if processor is None:
        raise DispatchError("run(): give the processor (an instance, or 'module:Class') with a fileset dict")
    instance = _processor(processor)
    samples = samples_of(fileset)
    name = type(instance).__name__
    analysis = Analysis(
        path=Path(f"{name}.json"), samplejson=Path(f"{name}-samples.json"), samples=samples, workflow=name
    )
    return Given(analysis=analysis, processor=instance), str(analysis.path)


def _processor(processor: ProcessorABC | str) -> ProcessorABC:
    if isinstance(processor, ProcessorABC):
        return processor
    if isinstance(processor, str):
        resolved = resolve_workflow(processor)
        return instantiate_workflow(resolved.cls, processor, {})
    raise DispatchError(f"run(): processor must be a coffea ProcessorABC instance or 'module:Class', not {processor!r}")


def samples_of(fileset: dict) -> dict[str, list[str]]:
    """coffea's fileset forms as sample -> files; what this pipeline cannot honour is refused in one line."""
    if not isinstance(fileset, dict) or not fileset:
        raise DispatchError("run(): fileset must be a non-empty dict {dataset: [files]} or an analysis JSON path")
    samples = {}
    for dataset, entry in fileset.items():
        check_sample_name(str(dataset), "fileset")
        files, trees = _files_of(dataset, entry)
        other = sorted({tree for tree in trees if tree not in (None, TREE_NAME)})
        if other:
            raise DispatchError(f"fileset[{dataset!r}]: tree {other[0]!r}: coffea-dispatch reads NanoAOD's {TREE_NAME}")
        samples[str(dataset)] = files
    return samples


def _files_of(dataset: str, entry: Any) -> tuple[list[str], list[str | None]]:
    if isinstance(entry, (list, tuple)):
        return [str(f) for f in entry], []
    if not isinstance(entry, dict) or "files" not in entry:
        raise DispatchError(f"fileset[{dataset!r}]: expected a list of files or {{'files': ...}}")
    if entry.get("metadata"):
        raise DispatchError(
            f"fileset[{dataset!r}]: dataset metadata is not passed to events.metadata by coffea_dispatch.run; "
            "run it with coffea's Runner and executor=coffea_dispatch.executor(...), which passes it"
        )
    files = entry["files"]
    if isinstance(files, dict):
        return [str(f) for f in files], [*files.values(), entry.get("treename")]
    return [str(f) for f in files], [entry.get("treename")]


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
