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
from collections.abc import Callable, Container
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import numpy
from coffea.processor.executor import FileMeta, WorkItem

from coffea_dispatch.errors import BadInputFile, DispatchError, MissingBranch
from coffea_dispatch.identity import identity_of
from coffea_dispatch.inputs.describe import (
    DescribeMany,
    Description,
    FileDescriber,
    Undescribed,
    describe_inputs,
    describe_serially,
    inspect_inputs,
)
from coffea_dispatch.inputs.files import (
    LocalFile,
    check_branch_names,
)
from coffea_dispatch.inputs.filesets import DEFAULT_TREE
from coffea_dispatch.inputs.metadata_cache import MetadataCache


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
    trees: dict[str, str] = field(default_factory=dict)  # file -> its tree, where the fileset names another
    steps: dict[str, tuple[tuple[int, int], ...]] = field(default_factory=dict)  # file -> its preprocessed chunks
    totals: dict[str, dict] = field(default_factory=dict)  # file -> its sum of generator weights or lumi blocks

    def events(self, sample: str) -> int:
        return sum(self.entries.get(f, 0) for f in self.files.get(sample, []))

    def tree_of(self, filename: str) -> str:
        return self.trees.get(filename, self.treename)

    def chunking(self, filename: str, chunksize: int) -> Container[tuple[int, int]]:
        """The entry ranges of an input that belong with this plan's (a chunk of another range duplicates
        events): its chunks at `chunksize`, which cover the file; or, with preprocessed steps, which may cover
        only what an earlier run left (`check --unprocessed --format coffea`), the steps and every range
        outside them."""
        if filename in self.steps:
            return StepRanges(self.steps[filename])
        return set(chunk_ranges(self.entries[filename], chunksize))

    def add_described(self, described: dict, bad: dict[str, set[tuple[str, str]]], cache: MetadataCache) -> None:
        """What the workers learned running this plan's FileTasks: each input's Description (with its branch
        names only where the worker could not write the metadata cache), and the inputs that turned out
        unreadable (kept in `files` until now, in the sample JSON's order)."""
        for (_, filename), description in described.items():
            self.entries[filename] = description.entries
            self.identities[filename] = description.identity
            self.totals[filename] = description.totals
            if description.branches:  # the worker could not write the cache (another machine): store it here
                cache.store(filename, self.tree_of(filename), description.metadata, sorted(description.branches))
        cache.misses += len(described)
        for sample, problems in bad.items():
            for filename, reason in sorted(problems):
                if filename in self.files.get(sample, []):
                    self.files[sample].remove(filename)
                self.bad_files[sample][filename] = reason


@dataclass(frozen=True)
class StepRanges:
    """A file's preprocessed steps, and every range that overlaps none of them."""

    steps: tuple[tuple[int, int], ...]

    def __contains__(self, entries: object) -> bool:
        if not isinstance(entries, tuple) or len(entries) != 2:
            return False
        start, stop = entries
        return entries in self.steps or all(stop <= a or b <= start for a, b in self.steps)


def select_samples(samples: dict[str, list[str]], only: str | None, limit: int | None) -> dict[str, list[str]]:
    """HiggsDNA's --only (a sample name, a glob over sample names, or one file) and --limit (files per sample)."""
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


# each work item's usermeta carries the entry count it was planned from: the worker that opens the file checks it
# (a wrong count from a stale or damaged cache entry would silently drop events); not passed to processors
PLANNED_ENTRIES = "coffea_dispatch.planned_entries"


@dataclass(frozen=True)
class Reading:
    """How the fileset says one input is read, beyond its name: only some entries of it (`check
    --unprocessed`), coffea's preprocessed steps as its chunks with the UUID and entry count preprocessing saw,
    and its dataset's metadata, which every chunk's events.metadata carries (as coffea's Runner adds it)."""

    ranges: tuple[tuple[int, int], ...] = ()
    steps: tuple[tuple[int, int], ...] = ()
    uuid: str | None = None
    num_entries: int | None = None
    metadata: dict = field(default_factory=dict, hash=False)

    def refusal(self, filename: str, description: Description) -> BadInputFile | None:
        """The input must be the file coffea's preprocess saw: its steps cut that file, not this one."""
        if self.uuid is not None and self.uuid.replace("-", "") != description.uuid.hex():
            why = f"has ROOT UUID {description.uuid.hex()}, not the {self.uuid} of the fileset's preprocessing"
        elif self.num_entries is not None and self.num_entries != description.entries:
            why = f"has {description.entries} entries, not the {self.num_entries} of the fileset's preprocessing"
        elif self.steps and self.steps[-1][1] > description.entries:
            why = f"has {description.entries} entries: the fileset's steps reach {self.steps[-1][1]}"
        else:
            return None
        return BadInputFile(filename, f"{why} (replaced since?): preprocess the fileset again")


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
    reading: Reading = Reading()

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
        description = Description(entries, bytes.fromhex(uuid), frozenset(names), self.identity, totals)
        return self.reading.refusal(self.filename, description) or description

    def remember(self, description: Description) -> Description:
        """Into the metadata cache, from the worker: a run that crashes later still finds the file described.
        Returns what the main process needs: the description without its branch names once they are cached
        (with them where the cache folder cannot be written here, for the main process to store)."""
        if self.cache_folder is None:
            return dataclasses.replace(description, branches=frozenset())
        cache = MetadataCache(Path(self.cache_folder))
        tree = self.describer.tree_of(self.filename)
        stored = cache.store(self.filename, tree, description.metadata, sorted(description.branches))
        return dataclasses.replace(description, branches=frozenset()) if stored else description

    def chunks(self, description: Description) -> list[WorkItem]:
        tree = self.describer.tree_of(self.filename)
        return file_chunks(self.sample, self.filename, tree, description, self.chunksize, self.reading)


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


def file_chunks(
    sample: str, filename: str, treename: str, description: Description, chunksize: int, reading: Reading = Reading()
) -> list[WorkItem]:
    """The file's work items, cut as coffea's Runner cuts them (round(entries / chunksize) equal chunks), or
    coffea's preprocessed steps as they are; only the entries the fileset asks for."""
    planned = {**reading.metadata, PLANNED_ENTRIES: description.entries}
    if reading.steps:
        items = [WorkItem(sample, filename, treename, a, b, description.uuid, planned) for a, b in reading.steps]
    else:
        meta = FileMeta(sample, filename, treename, {"numentries": description.entries, "uuid": description.uuid})
        meta.metadata.update(planned)
        items = list(meta.chunks(chunksize, False))
        if not items:  # coffea 0.7.21-0.7.30 give an empty file no chunk; 0.7.31 and 2025+ give it [0, 0]
            items = [WorkItem(sample, filename, treename, 0, 0, description.uuid, planned)]
    return within(items, reading.ranges)


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
    return [(item.entrystart, item.entrystop) for item in meta.chunks(chunksize, False)] or [(0, 0)]


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
    readings: dict[tuple[str, str], Reading] | None = None,
    trees: dict[str, str] | None = None,
) -> Plan:
    """Chunks per sample; `maxchunks` caps chunks per sample, as coffea's Runner does for HiggsDNA's --max.

    With `fusion`, inputs the metadata cache does not know become FileTasks (described on the workers while
    processing goes on); every other input is described at once by `describe_many` (in parallel on the
    executor's workers). With `maxchunks`, files are described one after the other until each sample has its
    chunks. `readings`: per file, what the fileset says of how to read it; `trees`: per file, a tree other than
    `treename`. `readings` are per (sample, file): one file in two datasets carries each one's metadata."""
    plan = Plan(treename=treename, trees=trees or {})
    plan.steps = {f: reading.steps for (_, f), reading in (readings or {}).items() if reading.steps}
    cache = cache if cache is not None else MetadataCache(None)
    describer = FileDescriber(treename, timeout, retries, trees=trees or {})
    facts = each_file_once(samples)
    described = {}
    if maxchunks is None:
        every_file = [f for filenames in samples.values() for f in filenames]
        described = describe_inputs(every_file, describer, cache, describe_many, _fusable(samples, fusion), facts)
        refuse_one_file_twice(samples, {f: _uuid_keys(d) for f, d in described.items()})
    cut = Cutting(describer, chunksize, tuple(required_branches), workflow, skipbadfiles, readings or {})
    left: list[tuple[str, str, dict]] = []
    for sample, filenames in samples.items():
        plan.files[sample] = []
        room = maxchunks  # chunks this sample may still get (None: all)
        for filename in filenames:
            if room is not None and room <= 0:
                break
            if filename not in described:
                described.update(describe_inputs([filename], describer, cache, describe_serially, facts=facts))
            if isinstance(described[filename], Undescribed):
                plan.files[sample].append(filename)
                left.append((sample, filename, described[filename].identity))
                continue
            added = _add_file(plan, sample, filename, described[filename], cut, room)
            room = None if room is None else room - added
    plan.from_cache = cache.hits
    if left:
        plan.tasks = _file_tasks(left, fusion, cut)
    return plan


NO_READING = Reading()


def reading_digest(item: WorkItem) -> str | None:
    """What a chunk's result depends on beyond its file and entry range: the tree read and the dataset metadata
    its events carry (None for NanoAOD's Events without metadata, as records of earlier versions say): a dump
    resumed with another xsec or tree redoes the chunk instead of returning what the other gave."""
    metadata = {k: v for k, v in (item.usermeta or {}).items() if k != PLANNED_ENTRIES}
    if not metadata and item.treename == DEFAULT_TREE:
        return None
    try:  # every chunk of a dataset carries the same metadata: plain values are digested once (72 us each)
        return _plain_reading_digest(item.treename, json.dumps(metadata, sort_keys=True, allow_nan=False))
    except (TypeError, ValueError):  # numpy values, objects: digested as they are
        return identity_of({"tree": item.treename, "metadata": _as_json_gives(metadata)}, "metadata").digest


@functools.lru_cache(maxsize=1024)
def _plain_reading_digest(tree: str, metadata_json: str) -> str:
    """The digest of JSON metadata, which its text decides (JSON's values read back are what they were)."""
    return identity_of({"tree": tree, "metadata": json.loads(metadata_json)}, "metadata").digest


def _as_json_gives(value: Any) -> Any:
    """A value as it comes back from a sample JSON (a job's, what is left): numpy's scalars as Python's, tuples
    as lists. Digested so, `nevts=np.int64(5)` here and `5` read back are the same reading."""
    if isinstance(value, numpy.generic):
        return value.item()
    if isinstance(value, list | tuple):
        return [_as_json_gives(v) for v in value]
    if isinstance(value, dict):
        return {k: _as_json_gives(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class Cutting:
    """How every input of a plan is cut and checked."""

    describer: FileDescriber
    chunksize: int
    required_branches: tuple[str, ...]
    workflow: str
    skipbadfiles: bool
    readings: dict[tuple[str, str], Reading]  # (sample, file) -> how the fileset says it is read

    def reading(self, sample: str, filename: str) -> Reading:
        return self.readings.get((sample, filename), NO_READING)


def _add_file(
    plan: Plan, sample: str, filename: str, description: Description | BadInputFile, cut: Cutting, room: int | None
) -> int:
    """One described input into the plan (at most `room` of its chunks); a bad one refused or, with
    --skipbadfiles, listed. Returns the number of chunks added."""
    try:
        if isinstance(description, BadInputFile):
            raise description
        check_branch_names(filename, description.branches, cut.required_branches, cut.workflow)
        refused = cut.reading(sample, filename).refusal(filename, description)
        if refused is not None:
            raise refused
    except BadInputFile as exc:
        if not cut.skipbadfiles:
            refuse_bad_input(exc)
        plan.bad_files[sample][filename] = exc.reason
        return 0
    plan.files[sample].append(filename)
    plan.entries[filename] = description.entries
    plan.identities[filename] = description.identity
    plan.totals[filename] = description.totals
    tree = cut.describer.tree_of(filename)
    items = file_chunks(sample, filename, tree, description, cut.chunksize, cut.reading(sample, filename))
    items = items if room is None else items[:room]
    plan.items += items
    return len(items)


def _file_tasks(left: list[tuple[str, str, dict]], fusion: Fusion, cut: Cutting) -> list:
    """The inputs left undescribed, as FileTasks: the biggest local files first, so the last to finish are short."""
    common = {"describer": cut.describer, "chunksize": cut.chunksize, "chunks_here": len(left) // fusion.workers}
    common.update(required_branches=cut.required_branches, workflow=cut.workflow, cache_folder=fusion.cache_folder)
    tasks = [
        FileTask(
            sample,
            filename,
            identity,
            **common,
            stop_on_bad=not cut.skipbadfiles,
            reading=cut.reading(sample, filename),
        )
        for sample, filename, identity in left
    ]
    tasks.sort(key=lambda task: -task.identity.get("size", 0))
    return tasks


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
