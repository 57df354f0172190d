"""`coffea-dispatch merge <submission folder or dump>`: one parquet per sample, normalisation summed; for the
jobs of a coffea Runner (batch/items.py), their accumulators summed into `<folder>/accumulator.coffea`.

Writes `<dump>/merged/<sample>/nominal/merged.parquet` (atomically) whose `sum_genw_presel` is the sum over its
inputs. It reads the chunk files in a stable order, aligns columns by name (a file written with another
column order still merges), refuses a submission whose jobs are not all done unless allowed, and never
deletes or changes its inputs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from coffea.processor import accumulate
from coffea.util import load

from coffea_dispatch.batch.job import read_record
from coffea_dispatch.batch.status import submission_status
from coffea_dispatch.batch.submission import MANIFEST, Submission, accumulator_path
from coffea_dispatch.dump.completeness import Completeness, from_run, known_from_cache
from coffea_dispatch.dump.completeness_file import from_dump, record_completeness
from coffea_dispatch.dump.ledger import Ledger
from coffea_dispatch.errors import DispatchError
from coffea_dispatch.inputs.metadata_cache import MetadataCache
from coffea_dispatch.output import (
    MERGED_FOLDER,
    SYSTEMATIC_NOMINAL,
    read_parquet_metadata,
    save_accumulator,
    write_parquet_atomic,
)

MERGED_FILE = "merged.parquet"
SUMMED_FILE = "accumulator.coffea"  # a Runner submission's jobs' accumulators, summed
RUNNER_WRAPPER = {"out", "processed", "metrics", "exception"}  # what coffea's Runner wraps each chunk's output in
RUNNER_READ_KEY = "coffea_dispatch_read"  # what a Runner's chunks read, added by our executors (runner_reading.py)
NORMALISATION_KEY = "sum_genw_presel"


@dataclass
class MergedSample:
    sample: str
    files: int
    rows: int
    sum_genw: float
    path: Path
    accumulator: bool = False  # the sum of a Runner submission's job accumulators, not a sample's parquet


def dump_of(submission: Submission) -> Path:
    """The --dump the submission's jobs write to, from its manifest (an older version's kept it only in the
    jobs' command lines)."""
    if submission.dump is not None:
        return Path(submission.dump)
    dumps = {job.command[job.command.index("--dump") + 1] for job in submission.jobs if "--dump" in job.command}
    if len(dumps) != 1:
        raise DispatchError(f"{submission.folder}: its jobs have no single --dump folder to merge")
    return Path(dumps.pop())


def check_complete(submission: Submission) -> None:
    _, statuses, _ = submission_status(submission.folder)
    failed = sum(s.failed for s in statuses.values())
    unfinished = sum(s.unfinished for s in statuses.values())
    if failed or unfinished:
        raise DispatchError(
            f"{submission.folder}: {failed} job(s) failed and {unfinished} not finished: merging now would lose "
            "events (see coffea-dispatch status; resubmit, or merge anyway with --allow-incomplete)"
        )


def merge_sample(sample_folder: Path, target: Path) -> MergedSample | None:
    inputs = sorted((sample_folder / SYSTEMATIC_NOMINAL).glob("*.parquet"))
    if not inputs:
        return None
    tables, total = [], 0.0
    for path in inputs:
        table = pq.read_table(path)
        tables.append(table.select(tables[0].column_names) if tables else table)
        total += float(read_parquet_metadata(path).get(NORMALISATION_KEY, 0.0))
    merged = pa.concat_tables([t.replace_schema_metadata(None) for t in tables])
    write_parquet_atomic(merged, target, {NORMALISATION_KEY: repr(total), "coffea_dispatch.merged_files": len(inputs)})
    return MergedSample(sample_folder.name, len(inputs), merged.num_rows, total, target)


def merge(folder: str | Path, allow_incomplete: bool = False, record: bool = True) -> list[MergedSample]:
    """`record`: a submission's completeness.json is rewritten from its jobs' records (a run collecting the
    submission records its own, which also knows the files no job was given)."""
    path = Path(folder)
    if (path / MANIFEST).exists():
        submission = Submission.load(path)
        if not allow_incomplete:
            check_complete(submission)
        if submission.digest is not None:
            return [sum_accumulators(submission)]
        dump = dump_of(submission)
        if record and dump.is_dir():  # what the jobs read, kept true beside what is merged
            record_completeness(dump, submission_completeness(submission))
    else:
        dump = path
    if not dump.is_dir():
        raise DispatchError(f"{dump}: no such output folder to merge")
    samples = [
        p for p in sorted(dump.iterdir()) if p.is_dir() and p.name != MERGED_FOLDER and not p.name.startswith(".")
    ]
    merged = [merge_sample(p, dump / MERGED_FOLDER / p.name / SYSTEMATIC_NOMINAL / MERGED_FILE) for p in samples]
    return [m for m in merged if m is not None]


def job_accumulators(submission: Submission) -> list:
    """The accumulators the done jobs saved (`jobs/<sample>-<i>.coffea`), in job order: only those of jobs
    whose record says done (a job that failed after saving, or whose record is lost, is run again)."""
    outputs = []
    for job in submission.jobs:
        path = accumulator_path(job.record)
        record = read_record(job.record)
        if os.path.exists(path) and record is not None and record.status == "done":
            outputs.append(load(path))
    return outputs


def summed_accumulators(submission: Submission, accumulator: Any = None) -> Any:
    """The done jobs' accumulators added to `accumulator` (which is returned as it is when there are none)."""
    accumulators = job_accumulators(submission)
    return accumulate(accumulators, accumulator) if accumulators else accumulator


def sum_accumulators(submission: Submission) -> MergedSample:
    """A Runner submission's result without the Runner: the processor's accumulator (coffea's wrapper around it,
    `{"out": ..., "processed": ...}`, taken off), before its postprocess."""
    target = submission.folder / SUMMED_FILE
    accumulators = job_accumulators(submission)
    summed = accumulate(accumulators) if accumulators else None
    if isinstance(summed, dict):
        summed.pop(RUNNER_READ_KEY, None)  # ours, not the processor's
    if isinstance(summed, dict) and "out" in summed and set(summed) <= RUNNER_WRAPPER:
        summed = summed["out"]
    save_accumulator(summed, target)
    return MergedSample(submission.analysis, len(accumulators), 0, 0.0, target, accumulator=True)


def submission_completeness(
    submission: Submission, listing: dict[str, list[str]] | None = None, cache: MetadataCache | None = None
) -> Completeness:
    """What the jobs read, from their records: a done job says what it read of each of its files; the files
    of a failed job count as failed, those of a job without a record as not run. `listing` adds the files
    the submission was given but no job has (--limit); `cache` what is known of files not read."""
    files = {**(listing or {})}
    for job in submission.jobs:
        files[job.sample] = list(dict.fromkeys([*files.get(job.sample, []), *job.files]))
    problems: dict[str, dict[str, str]] = {}
    done = []
    for job in submission.jobs:
        record = read_record(job.record)
        if record is not None and record.status == "done":
            done.append(Completeness.from_json(record.completeness))
        elif record is not None:
            why = f"failed: job {job.name} failed (exit code {record.exit_code})"
            problems.setdefault(job.sample, {}).update(dict.fromkeys(job.files, why))
    read = {f for reading in done for sample in reading.values() for f in sample.files}  # they say what they hold
    unread = [f for names in files.values() for f in names if f not in read]
    known = known_from_cache(unread, cache, "Events") if cache is not None else {}
    found = from_run(files, {}, known, problems)
    for reading in done:
        found = reading.merged_into(found, {})
    return found


def folder_completeness(folder: str | Path, cache: MetadataCache | None = None) -> Completeness:
    """A submission folder's completeness (from its jobs' records) or a --dump's (from its records)."""
    path = Path(folder)
    if (path / MANIFEST).exists():
        return submission_completeness(Submission.load(path), cache=cache)
    return from_dump(path, cache)


def folder_chunk_size(folder: str | Path) -> int | None:
    """The chunk size a dump was made with, or a submission's jobs run with (`--chunk` among their options, else
    their dump's): what is left is cut as the run cut; None when not known (a Runner's job array)."""
    path = Path(folder)
    if (path / MANIFEST).exists():
        submission = Submission.load(path)
        arguments = submission.arguments or []
        if "--chunk" in arguments[:-1]:
            value = arguments[arguments.index("--chunk") + 1]
            return int(value) if value.isdigit() else None
        path = Path(submission.dump) if submission.dump else None
    configuration = Ledger(path, "").configuration() if path is not None and path.is_dir() else None
    chunk = (configuration or {}).get("chunk")
    return chunk if type(chunk) is int else None
