"""Turning samples into work items (file, entry range), the way coffea's Runner chunks them.

Planning opens every input once (cached for the workers), so a missing file, an unreadable file or a file
without the workflow's branches is reported before any output is written. What it learns is kept in the
metadata cache: a later plan over the same files reads none of their TTrees.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from coffea.processor.executor import FileMeta, WorkItem

from coffea_dispatch.compat import file_uuid
from coffea_dispatch.errors import BadInputFile, DispatchError
from coffea_dispatch.inputs import (
    branch_names,
    check_branch_names,
    is_local,
    local_identity,
    open_file,
    open_tree,
    retrying,
)
from coffea_dispatch.metadata_cache import FileMetadata, MetadataCache, branches_digest


@dataclass
class Plan:
    """The chunks to process and what was learned about the inputs on the way."""

    items: list[WorkItem] = field(default_factory=list)
    files: dict[str, list[str]] = field(default_factory=dict)
    entries: dict[str, int] = field(default_factory=dict)
    identities: dict[str, dict] = field(default_factory=dict)  # what tells a replaced input apart (ledger)
    from_cache: int = 0  # inputs described by the metadata cache, not read
    bad_files: dict[str, dict[str, str]] = field(default_factory=lambda: defaultdict(dict))

    def events(self, sample: str) -> int:
        return sum(self.entries.get(f, 0) for f in self.files.get(sample, []))


def select_samples(samples: dict[str, list[str]], only: str | None, limit: int | None) -> dict[str, list[str]]:
    """HiggsDNA's --only (a sample name, a glob over sample names, or one file) and --limit (files per sample)."""
    if limit is not None and limit < 1:
        raise DispatchError(f"--limit must be at least 1, got {limit}")
    selected = dict(samples)
    if only is not None:
        if only in samples:
            selected = {only: samples[only]}
        elif any(c in only for c in "*?["):
            selected = {name: files for name, files in samples.items() if fnmatch.fnmatchcase(name, only)}
        else:
            selected = {
                name: [f for f in files if f == only or f.endswith("/" + only)] for name, files in samples.items()
            }
            selected = {name: files for name, files in selected.items() if files}
        if not selected:
            raise DispatchError(f"--only {only!r} matches no sample or file (samples: {', '.join(samples)})")
    if limit is not None:
        selected = {name: files[:limit] for name, files in selected.items()}
    return selected


@dataclass(frozen=True)
class Description:
    entries: int
    uuid: bytes  # the ROOT file's fUUID, as coffea's Runner gives it to each chunk
    branches: frozenset[str]
    stat: dict  # a local file's size and mtime when it was described ({} for a remote file)

    @property
    def identity(self) -> dict:
        """What tells this input from a file replaced at the same path (kept by the dump's ledger)."""
        return {"uuid": self.uuid.hex(), "entries": self.entries, **self.stat}


Answers = dict[str, dict[str, Any]]  # {"described"|"unchanged"|"bad": {file: ...}}
DescribeMany = Callable[[list[str], "FileDescriber"], Answers]


@dataclass(frozen=True)
class FileDescriber:
    """What planning reads from one input, wherever it runs: in the main process, or mapped over the inputs
    on the executor's workers (as coffea's Runner preprocesses), so no file is opened serially in the main
    process. A remote file whose UUID the metadata cache holds (`cached_uuids`) is only checked: when its
    header still carries that UUID the TTree is not read. Failures come back as answers, never exceptions."""

    treename: str
    timeout: float | None = None
    retries: int = 0
    cached_uuids: dict[str, str] = field(default_factory=dict)

    def __call__(self, filename: str) -> Answers:
        cached_uuid = self.cached_uuids.get(filename)
        try:
            return retrying(filename, self.retries, functools.partial(self._read, filename, cached_uuid))
        except BadInputFile as exc:
            return {"bad": {filename: exc.reason}}

    def _read(self, filename: str, cached_uuid: str | None) -> Answers:
        # open_file refuses FIFOs, directories, ... (a stat) before uproot opens anything
        if cached_uuid is not None and file_uuid(open_file(filename, self.timeout)).hex() == cached_uuid:
            return {"unchanged": {filename: True}}
        tree = open_tree(filename, self.treename, self.timeout)
        return {"described": {filename: (int(tree.num_entries), file_uuid(tree).hex(), tuple(branch_names(tree)))}}


def describe_serially(filenames: list[str], describer: FileDescriber) -> Answers:
    answers: Answers = {}
    for filename in filenames:
        for kind, per_file in describer(filename).items():
            answers.setdefault(kind, {}).update(per_file)
    return answers


def describe_inputs(
    filenames: list[str], describer: FileDescriber, cache: MetadataCache, describe_many: DescribeMany
) -> dict[str, Description | BadInputFile]:
    """Each input's description (or why it cannot be read). A local file the cache knows is described by a
    `stat` here; every other file is read by `describe_many` (the executor's workers), and cached."""
    results: dict[str, Description | BadInputFile] = {}
    known: dict[str, tuple[FileMetadata, frozenset[str]]] = {}
    stats: dict[str, dict] = {}
    requests = []
    for filename in dict.fromkeys(filenames):
        try:
            stats[filename] = identity = local_identity(filename) if is_local(filename) else {}
        except BadInputFile as exc:
            results[filename] = exc
            continue
        cached = cache.lookup(filename, describer.treename, identity)
        names = cache.branch_names(cached.branches) if cached is not None else None
        if cached is not None and names is not None:
            known[filename] = (cached, names)
            if identity:  # size and mtime match: the same local file
                results[filename] = Description(cached.entries, bytes.fromhex(cached.uuid), names, identity)
                cache.hits += 1
                continue
        requests.append(filename)
    cached_uuids = {f: known[f][0].uuid for f in requests if f in known}
    answers = describe_many(requests, dataclasses.replace(describer, cached_uuids=cached_uuids)) if requests else {}
    for filename in requests:
        if filename in answers.get("unchanged", {}):
            cached, names = known[filename]
            results[filename] = Description(cached.entries, bytes.fromhex(cached.uuid), names, stats[filename])
            cache.hits += 1
        elif filename in answers.get("described", {}):
            entries, uuid, names = answers["described"][filename]
            metadata = FileMetadata(entries, uuid, branches_digest(list(names)), stats[filename])
            cache.store(filename, describer.treename, metadata, list(names))
            cache.misses += 1
            results[filename] = Description(entries, bytes.fromhex(uuid), frozenset(names), stats[filename])
        else:
            reason = answers.get("bad", {}).get(filename, "was not described (its worker was lost)")
            results[filename] = BadInputFile(filename, reason)
    return results


def chunk_ranges(entries: int, chunksize: int) -> list[tuple[int, int]]:
    """The entry ranges coffea's Runner cuts a file of `entries` into (and so do we)."""
    meta = FileMeta("", "", "", {"numentries": entries, "uuid": b""})
    return [(item.entrystart, item.entrystop) for item in meta.chunks(chunksize, False)]


def plan_chunks(
    samples: dict[str, list[str]],
    *,
    chunksize: int,
    maxchunks: int | None = None,
    treename: str = "Events",
    required_branches: tuple[str, ...] = (),
    workflow: str = "",
    skipbadfiles: bool = False,
    timeout: float | None = None,
    retries: int = 0,
    cache: MetadataCache | None = None,
    describe_many: DescribeMany = describe_serially,
) -> Plan:
    """Chunks per sample; `maxchunks` caps chunks per sample, as coffea's Runner does for HiggsDNA's --max.

    Every input is described at once by `describe_many` (in parallel on the executor's workers), except with
    `maxchunks`, where files are described one after the other until each sample has its chunks."""
    if chunksize < 1:
        raise DispatchError(f"--chunk must be at least 1, got {chunksize}")
    if maxchunks is not None and maxchunks < 1:
        raise DispatchError(f"--max must be at least 1, got {maxchunks}")
    plan = Plan()
    cache = cache if cache is not None else MetadataCache(None)
    describer = FileDescriber(treename, timeout, retries)
    every_file = [f for filenames in samples.values() for f in filenames]
    described = {} if maxchunks is not None else describe_inputs(every_file, describer, cache, describe_many)
    for sample, filenames in samples.items():
        plan.files[sample] = []
        sample_chunks = 0
        for filename in filenames:
            if maxchunks is not None and sample_chunks >= maxchunks:
                break
            if filename not in described:
                described.update(describe_inputs([filename], describer, cache, describe_serially))
            try:
                description = described[filename]
                if isinstance(description, BadInputFile):
                    raise description
                check_branch_names(filename, description.branches, required_branches, workflow)
            except BadInputFile as exc:
                if not skipbadfiles:
                    if "--skipbadfiles" not in exc.message:
                        exc.message += "; use --skipbadfiles to skip unreadable files"
                    raise exc from None
                plan.bad_files[sample][filename] = exc.reason
                continue
            entries, uuid = description.entries, description.uuid
            plan.files[sample].append(filename)
            plan.entries[filename] = entries
            plan.identities[filename] = description.identity
            meta = FileMeta(sample, filename, treename, {"numentries": entries, "uuid": uuid})
            for item in meta.chunks(chunksize, False):
                if maxchunks is not None and sample_chunks >= maxchunks:
                    break
                plan.items.append(item)
                sample_chunks += 1
    plan.from_cache = cache.hits
    return plan
