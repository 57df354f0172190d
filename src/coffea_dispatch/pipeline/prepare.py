"""Everything a run sets up before any output is written, so that bad input fails here: the analysis and its
processor (HiggsDNA's workflows get exactly the keyword arguments its run_analysis.py passes), the chunk runner
with its checkpoints in the dump, the metadata cache and the plan.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coffea.nanoevents import BaseSchema, NanoAODSchema

from coffea_dispatch.dump.ledger import file_key, inputs_on_record
from coffea_dispatch.dump.relocate import CannotRelocate, references
from coffea_dispatch.dump.resume import checkpoints_for
from coffea_dispatch.errors import DispatchError
from coffea_dispatch.executors import (
    ExecutorKind,
    check_executor,
    kind_for,
)
from coffea_dispatch.higgsdna import registries as higgsdna
from coffea_dispatch.higgsdna.workflows import DIPHOTON, Workflow, instantiate_workflow, resolve_workflow
from coffea_dispatch.inputs.analysis import Analysis, load_analysis
from coffea_dispatch.inputs.describe import DescribeMany, describe_serially
from coffea_dispatch.inputs.files import configure_xrootd, register_replicas
from coffea_dispatch.inputs.metadata_cache import MetadataCache, cache_at
from coffea_dispatch.inputs.planning import (
    NO_READING,
    Fusion,
    Plan,
    Reading,
    plan_chunks,
    select_samples,
)
from coffea_dispatch.inputs.proxy import find_proxy
from coffea_dispatch.options import PHYSICS_SWITCHES, RunOptions
from coffea_dispatch.pipeline.chunk import (
    ChunkRunner,
)

SCHEMAS = {"nano": NanoAODSchema, "base": BaseSchema}

TREE_NAME = "Events"


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
    notes += kind_for(options.executor, given.executor).prepare_inputs(analysis)
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
        checkpoints=checkpoints_for(analysis, processor_instance, schema, options, given.processor is not None),
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
        readings=readings_of(analysis, samples),
        trees=analysis.trees,
    )


def readings_of(analysis: Analysis, samples: dict[str, list[str]]) -> dict[tuple[str, str], Reading]:
    """Per (sample, input), what the fileset says of how to read it (only inputs of which it says something)."""
    readings = {}
    for sample, filenames in samples.items():
        metadata = analysis.metadata.get(sample, {})
        for filename in filenames:
            reading = Reading(
                tuple(analysis.entry_ranges.get(filename, ())),
                tuple(analysis.steps.get(filename, ())),
                analysis.uuids.get(filename),
                analysis.num_entries.get(filename),
                metadata,
            )
            if reading != NO_READING:
                readings[(sample, filename)] = reading
    return readings


def fusion_for(options: RunOptions, kind: ExecutorKind, settings: Any, cache: MetadataCache) -> Fusion:
    """Inputs the dump holds no record of may be described on the workers while processing goes on; those it
    has records of are described first, so that resume can compare them with what an earlier run read."""
    on_record = inputs_on_record(Path(options.dump)) if options.dump else set()
    folder = str(cache.folder) if cache.folder is not None else None

    def can_fuse(sample: str, filename: str) -> bool:
        return (sample, file_key(filename)) not in on_record

    return Fusion(can_fuse, kind.expected_workers(settings), folder)


def export_proxy(voms: str | None) -> None:
    """Remote inputs: the grid proxy (--voms, else voms-proxy-info -p, ...) goes into X509_USER_PROXY before
    any worker starts, so every process that reads a file (forked pool, Dask workers) finds it. Without one,
    servers that need no authentication still work."""
    proxy = find_proxy(voms)
    if proxy is not None:
        os.environ["X509_USER_PROXY"] = str(proxy)
