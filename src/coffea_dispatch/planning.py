"""Turning samples into work items (file, entry range), the way coffea's Runner chunks them.

Planning opens every input once (cached for the workers), so a missing file, an unreadable file or a file
without the workflow's branches is reported before any output is written. What it learns is kept in the
metadata cache: a later plan over the same files reads none of their TTrees.
"""

from __future__ import annotations

import fnmatch
import functools
from collections import defaultdict
from dataclasses import dataclass, field

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


def _describe(
    filename: str, treename: str, timeout, required_branches, workflow: str, cache: MetadataCache
) -> tuple[int, bytes]:
    """The file's entries and UUID (as coffea's Runner has it), its workflow branches checked: from the
    metadata cache when it holds this very file (no TTree read), else read from the file and cached."""
    identity = local_identity(filename) if is_local(filename) else {}  # a local path that is no file fails here
    cached = cache.lookup(filename, treename, identity)
    if cached is not None and not identity and file_uuid(open_file(filename, timeout)).hex() != cached.uuid:
        cached = None  # a remote file replaced at the same URL
    names = cache.branch_names(cached.branches) if cached is not None else None
    if cached is not None and names is not None:
        check_branch_names(filename, names, required_branches, workflow)
        cache.hits += 1
        return cached.entries, bytes.fromhex(cached.uuid)
    cache.misses += 1
    tree = open_tree(filename, treename, timeout)
    entries, uuid, names = int(tree.num_entries), file_uuid(tree), branch_names(tree)
    cache.store(filename, treename, FileMetadata(entries, uuid.hex(), branches_digest(names), identity), names)
    check_branch_names(filename, set(names), required_branches, workflow)  # cached either way: a rerun knows
    return entries, uuid


def input_identity(filename: str, entries: int, uuid: bytes) -> dict:
    """The ROOT file's UUID and entries, and for a local file its size and mtime: a file replaced at the same
    path differs in at least one of them."""
    identity = {"uuid": uuid.hex() if isinstance(uuid, bytes) else str(uuid), "entries": entries}
    return {**identity, **local_identity(filename)} if is_local(filename) else identity


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
) -> Plan:
    """Chunks per sample; `maxchunks` caps chunks per sample, as coffea's Runner does for HiggsDNA's --max."""
    if chunksize < 1:
        raise DispatchError(f"--chunk must be at least 1, got {chunksize}")
    if maxchunks is not None and maxchunks < 1:
        raise DispatchError(f"--max must be at least 1, got {maxchunks}")
    plan = Plan()
    cache = cache if cache is not None else MetadataCache(None)
    for sample, filenames in samples.items():
        plan.files[sample] = []
        sample_chunks = 0
        for filename in filenames:
            if maxchunks is not None and sample_chunks >= maxchunks:
                break
            try:
                describe = functools.partial(_describe, filename, treename, timeout, required_branches, workflow, cache)
                entries, uuid = retrying(filename, retries, describe)
            except BadInputFile as exc:
                if not skipbadfiles:
                    if "--skipbadfiles" not in exc.message:
                        exc.message += "; use --skipbadfiles to skip unreadable files"
                    raise
                plan.bad_files[sample][filename] = exc.reason
                continue
            plan.files[sample].append(filename)
            plan.entries[filename] = entries
            plan.identities[filename] = input_identity(filename, entries, uuid)
            meta = FileMeta(sample, filename, treename, {"numentries": entries, "uuid": uuid})
            for item in meta.chunks(chunksize, False):
                if maxchunks is not None and sample_chunks >= maxchunks:
                    break
                plan.items.append(item)
                sample_chunks += 1
    plan.from_cache = cache.hits
    return plan
