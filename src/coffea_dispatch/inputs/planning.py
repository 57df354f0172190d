"""Turning samples into work items (file, entry range), the way coffea's Runner chunks them.

An input must be described (entries, ROOT UUID, branch names) before it can be chunked. What was learned is
kept in the metadata cache, so a later plan over the same files reads none of their TTrees. An input no
earlier run described becomes a FileTask: the worker that describes it also runs its first chunks while the
file is open, so processing starts with the first file described and each file is opened once, not twice.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import json
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

from coffea.processor.executor import FileMeta, WorkItem

from coffea_dispatch.compat import file_uuid
from coffea_dispatch.errors import BadInputFile, DispatchError, MissingBranch
from coffea_dispatch.inputs.files import (
    LocalFile,
    branch_names,
    check_branch_names,
    file_in_use,
    inspect_local,
    is_local,
    open_file,
    open_tree,
    retrying,
)
from coffea_dispatch.inputs.metadata_cache import FileMetadata, MetadataCache, branches_digest
from coffea_dispatch.inputs.weights import input_totals


@dataclass
class Plan:
    """The chunks to process and what was learned about the inputs on the way."""

    items: list[WorkItem] = field(default_factory=list)
    files: dict[str, list[str]] = field(default_factory=dict)
    entries: dict[str, int] = field(default_factory=dict)
    identities: dict[str, dict] = field(default_factory=dict)  # what tells a replaced input apart (ledger)
    from_cache: int = 0  # inputs described by the metadata cache, not read
    bad_files: dict[str, dict[str, str]] = field(default_factory=lambda: defaultdict(dict))
    tasks: list[FileTask] = field(default_factory=list)  # inputs to describe and process on the workers
    treename: str = "Events"
    totals: dict[str, dict] = field(default_factory=dict)  # file -> its sum of generator weights or lumi blocks

    def events(self, sample: str) -> int:
        return sum(self.entries.get(f, 0) for f in self.files.get(sample, []))

    def add_described(self, described: dict, bad: dict[str, set[tuple[str, str]]], cache: MetadataCache) -> None:
        """What the workers learned running this plan's FileTasks: each input's Description (with its branch
        names only where the worker could not write the metadata cache), and the inputs that turned out
        unreadable (kept in `files` until now, in the sample JSON's order)."""
        for (_, filename), description in described.items():
            self.entries[filename] = description.entries
            self.identities[filename] = description.identity
            self.totals[filename] = description.totals
            if description.branches:  # the worker could not write the cache (another machine): store it here
                cache.store(filename, self.treename, description.metadata, sorted(description.branches))
        cache.misses += len(described)
        for sample, problems in bad.items():
            for filename, reason in sorted(problems):
                if filename in self.files.get(sample, []):
                    self.files[sample].remove(filename)
                self.bad_files[sample][filename] = reason


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


# each work item's usermeta carries the entry count it was planned from: the worker that opens the file checks it
# (a wrong count from a stale or damaged cache entry would silently drop events); not passed to processors
PLANNED_ENTRIES = "coffea_dispatch.planned_entries"
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
        tree = open_tree(filename, self.treename, self.timeout)
        totals = input_totals(filename, tree, self.timeout)
        described = (int(tree.num_entries), file_uuid(tree).hex(), tuple(branch_names(tree)), totals)
        return {"described": {filename: described}}


@dataclass(frozen=True, eq=False)
class FileTask:
    """An input no earlier run described (not in the metadata cache, no record in the dump), as one task for
    the executor: its worker describes it, checks the workflow's branches, records it (metadata cache, the
    dump's plan) and runs its first `chunks_here` chunks while the file is open. Its other chunks come back as
    follow-up work items, for all workers to share (a file of many chunks must not keep one worker busy while
    the others idle). ChunkRunner runs it (`ChunkRunner.run_file`)."""

    sample: str
    filename: str
    identity: dict  # a local file's size, mtime and header UUID, from the main process ({} for a remote file)
    describer: FileDescriber
    chunksize: int
    chunks_here: int
    required_branches: tuple[str, ...] = ()
    workflow: str = ""
    cache_folder: str | None = None
    stop_on_bad: bool = True  # not --skipbadfiles: an unreadable input stops the run
    ranges: tuple[tuple[int, int], ...] = ()  # only these entries of the file (the sample JSON said so)

    def __repr__(self) -> str:
        """JSON, like the Dask executor's work items: Dask names the task that killed its workers by its repr."""
        return "file" + json.dumps({"dataset": self.sample, "filename": self.filename})

    def describe(self) -> Description | BadInputFile:
        answers = self.describer(self.filename)
        described = answers.get("described", {}).get(self.filename)
        if described is None:
            return BadInputFile(self.filename, answers.get("bad", {}).get(self.filename, "could not be described"))
        entries, uuid, names, totals = described
        if self.identity.get("uuid", uuid) != uuid:
            return BadInputFile(self.filename, "was replaced while the run started (another ROOT UUID): rerun")
        try:
            check_branch_names(self.filename, frozenset(names), self.required_branches, self.workflow)
        except MissingBranch as exc:
            return exc
        return Description(entries, bytes.fromhex(uuid), frozenset(names), self.identity, totals)

    def remember(self, description: Description) -> Description:
        """Into the metadata cache, from the worker: a run that crashes later still finds the file described.
        Returns what the main process needs: the description without its branch names once they are cached
        (with them where the cache folder cannot be written here, for the main process to store)."""
        if self.cache_folder is None:
            return dataclasses.replace(description, branches=frozenset())
        cache = MetadataCache(Path(self.cache_folder))
        stored = cache.store(self.filename, self.describer.treename, description.metadata, sorted(description.branches))
        return dataclasses.replace(description, branches=frozenset()) if stored else description

    def chunks(self, description: Description) -> list[WorkItem]:
        items = file_chunks(self.sample, self.filename, self.describer.treename, description, self.chunksize)
        return within(list(items), self.ranges)


@dataclass(frozen=True)
class Fusion:
    """Which inputs become FileTasks, and how many chunks each runs itself: about an equal share of the files
    per worker, so that a file of many chunks hands the rest back while the workers still have files to take.
    With fewer new files than workers, none: each FileTask only describes its file and hands every chunk back,
    since running even one would keep the other workers idle for its duration (with 16 files on 64 slots,
    48 slots waited for the first chunks)."""

    can_fuse: Callable[[str, str], bool]  # (sample, file): no record of it in the dump (resume decides those)
    workers: int
    cache_folder: str | None = None


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
        cached = cache.lookup(filename, describer.treename, identity)
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
            cache.store(filename, describer.treename, description.metadata, list(names))
            cache.misses += 1
        else:
            reason = answers.get("bad", {}).get(filename, "was not described (its worker was lost)")
            results[filename] = BadInputFile(filename, reason)
    return results


def cached_description(cached: FileMetadata, names: frozenset[str], identity: dict) -> Description:
    return Description(cached.entries, bytes.fromhex(cached.uuid), names, identity, cached.totals)


def file_chunks(sample: str, filename: str, treename: str, description: Description, chunksize: int):
    """The file's work items, cut as coffea's Runner cuts them (round(entries / chunksize) equal chunks)."""
    planned = {"numentries": description.entries, "uuid": description.uuid, PLANNED_ENTRIES: description.entries}
    meta = FileMeta(sample, filename, treename, planned)
    return meta.chunks(chunksize, False)


def within(items: list[WorkItem], ranges) -> list[WorkItem]:
    """The parts of the chunks inside the entry ranges a sample JSON gives for a file (all of them without):
    ranges that `check --unprocessed` wrote fall on the dump's chunk boundaries, so its chunks come back whole."""
    if not ranges:
        return items
    kept = []
    for item in items:
        for start, stop in ranges:
            first, last = max(start, item.entrystart), min(stop, item.entrystop)
            if first < last:
                kept.append(dataclasses.replace(item, entrystart=first, entrystop=last))
    return kept


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
    fusion: Fusion | None = None,
    entry_ranges: dict[str, list[tuple[int, int]]] | None = None,
) -> Plan:
    """Chunks per sample; `maxchunks` caps chunks per sample, as coffea's Runner does for HiggsDNA's --max.

    With `fusion`, inputs the metadata cache does not know become FileTasks (described on the workers while
    processing goes on); every other input is described at once by `describe_many` (in parallel on the
    executor's workers). With `maxchunks`, files are described one after the other until each sample has its
    chunks."""
    if chunksize < 1:
        raise DispatchError(f"--chunk must be at least 1, got {chunksize}")
    if maxchunks is not None and maxchunks < 1:
        raise DispatchError(f"--max must be at least 1, got {maxchunks}")
    plan = Plan(treename=treename)
    ranges = entry_ranges or {}
    cache = cache if cache is not None else MetadataCache(None)
    describer = FileDescriber(treename, timeout, retries)
    every_file = [f for filenames in samples.values() for f in filenames]
    facts = each_file_once(samples)
    fusable = _fusable(samples, fusion) if maxchunks is None else frozenset()
    described = {}
    if maxchunks is None:
        described = describe_inputs(every_file, describer, cache, describe_many, fusable, facts)
        refuse_one_file_twice(samples, {f: _uuid_keys(d) for f, d in described.items()})
    left: list[tuple[str, str, dict]] = []
    for sample, filenames in samples.items():
        plan.files[sample] = []
        sample_chunks = 0
        for filename in filenames:
            if maxchunks is not None and sample_chunks >= maxchunks:
                break
            if filename not in described:
                described.update(describe_inputs([filename], describer, cache, describe_serially, facts=facts))
            if isinstance(described[filename], Undescribed):
                plan.files[sample].append(filename)
                left.append((sample, filename, described[filename].identity))
                continue
            try:
                description = described[filename]
                if isinstance(description, BadInputFile):
                    raise description
                check_branch_names(filename, description.branches, required_branches, workflow)
            except BadInputFile as exc:
                if not skipbadfiles:
                    refuse_bad_input(exc)
                plan.bad_files[sample][filename] = exc.reason
                continue
            plan.files[sample].append(filename)
            plan.entries[filename] = description.entries
            plan.identities[filename] = description.identity
            plan.totals[filename] = description.totals
            items = within(list(file_chunks(sample, filename, treename, description, chunksize)), ranges.get(filename))
            for item in items:
                if maxchunks is not None and sample_chunks >= maxchunks:
                    break
                plan.items.append(item)
                sample_chunks += 1
    plan.from_cache = cache.hits
    if left:
        share = len(left) // fusion.workers
        common = {"describer": describer, "chunksize": chunksize, "chunks_here": share, "workflow": workflow}
        common.update(required_branches=tuple(required_branches), cache_folder=fusion.cache_folder)
        common.update(stop_on_bad=not skipbadfiles)
        plan.tasks = [
            FileTask(sample, filename, identity, **common, ranges=tuple(ranges.get(filename, ())))
            for sample, filename, identity in left
        ]
        # the biggest local files first, so the last tasks to finish are short ones
        plan.tasks.sort(key=lambda task: -task.identity.get("size", 0))
    return plan


SameFileKeys = dict[str, list[tuple[tuple, str]]]  # file -> (what identifies it, how two names share it)


def each_file_once(samples: dict[str, list[str]]) -> dict[str, LocalFile | BadInputFile | None]:
    """Refuse one file under two names in a sample, from what can be known without opening any (a local file's
    stat and header, a remote file's name); returns what was learned of each input."""
    facts = inspect_inputs([f for filenames in samples.values() for f in filenames])
    refuse_one_file_twice(samples, {f: _same_file_keys(f, fact) for f, fact in facts.items()})
    return facts


def refuse_one_file_twice(samples: dict[str, list[str]], keys: SameFileKeys, done: bool = False) -> None:
    """One file under two names in a sample (a symbolic or hard link, a linked folder, a copy, one /store file
    on two servers) would have its events counted twice: refused, naming both. Textual duplicates are refused
    when the sample JSON is read."""
    for sample, filenames in samples.items():
        seen: dict[tuple, str] = {}
        for filename in filenames:
            for key, how in keys.get(filename, ()):
                first = seen.setdefault(key, filename)
                if first != filename:
                    advice = "; rerun into a new --dump" if done else ""
                    raise DispatchError(
                        f"sample '{sample}' lists {first} and {filename}, which are {how}: its events would be "
                        f"counted twice; remove one of them from the sample JSON{advice}"
                    )


def _same_file_keys(filename: str, fact: LocalFile | BadInputFile | None) -> list[tuple[tuple, str]]:
    """Before any file is described: a local file by its device, inode and header UUID; a remote one by its
    logical file name."""
    if fact is None:
        return _remote_keys(filename)
    if not isinstance(fact, LocalFile):
        return []
    return [(("inode", fact.device, fact.inode), "one file (a link, or a path through a linked folder)")] + uuid_keys(
        fact.uuid
    )


def _uuid_keys(description) -> list[tuple[tuple, str]]:
    if not isinstance(description, Description):
        return []
    return uuid_keys(description.uuid.hex())


def uuid_keys(uuid: str | None) -> list[tuple[tuple, str]]:
    return [(("uuid", uuid), f"copies of one file (ROOT UUID {uuid})")] if uuid else []


def _remote_keys(filename: str) -> list[tuple[tuple, str]]:
    """A CMS logical file name (/store/...) names one file whichever server serves it."""
    path = "/" + urlsplit(filename).path.lstrip("/")
    return [(("lfn", path), f"the same file {path} on two servers")] if path.startswith("/store/") else []


def refuse_bad_input(exc: BadInputFile) -> NoReturn:
    """Without --skipbadfiles an unusable input stops the run, and the message says how to skip it."""
    if "--skipbadfiles" not in exc.message:
        exc.message += "; use --skipbadfiles to skip unreadable files"
    raise exc from None


def _fusable(samples: dict[str, list[str]], fusion: Fusion | None) -> frozenset[str]:
    """Inputs that may become FileTasks: listed in one sample only (a FileTask plans one sample's chunks of
    it), and with no record in the dump."""
    if fusion is None:
        return frozenset()
    listed = Counter(f for filenames in samples.values() for f in filenames)
    return frozenset(
        f for sample, filenames in samples.items() for f in filenames if listed[f] == 1 and fusion.can_fuse(sample, f)
    )
