"""Job arrays of coffea work items: what the job-array executor hands coffea's Runner, in the seed's layout.

A Runner call gives an executor work items (chunks) and one function (a `functools.partial` carrying the
compressed, cloudpickled processor). Its submission is the same folder as a command-line one, `input/` and
`jobs/`, so `status`, `resubmit`, `cancel` and `merge` work on it: `input/function.pkl` holds the function
once; per job, `input/<sample>-<i>.json` lists its chunks file by file (one entry per file, as a sample JSON
lists files, so a job split after a memory failure splits by file) and `input/AN-<sample>-<i>.json` names
both; the job runs `python -m coffea_dispatch.batch.items <AN json> <record>` and saves its accumulator beside
its record, as a command-line job does. The manifest keeps a digest of the items and the function: calling
again with the same folder collects what finished and runs only what did not, and refuses other work.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cloudpickle
from coffea.processor import accumulate
from coffea.processor.executor import WorkItem

from coffea_dispatch.batch.job import recording
from coffea_dispatch.batch.submission import (
    READABLE,
    Job,
    JobRequests,
    Submission,
    accumulator_path,
    group_files,
    new_submission_folder,
    not_writable_by_others,
    start_submission,
    write_job_file,
)
from coffea_dispatch.errors import DispatchError
from coffea_dispatch.inputs.analysis import check_sample_name
from coffea_dispatch.output import save_accumulator
from coffea_dispatch.signals import stopping_signals_interrupt

FUNCTION_FILE = "function.pkl"
MODULE = "coffea_dispatch.batch.items"


def item_record(item: WorkItem) -> dict[str, Any]:
    """A work item as JSON: the UUID as hex, the rest as it is (usermeta must be JSON, as a sample JSON is)."""
    record = {f.name: getattr(item, f.name) for f in dataclasses.fields(item)}
    record["fileuuid"] = bytes(item.fileuuid).hex()
    return record


def item_from(record: dict[str, Any]) -> WorkItem:
    known = {f.name for f in dataclasses.fields(WorkItem)}
    values = {k: v for k, v in record.items() if k in known}
    return WorkItem(**{**values, "fileuuid": bytes.fromhex(record["fileuuid"])})


def by_file(items: Sequence[WorkItem]) -> dict[str, dict[str, list[WorkItem]]]:
    """sample -> file -> its chunks, in the order coffea gave them."""
    grouped: dict[str, dict[str, list[WorkItem]]] = {}
    for item in items:
        grouped.setdefault(item.dataset, {}).setdefault(item.filename, []).append(item)
    return grouped


def work_digest(function_bytes: bytes, items: Sequence[WorkItem]) -> str:
    """What a submission computes: the function (processor included) and every item, in order."""
    digest = hashlib.sha256(function_bytes)
    for item in items:
        digest.update(json.dumps(item_record(item), sort_keys=True, default=str).encode())
    return digest.hexdigest()


def pickled(function: Callable) -> bytes:
    """The function by value where it must be (a processor class of a notebook or of __main__)."""
    return cloudpickle.dumps(function)


def plan_items_submission(
    items: Sequence[WorkItem],
    function_bytes: bytes,
    *,
    folder: Path | None,
    root: Path,
    name: str,
    executor: str,
    files_per_job: int = 1,
    requests: JobRequests | None = None,
) -> Submission:
    """Write the submission folder of these work items (no batch system is contacted here): `folder` exactly
    when given (it must not exist yet, or be empty), else a new `<root>/<name>_YYYYMMDD_HHMMSS`."""
    if files_per_job < 1:
        raise DispatchError(f"files_per_job must be at least 1, got {files_per_job}")
    grouped = by_file(items)
    for sample in grouped:
        check_sample_name(sample, "the fileset")  # names a job's files
    folder = _new_folder(folder) if folder is not None else new_submission_folder(root, name)
    digest = work_digest(function_bytes, items)
    submission = start_submission(folder, name, executor, requests or JobRequests(), digest=digest)
    function_path = submission.input_folder / FUNCTION_FILE
    function_path.write_bytes(function_bytes)
    function_path.chmod(READABLE)
    for sample, files in grouped.items():
        for index, group in enumerate(group_files(list(files), files_per_job)):
            submission.jobs.append(_write_job(submission, sample, index, {f: files[f] for f in group}))
    submission.save()
    return submission


def _new_folder(folder: Path) -> Path:
    if folder.exists() and any(folder.iterdir()):
        raise DispatchError(f"{folder}: exists and is not a submission folder (no submission.json): give a new folder")
    folder.mkdir(parents=True, exist_ok=True)
    not_writable_by_others(folder)
    return folder


def _write_job(submission: Submission, sample: str, index: int, files: dict[str, list[WorkItem]]) -> Job:
    name = f"{sample}-{index}"
    inputs = submission.input_folder
    sample_json, analysis_json = inputs / f"{name}.json", inputs / f"AN-{name}.json"
    record = submission.jobs_folder / f"{name}.result.json"
    entries = [{"file": f, "chunks": [item_record(i) for i in chunks]} for f, chunks in files.items()]
    write_job_file(sample_json, json.dumps({sample: entries}) + "\n")
    write_job_file(analysis_json, json.dumps({"function": FUNCTION_FILE, "samplejson": sample_json.name}) + "\n")
    command = [sys.executable, "-m", MODULE, str(analysis_json), str(record)]
    return Job(sample, index, list(files), str(sample_json), str(analysis_json), command, str(record))


def existing_submission(folder: Path, function_bytes: bytes, items: Sequence[WorkItem]) -> Submission:
    """The submission an earlier call wrote in `folder`: it must be of the same items and function, or its
    finished jobs would be summed with another run's."""
    submission = Submission.load(folder)
    if submission.digest != work_digest(function_bytes, items):
        raise DispatchError(
            f"{folder}: holds a submission of other work (another fileset, chunking or processor): give a new "
            "folder, or remove this one"
        )
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
    """Run one job's chunks through the function and save the sum beside its record (atomically)."""
    with recording(record_path) as record:
        function_path, items = job_items(analysis_json)
        function = load_function(function_path)
        accumulator = None
        for item in items:
            try:
                result = function(item)
            except ModuleNotFoundError as missing:  # coffea unpickles the processor inside the function
                raise _missing_module(missing) from None
            accumulator = accumulate([result], accumulator)
        save_accumulator(accumulator, accumulator_path(record_path))
        record.chunks = len(items)
        record.events = sum(item.entrystop - item.entrystart for item in items)
        record.exit_code = 0
    return accumulator


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
