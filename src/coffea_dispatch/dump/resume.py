"""Resume with --dump: which chunks an earlier run of this configuration completed (their saved results are
reused), which must run, and what to repair first. The chunk runner only sees the dump's `Ledger` through the
`Checkpoints` interface it is built with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coffea_dispatch.dump.checkpoints import Checkpoints
from coffea_dispatch.dump.ledger import Ledger, fingerprint
from coffea_dispatch.identity import identity_of, qualified_name
from coffea_dispatch.inputs.analysis import Analysis
from coffea_dispatch.inputs.metadata_cache import chunk_name
from coffea_dispatch.inputs.planning import Plan, reading_digest
from coffea_dispatch.options import PHYSICS_SWITCHES, RunOptions
from coffea_dispatch.result_keys import READ_KEY


def configuration(analysis: Analysis, processor_instance, schema: type, options: RunOptions) -> dict[str, Any]:
    """What decides a chunk's output: the processor class and everything it was built with (the analysis
    JSON's settings), and the schema."""
    return {
        "processor": qualified_name(type(processor_instance)),
        "schema": qualified_name(schema),
        **analysis.processor_settings(),
        "physics": {**PHYSICS_SWITCHES, **options.physics},
    }


def checkpoints_for(
    analysis: Analysis, processor_instance, schema: type, options: RunOptions, given: bool = False
) -> Checkpoints:
    """The dump's ledger for this configuration (nothing is read or written yet), or none without --dump.
    A processor the caller built (`given`: `coffea_dispatch.run(fileset, Processor(cut=25))`) is not described
    by the analysis JSON: its state (attributes, what they hold) is part of the configuration."""
    if options.dump is None:
        return Checkpoints()
    config = configuration(analysis, processor_instance, schema, options)
    unverifiable = None
    if given:
        identity = identity_of(processor_instance)  # unverifiable: this run's alone, nothing earlier is reused
        config["state"], unverifiable = identity.digest, identity.unverifiable
    return Ledger(Path(options.dump), fingerprint(config), options.chunk, unverifiable)


@dataclass
class Resume:
    """With --dump: the chunks still to run and the saved results of those an earlier run completed.
    Deciding this only reads the dump; `start` claims it for this configuration, repairs and records, once
    the executor is up."""

    ledger: Ledger | None = None
    chunks_per_file: dict[str, dict[str, list[tuple[int, int]]]] = field(default_factory=dict)
    pending: list = field(default_factory=list)
    done: list[dict[str, Any]] = field(default_factory=list)
    identities: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # input_identities
    totals: dict[str, dict] = field(default_factory=dict)  # per file: weights.input_totals, kept in its plan
    ranges: dict[str, set[tuple[int, int]]] = field(default_factory=dict)  # per file: this chunking's ranges
    changed_inputs: list[tuple[str, str]] = field(default_factory=list)
    stray: list[Path] = field(default_factory=list)  # records of another chunking of these inputs
    damaged: list = field(default_factory=list)  # chunks with a record that failed verification: redone
    notes: list[str] = field(default_factory=list)

    def start(self, overwrite: bool) -> list[str]:
        """Forget the earlier run (--overwrite), the chunks of replaced inputs and of another chunking, and
        damaged chunks about to be redone; record this run's chunks. Notes for the user."""
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
        self.ledger.record_plan(self.chunks_per_file, self.identities, self.ranges, self.totals)
        return notes


def resume_from_dump(checkpoints: Checkpoints, plan: Plan, options: RunOptions) -> Resume:
    """What of `plan` an earlier run completed, read from the dump's ledger (everything is pending without one)."""
    if not isinstance(checkpoints, Ledger):
        return Resume(pending=list(plan.items))
    ledger = checkpoints
    resume = Resume(ledger, identities=input_identities(plan), totals=plan.totals)
    for item in plan.items:
        resume.chunks_per_file.setdefault(item.dataset, {}).setdefault(item.filename, []).append(
            (item.entrystart, item.entrystop)
        )
    resume.ranges = {f: plan.chunking(f, options.chunk) for f in plan.entries}
    resume.notes = ledger.open_folder(plan.files)
    if options.overwrite:
        resume.pending = list(plan.items)
        return resume
    if ledger.configuration() is None:  # a new dump, or one of an older version: its plan files decide
        ledger.check_plan(resume.chunks_per_file)
    ledger.check_configuration()
    resume.changed_inputs = ledger.changed_inputs(resume.identities, resume.chunks_per_file)
    resume.stray = ledger.stray_chunks(resume.chunks_per_file, resume.ranges)
    redo = set(resume.changed_inputs)
    for item in plan.items:
        result = None if (item.dataset, item.filename) in redo else ledger.completed(item)
        if result is None:
            resume.pending.append(item)
            if ledger.marker(item).exists():
                resume.damaged.append(item)
        else:
            resume.done.append(_with_read_count(result, item))
    return resume


def input_identities(plan: Plan) -> dict[tuple[str, str], dict[str, Any]]:
    """Per (sample, input): what tells it apart from the input an earlier run read there, the tree and dataset
    metadata it is read with included (`planning.reading_digest`): a dump resumed with another xsec clears and
    redoes every chunk of those inputs, also those this run does not plan (--max), so check never counts a
    mixture of two cross-sections as complete."""
    identities = {}
    for sample, filenames in plan.files.items():
        for filename in filenames:
            if filename in plan.identities:
                identities[(sample, filename)] = plan.identities[filename]
    for item in plan.items:
        digest = reading_digest(item)
        if digest is not None and (item.dataset, item.filename) in identities:
            identities[(item.dataset, item.filename)] = {**identities[(item.dataset, item.filename)], "reading": digest}
    return identities


def _with_read_count(result: dict[str, Any], item) -> dict[str, Any]:
    """A chunk recorded by an older version does not say what it read: its entries, weights unknown."""
    stats = (result.get("stats") or {}).get(item.dataset)
    if isinstance(stats, dict) and READ_KEY not in stats:
        name = chunk_name(item.entrystart, item.entrystop)
        stats[READ_KEY] = {item.filename: {name: (item.entrystop - item.entrystart, None, None)}}
    return result
