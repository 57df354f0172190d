"""Job arrays of coffea work items: what the job-array executor hands coffea's Runner, in the seed's layout.

A Runner call gives an executor work items (chunks) and one function (a `functools.partial` carrying the
compressed, cloudpickled processor). Its submission is planned and written by the same code as a command-line
one (`batch.submission.plan_jobs`; `ItemJobs` here says what its jobs run), so `status`, `resubmit`, `cancel`
and `merge` work on it: `input/function.pkl` holds the function once; per job, `input/<sample>-<i>.json`
lists its chunks file by file (one entry per file, as a sample JSON lists files, so a job split after a
memory failure splits by file) and `input/AN-<sample>-<i>.json` names both; the job runs
`python -m coffea_dispatch.batch.items <AN json> <record>` and saves its accumulator beside its record, as a
command-line job does. The manifest keeps a digest of the items and the function with the processor's
configuration (`work_digest`): calling again with the same folder, from this process or a new one, collects
what finished and runs only what did not, and refuses other work.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cloudpickle
import lz4.frame
from coffea.processor import accumulate
from coffea.processor.executor import WorkItem

from coffea_dispatch.batch.job import recording
from coffea_dispatch.batch.submission import READABLE, Submission, Work, accumulator_path
from coffea_dispatch.errors import DispatchError
from coffea_dispatch.identity import identity_of
from coffea_dispatch.inputs.analysis import check_sample_name
from coffea_dispatch.inputs.files import open_tree
from coffea_dispatch.inputs.metadata_cache import chunk_name
from coffea_dispatch.inputs.weights import chunk_count, input_totals
from coffea_dispatch.output import save_accumulator
from coffea_dispatch.signals import stopping_signals_interrupt

FUNCTION_FILE = "function.pkl"
MODULE = "coffea_dispatch.batch.items"


def item_record(item: WorkItem) -> dict[str, Any]:
    """A work item as JSON: the UUID as hex, coffea 2026's `preload` (a frozenset of branches) sorted, the rest
    as it is (usermeta must be JSON, as a sample JSON is)."""
    record = {f.name: getattr(item, f.name) for f in dataclasses.fields(item)}
    record["fileuuid"] = bytes(item.fileuuid).hex()
    if isinstance(record.get("preload"), (set, frozenset)):
        record["preload"] = sorted(record["preload"])
    return record


def item_from(record: dict[str, Any]) -> WorkItem:
    known = {f.name for f in dataclasses.fields(WorkItem)}
    values = {k: v for k, v in record.items() if k in known}
    if isinstance(values.get("preload"), list):
        values["preload"] = frozenset(values["preload"])
    return WorkItem(**{**values, "fileuuid": bytes.fromhex(record["fileuuid"])})


def by_file(items: Sequence[WorkItem]) -> dict[str, dict[str, list[WorkItem]]]:
    """sample -> file -> its chunks, in the order coffea gave them."""
    grouped: dict[str, dict[str, list[WorkItem]]] = {}
    for item in items:
        grouped.setdefault(item.dataset, {}).setdefault(item.filename, []).append(item)
    return grouped


@dataclass(frozen=True)
class WorkDigest:
    value: str
    unverifiable: str | None = None  # why the processor's state could not be digested


def work_digest(function: Callable, items: Sequence[WorkItem]) -> WorkDigest:
    """What a submission computes, the same in every process for the same configuration: the function with
    the processor's state (`identity.state_digest`, not pickled bytes, which differ between processes for a
    processor of `__main__`), and every item, in order. A processor whose state cannot be digested gets a
    digest of its own that nothing matches: its folder is never taken for this work (`existing_submission`)."""
    identity = identity_of(_comparable(function))
    digest = hashlib.sha256(identity.digest.encode())
    for item in items:
        digest.update(json.dumps(item_record(item), sort_keys=True, default=str).encode())
    return WorkDigest(digest.hexdigest(), identity.unverifiable)


def _comparable(function: Any) -> Any:
    """The Runner's function (nested partials) with the processor it carries as compressed cloudpickle bytes
    (coffea's `processor_compression`) unpacked into the object, whose state is then compared."""
    if not isinstance(function, functools.partial):
        return function
    keywords = {
        k: _processor_of(v) if k == "processor_instance" else _comparable(v) for k, v in function.keywords.items()
    }
    return functools.partial(_comparable(function.func), *map(_comparable, function.args), **keywords)


def _processor_of(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return cloudpickle.loads(lz4.frame.decompress(value))
    return value


def pickled(function: Callable) -> bytes:
    """The function by value where it must be (a processor class of a notebook or of __main__)."""
    return cloudpickle.dumps(function)


@dataclass(frozen=True)
class ItemJobs:
    """`batch.submission.JobSpec` for a Runner call's work items and function: `input/function.pkl` once, and
    each job runs `python -m coffea_dispatch.batch.items <AN json> <record>`."""

    function_bytes: bytes
    digest: str
    name: str = "runner"
    dump = None  # a Runner's jobs write no dump: their accumulators are what they return
    inputs_digest = None  # the digest says it all
    arguments: tuple[str, ...] = ()

    def work(self, items: Sequence[WorkItem]) -> Work:
        """Per sample, each file with its chunks (a job split after a memory failure splits by file)."""
        return {
            sample: {f: {"file": f, "chunks": [item_record(i) for i in chunks]} for f, chunks in files.items()}
            for sample, files in by_file(items).items()
        }

    def write_shared(self, submission: Submission) -> None:
        function_path = submission.input_folder / FUNCTION_FILE
        function_path.write_bytes(self.function_bytes)
        function_path.chmod(READABLE)

    def analysis_text(self, sample_json_name: str) -> str:
        return json.dumps({"function": FUNCTION_FILE, "samplejson": sample_json_name}) + "\n"

    def command(self, analysis_json: str, record: str) -> list[str]:
        return [sys.executable, "-m", MODULE, analysis_json, record]


def item_jobs(items: Sequence[WorkItem], function: Callable, name: str, digest: WorkDigest) -> ItemJobs:
    """The spec of these items' jobs; every sample name is checked first (it names a job's files)."""
    for sample in by_file(items):
        check_sample_name(sample, "the fileset")
    return ItemJobs(pickled(function), digest.value, name)


def existing_submission(folder: Path, digest: WorkDigest) -> Submission:
    """The submission an earlier call wrote in `folder`: it must be of the same items and the same processor
    configuration (`work_digest`), or its finished jobs would be summed with another run's."""
    submission = Submission.load(folder)
    if submission.digest != digest.value:
        why = "another fileset, chunking or processor configuration"
        if digest.unverifiable:
            why = f"perhaps; the processor cannot be compared with the call that made it: {digest.unverifiable}"
        raise DispatchError(f"{folder}: holds a submission of other work ({why}): give a new folder, or remove it")
    return submission


# --- what a job runs ------------------------------------------------------------------------------------------


def job_items(analysis_json: Path) -> tuple[Path, list[WorkItem]]:
    """The function file and the chunks of one job."""
    spec = json.loads(analysis_json.read_text())
    content = json.loads((analysis_json.parent / spec["samplejson"]).read_text())
    items = [item_from(chunk) for entries in content.values() for entry in entries for chunk in entry["chunks"]]
    return analysis_json.parent / spec["function"], items


def load_function(path: Path) -> Callable:
    """Unpickled here, in the job's environment: a module the processor needs that is not installed here is
    named, with what to do."""
    try:
        return cloudpickle.loads(path.read_bytes())
    except ModuleNotFoundError as missing:
        raise _missing_module(missing) from None


def _missing_module(missing: ModuleNotFoundError) -> DispatchError:
    error = DispatchError(
        f"the processor needs the module '{missing.name}', which the jobs' Python ({sys.executable}) cannot "
        f"import: install it there (or put its folder on PYTHONPATH), or define the processor in the notebook "
        "or script itself so that it travels with the job"
    )
    error.exit_code = 1  # a rerun cannot fix it
    return error


def run_job(analysis_json: Path, record_path: Path) -> Any:
    """Run one job's chunks through the function and save the sum beside its record (atomically), with what
    it read of each file (`check` and `status` count a Runner's job array as they count any other)."""
    with recording(record_path) as record:
        function_path, items = job_items(analysis_json)
        function = load_function(function_path)
        accumulator, done = None, []
        for item in items:
            try:
                result = function(item)
            except ModuleNotFoundError as missing:  # coffea unpickles the processor inside the function
                raise _missing_module(missing) from None
            if result is not None:  # None: coffea's skipbadfiles gave the chunk up
                accumulator = accumulate([result], accumulator)
                done.append(item)
        record.completeness = items_read(items, done)
        record.chunks = len(done)
        record.events = sum(item.entrystop - item.entrystart for item in done)
        save_accumulator(accumulator, accumulator_path(record_path))
        record.exit_code = 0
    return accumulator


def items_read(items: Sequence[WorkItem], done: Sequence[WorkItem]) -> dict[str, Any]:
    """What the job read, in the form of the dump's completeness (`dump.completeness.Completeness.to_json`):
    per file its entries, weights.input_totals and the weights.chunk_count of each chunk `done` (a chunk
    coffea's skipbadfiles gave up is not read), from the file opened once more here (coffea's function
    opened it for each chunk). A file that cannot be opened again says so, its chunks counted by entries."""
    read = {(i.filename, i.entrystart, i.entrystop) for i in done}
    samples: dict[str, Any] = {}
    for sample, files in by_file(items).items():
        inputs = samples.setdefault(sample, {"inputs": {}})["inputs"]
        for filename, chunks in files.items():
            ours = [i for i in chunks if (i.filename, i.entrystart, i.entrystop) in read]
            inputs[filename] = _file_read(filename, chunks[0], ours)
            if len(ours) < len(chunks):
                inputs[filename]["problem"] = "failed: skipped as bad by coffea (skipbadfiles)"
    return {"format": 1, "samples": samples}


def _file_read(filename: str, first: WorkItem, done: list[WorkItem]) -> dict[str, Any]:
    entry = {"entries": None, "totals": {}, "read": {}, "problem": "", "uuid": bytes(first.fileuuid).hex()}
    if not done:
        return entry
    try:
        tree = open_tree(filename, first.treename)
        counts = [chunk_count(filename, tree, i.entrystart, i.entrystop) for i in done]
        entry.update(entries=int(tree.num_entries), totals=input_totals(filename, tree))
    except Exception as error:  # read by the chunks, not now: entries unknown, what was read still counted
        counts = [(i.entrystop - i.entrystart, None, None) for i in done]
        entry["problem"] = f"failed: read by the job, then not opened again ({type(error).__name__})"
    entry["read"] = {chunk_name(i.entrystart, i.entrystop): list(c) for i, c in zip(done, counts, strict=True)}
    return entry


def main(argv: Sequence[str]) -> int:
    """`python -m coffea_dispatch.batch.items <AN json> <record>`: one line for our errors, the traceback for
    the processor's."""
    analysis_json, record_path = (Path(a) for a in argv)
    try:
        with stopping_signals_interrupt():
            run_job(analysis_json, record_path)
    except DispatchError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("error: stopped by a signal", file=sys.stderr)
        return 143
    except Exception:
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
