"""What coffea's Runner read through one of our executors, per dataset, against what it planned.

coffea's Runner returns the processor's accumulator and nothing of what was left out: a file its preprocessing
could not open (`skipbadfiles`), a chunk given up, the files `maxchunks` never reached. Our executor sees both
calls: the preprocessing one (every file, and the entries and UUID of each that opened) and the processing one
(every chunk planned). Each chunk's function is wrapped (`Counted`) so that the worker that ran it adds what it
read (`weights.chunk_count`: entries, sum of generator weights or luminosity blocks) and what the file holds
(`weights.input_totals`, once per file and worker) to the output, as a `ChunksRead` that coffea's `accumulate`
sums with the processor's own; the executor takes it out before the Runner sees it. The answer is the dump's
`Completeness` (`ex.completeness()`, or `report=` written as `completeness.json`), for every Runner call made
through the executor and its copies (they share one `RunnerReading`), with each dataset's metadata as the
Runner's items carry it: what is left (`unprocessed(format="coffea")`) gets the same `events.metadata`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from coffea_dispatch.dump.collect import RUNNER_READ_KEY  # in a chunk's output on its way to us, never past us
from coffea_dispatch.dump.completeness import Completeness, from_run
from coffea_dispatch.inputs.compat import file_uuid
from coffea_dispatch.inputs.files import derived, open_tree
from coffea_dispatch.inputs.filesets import RESERVED_METADATA, json_metadata
from coffea_dispatch.inputs.metadata_cache import chunk_name
from coffea_dispatch.inputs.planning import PLANNED_ENTRIES
from coffea_dispatch.inputs.weights import chunk_count, input_totals
from coffea_dispatch.result_keys import READ_KEY

FACTS = "runner file facts"  # the key of a file's (entries, totals, uuid) in inputs.files.derived


def user_metadata(metadata: Any) -> dict[str, Any]:
    """A dataset's metadata as the fileset gave it: without what coffea sets itself (numentries, uuid, ...: a
    fileset naming them is refused by the Runner) and what we add (the planned entries), and numpy scalars
    (`np.float64(4.0)` from a user's table) as Python's, so that it is JSON in completeness.json and what is
    left."""
    if not isinstance(metadata, dict):
        return {}
    return json_metadata({k: v for k, v in metadata.items() if k not in RESERVED_METADATA and k != PLANNED_ENTRIES})


@dataclass
class ChunksRead:
    """What chunks read: (dataset, file) -> chunk name -> weights.ChunkCount, and file -> (entries, totals, ROOT
    UUID as hex). coffea's `accumulate` adds it as any other value of the output (two chunks never share a name)."""

    counts: dict[tuple[str, str], dict[str, tuple]] = field(default_factory=dict)
    facts: dict[str, tuple[int | None, dict, str]] = field(default_factory=dict)

    def __add__(self, other: ChunksRead) -> ChunksRead:
        summed = ChunksRead({key: dict(chunks) for key, chunks in self.counts.items()}, dict(self.facts))
        summed += other
        return summed

    def __iadd__(self, other: ChunksRead) -> ChunksRead:
        for key, chunks in other.counts.items():
            self.counts.setdefault(key, {}).update(chunks)
        for filename, facts in other.facts.items():
            if self.facts.get(filename, (None,))[0] is None:
                self.facts[filename] = facts
        return self


def chunk_read(item: Any) -> ChunksRead:
    """What one chunk read, from its file opened once more in this worker (the open-file cache keeps it open for
    the next chunk); a file that does not open again counts its chunk by entries alone."""
    start, stop, filename = item.entrystart, item.entrystop, item.filename
    uuid = bytes(item.fileuuid).hex()
    try:
        tree = open_tree(filename, item.treename)
        count = chunk_count(filename, tree, start, stop)
        memo = derived(filename)
        if FACTS not in memo:
            memo[FACTS] = (int(tree.num_entries), input_totals(filename, tree), file_uuid(tree).hex())
        facts = memo[FACTS]
    except Exception:  # read by the chunk, not now: what was read still counts
        count, facts = (stop - start, None, None), (None, {}, uuid)
    return ChunksRead({(item.dataset, filename): {chunk_name(start, stop): count}}, {filename: facts})


@dataclass(frozen=True)
class Counted:
    """The Runner's chunk function, with what the chunk read added to its output (a dict: coffea's wrapper)."""

    function: Callable

    def __call__(self, item: Any) -> Any:
        result = self.function(item)
        if not isinstance(result, dict):  # None: coffea's skipbadfiles gave the chunk up; a dataframe: no count
            return result
        return {**result, RUNNER_READ_KEY: chunk_read(item)}


class RunnerReading:
    """What the Runner calls through one executor and its copies planned and read."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.listing: dict[str, list[str]] = {}  # dataset -> every file given, in order
        self.planned: dict[tuple[str, str], set[str]] = {}  # (dataset, file) -> chunk names
        self.read = ChunksRead()
        self.described: dict[str, tuple[int | None, dict, str]] = {}  # file -> what coffea's preprocessing found
        self.problems: dict[str, dict[str, str]] = {}  # dataset -> file -> why it failed
        self.metadata: dict[str, dict[str, Any]] = {}  # dataset -> its metadata (the fileset's), as items carry it
        self.failure: BaseException | None = None  # what the last processing call raised

    def __getstate__(self) -> dict[str, Any]:
        """A pickled executor (a configuration saved whole) keeps what was read, without its lock."""
        return {key: value for key, value in self.__dict__.items() if key != "lock"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, lock=threading.Lock())

    def _list(self, dataset: str, filename: str, metadata: Any) -> None:
        if metadata or dataset not in self.metadata:  # every item of a dataset carries its metadata (or none)
            self.metadata[dataset] = user_metadata(metadata)
        files = self.listing.setdefault(dataset, [])
        if filename not in files:
            files.append(filename)

    def preprocessed(self, items: Iterable[Any], output: Any) -> None:
        """coffea's preprocessing call: its items are the files (FileMeta); those in the output opened."""
        opened = {(m.dataset, m.filename): m.metadata for m in (output or ()) if getattr(m, "metadata", None)}
        with self.lock:
            for item in items:
                self._list(item.dataset, item.filename, getattr(item, "metadata", None))
                metadata = opened.get((item.dataset, item.filename))
                if metadata is None:
                    why = "failed: coffea's preprocessing could not read it (skipbadfiles left it out)"
                    self.problems.setdefault(item.dataset, {})[item.filename] = why
                    continue
                uuid = metadata.get("uuid", b"")
                entries = metadata.get("numentries")
                self.described[item.filename] = (entries, {}, uuid.hex() if isinstance(uuid, bytes) else str(uuid))
                self.problems.get(item.dataset, {}).pop(item.filename, None)

    def plan(self, items: Iterable[Any]) -> None:
        """coffea's processing call: every chunk it was given."""
        with self.lock:
            for item in items:
                self._list(item.dataset, item.filename, item.usermeta)
                chunks = self.planned.setdefault((item.dataset, item.filename), set())
                chunks.add(chunk_name(item.entrystart, item.entrystop))

    def took(self, output: Any) -> Any:
        """The output with what its chunks read taken out (and kept here)."""
        read = output.pop(RUNNER_READ_KEY, None) if isinstance(output, dict) else None
        with self.lock:
            if isinstance(read, ChunksRead):
                self.read += read
            self.failure = None
        return output

    def failed(self, failure: BaseException) -> None:
        """The processing call raised: its chunks not read are named with why."""
        with self.lock:
            self.failure = failure

    def completeness(self) -> Completeness:
        """Per dataset: every file given, what was read of each (entries, generator weights), what failed."""
        with self.lock:
            stats: dict[str, dict] = {}
            for (dataset, filename), chunks in self.read.counts.items():
                stats.setdefault(dataset, {READ_KEY: {}})[READ_KEY][filename] = dict(chunks)
            known = {**self.described}
            known.update({f: facts for f, facts in self.read.facts.items() if facts[0] is not None})
            problems = {dataset: dict(files) for dataset, files in self.problems.items()}
            for (dataset, filename), chunks in self.planned.items():
                lost = chunks - set(self.read.counts.get((dataset, filename), {}))
                if lost and filename not in problems.get(dataset, {}):
                    problems.setdefault(dataset, {})[filename] = self._lost(len(lost), len(chunks))
            found = from_run(self.listing, stats, known, problems)
            for dataset, sample in found.items():
                sample.metadata = dict(self.metadata.get(dataset, {}))
            return found

    def _lost(self, lost: int, planned: int) -> str:
        if self.failure is not None:
            why = f"the Runner call raised {type(self.failure).__name__}"
            return f"failed: {lost} of its {planned} chunk(s) not read ({why})"
        return f"failed: {lost} of its {planned} chunk(s) not read (coffea's skipbadfiles gave them up)"
