"""What is left of a run in coffea's preprocessed fileset form, and that form as the work items coffea's Runner takes.

coffea's `dataset_tools.preprocess` writes `{dataset: {"files": {path: {"object_path", "steps", "num_entries",
"uuid"}}, "metadata": {...}}}`, and `apply_to_fileset` reads exactly that: a partly read file's entries still to
read become its steps, so a dask-awkward user (or PocketCoffea) runs what is left without reading any event twice.
The uuid is written as coffea writes it (`str(uuid.UUID)`, with dashes): `preprocess` given our file again keeps
the steps of a file whose uuid it finds unchanged, and recomputes them (the whole file) when it differs.

coffea's `processor.Runner` takes no steps (its fileset's `files` map a path to a tree name; a dict there fails
with `TypeError: unhashable type: 'dict'`), but it takes a list of `WorkItem`s as its fileset: `runner_items`
turns the preprocessed form into them, one per step.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from typing import Any

from coffea.processor.executor import WorkItem

from coffea_dispatch.errors import DispatchError
from coffea_dispatch.inputs.planning import chunk_ranges

TREE = "Events"
FORMATS = ("higgsdna", "coffea")


def steps_of(ranges: Iterable[tuple[int, int]], entries: int, chunksize: int | None) -> list[list[int]]:
    """The entries left as steps: the run's chunks of the whole file (coffea's cut of `entries` at `chunksize`,
    which is how the run's dump is chunked) intersected with the ranges left, so a run of them writes the chunks a
    later run of the whole fileset finds its own and resumes (a range re-cut on its own gives other boundaries:
    10,000 entries at 3,000 are [0,3334],[3334,6668],[6668,10000], and [3334,10000] re-cut is [3334,6667],...,
    which that run removed as another chunking's and redid). One step per range without a chunk size."""
    ranges = [(int(start), int(stop)) for start, stop in ranges if stop > start]
    if not chunksize:
        return [[start, stop] for start, stop in ranges]
    steps = []
    for first, last in chunk_ranges(entries, chunksize):
        steps += [[max(first, start), min(last, stop)] for start, stop in ranges if max(first, start) < min(last, stop)]
    return steps


def coffea_uuid(hex_uuid: str) -> str | None:
    """A ROOT file's UUID (kept as hex) as coffea's preprocess writes it; None when it is not one."""
    try:
        return str(uuid.UUID(hex=hex_uuid))
    except (TypeError, ValueError):
        return None


def file_entry(
    missing: list[tuple[int, int]], entries: int | None, hex_uuid: str, chunksize: int | None, tree: str = TREE
) -> dict:
    """One file's `files` value: its steps, entries and uuid when its size is known; else its tree alone (coffea's
    form before `preprocess`, which counts it)."""
    entry: dict[str, Any] = {"object_path": tree}
    if entries is None:
        return entry
    entry["steps"] = steps_of(missing, entries, chunksize)
    entry["num_entries"] = entries
    known = coffea_uuid(hex_uuid)
    if known is not None:
        entry["uuid"] = known
    return entry


def fileset_text(fileset: dict[str, Any]) -> str:
    """A coffea fileset with one file per line (its steps on its line), as `sample_json_text` writes ours."""
    blocks = []
    for name, spec in fileset.items():
        files = ",\n".join(f"      {json.dumps(path)}: {json.dumps(entry)}" for path, entry in spec["files"].items())
        others = {key: value for key, value in spec.items() if key != "files"}
        rest = "".join(f",\n    {json.dumps(key)}: {json.dumps(value)}" for key, value in others.items())
        blocks.append(f'  {json.dumps(name)}: {{\n    "files": {{\n{files}\n    }}{rest}\n  }}')
    return "{\n" + ",\n".join(blocks) + "\n}\n"


def runner_items(fileset: dict[str, Any]) -> list[WorkItem]:
    """coffea's preprocessed fileset (what `check --unprocessed --format coffea` writes) as coffea `WorkItem`s,
    one per step, for `processor.Runner(...)(items, processor_instance=...)`: the Runner does not read steps.
    A file without steps, entries or uuid is refused in one line (coffea's `preprocess` fills them)."""
    if not isinstance(fileset, dict):
        got = type(fileset).__name__
        raise DispatchError(f"a coffea fileset is a dict {{dataset: {{'files': {{...}}}}}}, got {got}")
    items = []
    for dataset, spec in fileset.items():
        files = spec.get("files") if isinstance(spec, dict) else None
        if not isinstance(files, dict):
            raise DispatchError(f"fileset[{dataset!r}]['files']: expected {{path: {{'object_path', 'steps', ...}}}}")
        metadata = spec.get("metadata") or None
        for path, entry in files.items():
            items += _file_items(dataset, path, entry, metadata)
    return items


def _file_items(dataset: str, path: str, entry: Any, metadata: dict | None) -> list[WorkItem]:
    where = f"fileset[{dataset!r}]['files'][{path!r}]"
    if not isinstance(entry, dict) or not entry.get("steps") or not entry.get("uuid"):
        raise DispatchError(f"{where}: no steps or uuid (run coffea's preprocess on the fileset first)")
    try:
        file_id = uuid.UUID(str(entry["uuid"])).bytes
    except ValueError:
        raise DispatchError(f"{where}: uuid {entry['uuid']!r} is not a UUID") from None
    tree = entry.get("object_path") or TREE
    usermeta = dict(metadata) if metadata else None  # events.metadata, as the Runner passes a dataset's metadata
    return [WorkItem(dataset, path, tree, int(a), int(b), file_id, usermeta) for a, b in entry["steps"]]
