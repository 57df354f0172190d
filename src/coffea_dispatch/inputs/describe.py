"""What planning reads of each input before it can be cut into chunks: entries, ROOT UUID, branch names and sums
of generator weights (`Description`), read by a `FileDescriber` wherever it runs (in this process, in threads, or
mapped over the executor's workers as coffea's Runner preprocesses), unless the metadata cache already knows
the file (a local file by its stat and header, a remote one by its header's UUID).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from coffea_dispatch.errors import BadInputFile
from coffea_dispatch.inputs.compat import file_uuid
from coffea_dispatch.inputs.files import (
    LocalFile,
    branch_names,
    file_in_use,
    inspect_local,
    is_local,
    open_file,
    open_tree,
    retrying,
)
from coffea_dispatch.inputs.metadata_cache import FileMetadata, MetadataCache, branches_digest
from coffea_dispatch.inputs.weights import input_totals


@dataclass(frozen=True)
class Description:
    entries: int
    uuid: bytes  # the ROOT file's fUUID, as coffea's Runner gives it to each chunk
    branches: frozenset[str]
    stat: dict  # a local file's size, mtime and header UUID when it was described ({} for a remote file)
    totals: dict = field(default_factory=dict)  # weights.input_totals: what normalisation needs of the whole file

    @property
    def identity(self) -> dict:
        """What tells this input from a file replaced at the same path (kept by the dump's ledger)."""
        return {"uuid": self.uuid.hex(), "entries": self.entries, **self.stat}

    @property
    def metadata(self) -> FileMetadata:
        digest = branches_digest(list(self.branches))
        return FileMetadata(self.entries, self.uuid.hex(), digest, self.stat, self.totals)


INSPECT_IN_THREADS_FROM = 8  # inputs: fewer are inspected one after the other

INSPECT_THREADS = 16

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
    trees: dict[str, str] = field(default_factory=dict)  # file -> its tree, where the fileset names another

    def tree_of(self, filename: str) -> str:
        return self.trees.get(filename, self.treename)

    def __call__(self, filename: str) -> Answers:
        cached_uuid = self.cached_uuids.get(filename)
        try:
            with file_in_use(filename):
                return retrying(filename, self.retries, functools.partial(self._read, filename, cached_uuid))
        except BadInputFile as exc:
            return {"bad": {filename: exc.reason}}

    def _read(self, filename: str, cached_uuid: str | None) -> Answers:
        # open_file refuses FIFOs, directories, ... (a stat) before uproot opens anything
        if cached_uuid is not None and file_uuid(open_file(filename, self.timeout)).hex() == cached_uuid:
            return {"unchanged": {filename: True}}
        tree = open_tree(filename, self.tree_of(filename), self.timeout)
        totals = input_totals(filename, tree, self.timeout)
        described = (int(tree.num_entries), file_uuid(tree).hex(), tuple(branch_names(tree)), totals)
        return {"described": {filename: described}}


def merged_answers(answers: Iterable[Answers]) -> Answers:
    """One Answers of many files' (however they were described: one after the other, threads, workers)."""
    merged: Answers = {}
    for answer in answers:
        for kind, per_file in answer.items():
            merged.setdefault(kind, {}).update(per_file)
    return merged


def describe_serially(filenames: list[str], describer: FileDescriber) -> Answers:
    return merged_answers(describer(filename) for filename in filenames)


@dataclass(frozen=True)
class Undescribed:
    """An input left for a FileTask to describe on a worker; `identity` is the main process's stat."""

    identity: dict


def inspect_inputs(filenames: list[str]) -> dict[str, LocalFile | BadInputFile | None]:
    """Each local input's stat and header UUID (None for a remote input), read in threads: a header is one
    small read, but thousands of them one after the other add up on a network file system."""
    local = [f for f in dict.fromkeys(filenames) if is_local(f)]
    facts: dict[str, LocalFile | BadInputFile | None] = dict.fromkeys(filenames)

    def inspect(filename: str) -> LocalFile | BadInputFile:
        try:
            return inspect_local(filename)
        except BadInputFile as exc:
            return exc

    if len(local) < INSPECT_IN_THREADS_FROM:
        facts.update((f, inspect(f)) for f in local)
    else:
        with ThreadPoolExecutor(INSPECT_THREADS) as pool:
            facts.update(zip(local, pool.map(inspect, local), strict=True))
    return facts


def describe_inputs(
    filenames: list[str],
    describer: FileDescriber,
    cache: MetadataCache,
    describe_many: DescribeMany,
    leave: frozenset[str] = frozenset(),
    facts: dict[str, LocalFile | BadInputFile | None] | None = None,
) -> dict[str, Description | BadInputFile | Undescribed]:
    """Each input's description (or why it cannot be read). A local file the cache knows is described by its
    stat and header here; files in `leave` that the cache does not know are left Undescribed (FileTasks);
    every other file is read by `describe_many` (the executor's workers), and cached."""
    results: dict[str, Description | BadInputFile | Undescribed] = {}
    known: dict[str, tuple[FileMetadata, frozenset[str]]] = {}
    stats: dict[str, dict] = {}
    requests = []
    facts = facts if facts is not None else inspect_inputs(filenames)
    for filename in dict.fromkeys(filenames):
        fact = facts[filename]
        if isinstance(fact, BadInputFile):
            results[filename] = fact
            continue
        stats[filename] = identity = fact.identity if fact is not None else {}
        cached = cache.lookup(filename, describer.tree_of(filename), identity)
        names = cache.branch_names(cached.branches) if cached is not None else None
        if cached is not None and names is not None:
            known[filename] = (cached, names)
            if identity:  # size, mtime and header UUID match: the same local file
                results[filename] = cached_description(cached, names, identity)
                cache.hits += 1
                continue
        if filename in leave and filename not in known:
            results[filename] = Undescribed(identity)
            continue
        requests.append(filename)
    cached_uuids = {f: known[f][0].uuid for f in requests if f in known}
    answers = describe_many(requests, dataclasses.replace(describer, cached_uuids=cached_uuids)) if requests else {}
    for filename in requests:
        if filename in answers.get("unchanged", {}):
            cached, names = known[filename]
            results[filename] = cached_description(cached, names, stats[filename])
            cache.hits += 1
        elif filename in answers.get("described", {}):
            entries, uuid, names, totals = answers["described"][filename]
            results[filename] = description = Description(
                entries, bytes.fromhex(uuid), frozenset(names), stats[filename], totals
            )
            cache.store(filename, describer.tree_of(filename), description.metadata, list(names))
            cache.misses += 1
        else:
            reason = answers.get("bad", {}).get(filename, "was not described (its worker was lost)")
            results[filename] = BadInputFile(filename, reason)
    return results


def cached_description(cached: FileMetadata, names: frozenset[str], identity: dict) -> Description:
    return Description(cached.entries, bytes.fromhex(cached.uuid), names, identity, cached.totals)
