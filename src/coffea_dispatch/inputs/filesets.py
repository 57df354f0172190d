"""Every fileset form a coffea user has, read into one description of the inputs.

coffea's Runner takes `{ds: [files]}`, `{ds: {"files": [...] | {file: treename}, "treename": ..., "metadata":
{...}}}`; coffea's `dataset_tools.preprocess` writes `{ds: {"files": {file: {"object_path", "steps", "uuid",
"num_entries"}}, "metadata": ..., "form": ...}}`; HiggsDNA's sample JSON is `{ds: [files]}`, and ours adds a file's
replicas (a list) and the entries to read of it (`{"file": ..., "entries": [[start, stop], ...]}`). A notebook's
fileset and a sample JSON are the same thing written down, so both are read here, and what cannot be honoured is
refused in one line naming the dataset, never run half-understood.
"""

from __future__ import annotations

import json
import reprlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy

from coffea_dispatch.errors import DispatchError

DEFAULT_TREE = "Events"
RANGE_HINT = "[[start, stop], ...] with 0 <= start < stop, not overlapping"
DATASET_KEYS = ("files", "metadata", "treename", "form", "preload")  # form, preload: coffea's, not needed here
FILE_KEYS = {"file", "entries", "treename", "steps", "uuid", "num_entries"}  # a file entry of ours (job arrays')
PREPROCESSED_KEYS = {"object_path", "steps", "uuid", "num_entries"}
# the events.metadata names coffea's Runner sets itself and refuses in a fileset's metadata (its _PROTECTED_NAMES,
# both generations: 0.7 lacks "preload"); written out because importing coffea.processor costs a command 0.2 s
RESERVED_METADATA = frozenset(
    {"dataset", "filename", "treename", "metadata", "entrystart", "entrystop", "fileuuid", "numentries", "uuid"}
    | {"clusters", "preload"}
)


@dataclass
class FileEntry:
    """One file as a fileset gives it: its replicas (the first names it), and what it says of how to read it."""

    copies: list[str]
    ranges: list[tuple[int, int]] = field(default_factory=list)  # only these entries (check --unprocessed)
    tree: str = DEFAULT_TREE
    steps: list[tuple[int, int]] = field(default_factory=list)  # coffea's preprocessed chunks: run as they are
    uuid: str | None = None  # the ROOT UUID preprocessing saw: the file read must be that one
    num_entries: int | None = None


@dataclass
class Fileset:
    """The inputs of a run: each dataset's files (a file known by its first replica), and per file and dataset
    what the fileset says beyond the names. Only files that say something appear in the per-file maps."""

    files: dict[str, list[str]] = field(default_factory=dict)
    replicas: dict[str, list[str]] = field(default_factory=dict)
    entry_ranges: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)  # dataset -> events.metadata additions
    trees: dict[str, str] = field(default_factory=dict)  # file -> its tree, where not Events
    steps: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    uuids: dict[str, str] = field(default_factory=dict)
    num_entries: dict[str, int] = field(default_factory=dict)

    def add(self, dataset: str, entries: list[FileEntry], place: str) -> None:
        names = [entry.copies[0] for entry in entries]
        twice = sorted(f for f, n in Counter(names).items() if n > 1)
        if twice:
            raise DispatchError(f"{place}: lists {twice[0]} more than once (events would be doubled)")
        self.files[dataset] = names
        for entry in entries:
            self._add_file(entry)

    def _add_file(self, entry: FileEntry) -> None:
        name = entry.copies[0]
        if len(entry.copies) > 1:
            self.replicas[name] = entry.copies
        for kept, value in (
            (self.entry_ranges, entry.ranges),
            (self.steps, entry.steps),
            (self.uuids, entry.uuid),
            (self.num_entries, entry.num_entries),
        ):
            if value:
                kept[name] = value
        if entry.tree != DEFAULT_TREE:
            self.trees[name] = entry.tree


def entry_json(inputs: Any, filename: str) -> str | list[str] | dict:
    """A file as a sample JSON lists it (a job's): its replicas, and how to read it, travel with it. `inputs`:
    a Fileset, or an Analysis, which keeps the same per-file maps."""
    copies = inputs.replicas.get(filename, filename)
    extra = {
        "entries": [list(r) for r in inputs.entry_ranges.get(filename, [])],
        "treename": inputs.trees.get(filename),
        "steps": [list(s) for s in inputs.steps.get(filename, [])],
        "uuid": inputs.uuids.get(filename),
        "num_entries": inputs.num_entries.get(filename),
    }
    extra = {k: v for k, v in extra.items() if v is not None and v != []}
    return {"file": copies, **extra} if extra else copies


Copies = Callable[[Any, str], list[str]]  # (a file entry's name or replica list, place) -> its replicas, checked


def dataset_entries(value: Any, place: str, copies: Copies) -> tuple[list[FileEntry], dict[str, Any]]:
    """A dataset's files and metadata: a list of files, or coffea's `{"files": [...] | {file: tree | {...}},
    "treename": ..., "metadata": {...}}` (a string is no list: it was read a character at a time)."""
    if isinstance(value, (list, tuple)):
        entries = [file_entry(entry, DEFAULT_TREE, place, copies) for entry in value]
        metadata: dict[str, Any] = {}
    elif isinstance(value, dict) and "files" in value:
        unknown = sorted(str(k) for k in value if k not in DATASET_KEYS)
        if unknown:
            raise DispatchError(f"{place}: unknown key {unknown[0]!r} (a dataset has {', '.join(DATASET_KEYS)})")
        tree = _tree_name(value.get("treename", DEFAULT_TREE), f"{place}['treename']")
        entries = _files_of(value["files"], tree, f"{place}['files']", copies)
        metadata = dataset_metadata(value.get("metadata"), f"{place}['metadata']")
    else:
        expected = "expected a list of files or {'files': [...]}"
        raise DispatchError(f"{place}: {expected}, got {shown(value)}")
    if not entries:
        raise DispatchError(f"{place}: no file (a sample must be a non-empty list of files)")
    return entries, metadata


def _files_of(files: Any, tree: str, place: str, copies: Copies) -> list[FileEntry]:
    if isinstance(files, (list, tuple)):
        return [file_entry(entry, tree, place, copies) for entry in files]
    if isinstance(files, dict):
        return [_preprocessed(name, spec, tree, f"{place}[{name!r}]", copies) for name, spec in files.items()]
    raise DispatchError(f"{place}: expected a list of files or {{file: treename}}, got {shown(files)}")


def _preprocessed(name: Any, spec: Any, tree: str, place: str, copies: Copies) -> FileEntry:
    """`{file: treename}` (coffea's Runner) or `{file: {"object_path", "steps", "uuid", "num_entries"}}`
    (coffea's preprocess): the steps are the file's chunks, the uuid and entry count are checked on opening."""
    if spec is None or isinstance(spec, str):
        return FileEntry(copies(name, place), tree=_tree_name(spec or tree, place))
    if not isinstance(spec, dict) or not set(spec) <= PREPROCESSED_KEYS:
        raise DispatchError(
            f"{place}: expected a tree name or coffea's {{'object_path', 'steps', 'uuid', 'num_entries'}}, got "
            f"{shown(spec)}"
        )
    entry = FileEntry(copies(name, place), tree=_tree_name(spec.get("object_path", tree), f"{place}['object_path']"))
    _read_preprocessed(entry, spec, place)
    return entry


def _read_preprocessed(entry: FileEntry, spec: dict, place: str) -> None:
    """coffea's preprocess leaves steps, uuid and num_entries None for a file it could not open: such a file is
    listed but was not preprocessed, and is read whole."""
    steps = spec.get("steps")
    if isinstance(steps, list | tuple):  # preprocess gives an empty file the one step [0, 0]: nothing to read
        steps = [s for s in steps if not (isinstance(s, list | tuple) and len(s) == 2 and s[0] == s[1] == 0)]
    if steps:
        entry.steps = _ranges(steps, f"{place}['steps']")
    uuid, entries = spec.get("uuid"), spec.get("num_entries")
    if uuid is not None and (not isinstance(uuid, str) or not uuid.strip()):
        raise DispatchError(f"{place}['uuid']: expected the file's ROOT UUID as text, got {shown(uuid)}")
    if entries is not None and (type(entries) is not int or entries < 0):
        raise DispatchError(f"{place}['num_entries']: expected a count of entries, got {shown(entries)}")
    if entry.steps and entries is not None and entry.steps[-1][1] > entries:
        raise DispatchError(f"{place}: steps reach entry {entry.steps[-1][1]} of a file of {entries} entries")
    entry.uuid, entry.num_entries = uuid or None, entries


def file_entry(entry: Any, tree: str, place: str, copies: Copies) -> FileEntry:
    """A path, a list of replicas of it (tried in order), or ours: `{"file": ..., "entries": [[start, stop],
    ...]}` (only those entries of it), with the tree, steps and uuid a job's sample JSON carries."""
    if not isinstance(entry, dict):
        return FileEntry(copies(entry, place), tree=tree)
    ranges = entry_ranges(entry["entries"]) if "entries" in entry else []
    if "file" not in entry or not set(entry) <= FILE_KEYS or len(entry) < 2 or ranges is None:
        raise DispatchError(
            f"{place}: invalid file entry {shown(entry)} (expected a path, a list of replicas, or "
            f"{{'file': path, 'entries': {RANGE_HINT}}})"
        )
    found = FileEntry(copies(entry["file"], place), ranges, tree=_tree_name(entry.get("treename", tree), place))
    _read_preprocessed(found, {k: entry.get(k) for k in ("steps", "uuid", "num_entries")}, place)
    return found


def entry_ranges(value: Any) -> list[tuple[int, int]] | None:
    """The sorted entry ranges `[[start, stop], ...]`; None when that is not their form, or two overlap (their
    events would be read twice)."""
    valid = (
        isinstance(value, list | tuple)
        and value
        and all(
            isinstance(r, list | tuple) and len(r) == 2 and all(type(n) is int for n in r) and 0 <= r[0] < r[1]
            for r in value
        )
    )
    if not valid:
        return None
    ordered = sorted((r[0], r[1]) for r in value)
    overlapping = any(later[0] < earlier[1] for earlier, later in zip(ordered, ordered[1:], strict=False))
    return None if overlapping else ordered


def _ranges(value: Any, place: str) -> list[tuple[int, int]]:
    ranges = entry_ranges(value)
    if ranges is None:
        raise DispatchError(f"{place}: expected {RANGE_HINT}, got {shown(value)}")
    return ranges


def dataset_metadata(value: Any, place: str) -> dict[str, Any]:
    """coffea's dataset metadata, added to `events.metadata` of every chunk as coffea's Runner adds it: the
    names coffea sets itself are refused, as coffea refuses them."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise DispatchError(f"{place}: expected a dict of names to values, got {shown(value)}")
    reserved = sorted(set(value) & RESERVED_METADATA)
    if reserved:
        raise DispatchError(f"{place}: {reserved[0]!r} is a name coffea sets in events.metadata itself: rename it")
    # numpy's scalars as Python's: coffea 0.7's NanoEvents writes the metadata as JSON (np.int64 raised there)
    return {k: v.item() if isinstance(v, numpy.generic) else v for k, v in value.items()}


def _tree_name(value: Any, place: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DispatchError(f"{place}: expected a tree name, got {shown(value)}")
    return value


def shown(value: Any) -> str:
    """A value in a one-line message: its type and a shortened repr."""
    return f"{type(value).__name__} {reprlib.repr(value)}"


def json_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """A dataset's metadata as completeness.json can keep it: numpy's scalars and arrays as Python's; other values
    JSON cannot hold (objects) are left out, so the processor of a run of what is left says which is missing."""
    plain = {k: v.item() if isinstance(v, numpy.generic) else v for k, v in metadata.items()}
    plain = {k: v.tolist() if isinstance(v, numpy.ndarray) else v for k, v in plain.items()}
    return {k: v for k, v in plain.items() if _json_value(v)}


def _json_value(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True
