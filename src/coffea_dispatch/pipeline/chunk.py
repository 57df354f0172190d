"""Processing one chunk (file, entry range): the function every executor maps over the work items.

Executors share coffea's `executor(items, function, accumulator)` call, so this is the one place that turns
a WorkItem into NanoEvents, runs the user's processor and reports what happened. A file that cannot be read
becomes a record in the result (not an exception), so one bad file neither hides a traceback in a worker
nor throws away the other chunks' work; the run decides at the end whether that is fatal.
"""

from __future__ import annotations

import multiprocessing
import shutil
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import uproot
from coffea.processor import ProcessorABC, accumulate
from coffea.processor.executor import WorkItem

from coffea_dispatch.dump.checkpoints import STAGED_OUTPUTS, Checkpoints, Published
from coffea_dispatch.dump.relocate import relocated
from coffea_dispatch.errors import BadInputFile, DispatchError, StalePlan
from coffea_dispatch.inputs.compat import build_events, file_uuid, fileuuid_metadata
from coffea_dispatch.inputs.files import (
    READ_ERRORS,
    branch_names,
    check_branch_names,
    derived,
    describe_error,
    file_in_use,
    is_stale_remote_handle,
    matching_branches,
    open_file,
    open_tree,
    register_replicas,
    retrying,
    served_by,
)
from coffea_dispatch.inputs.metadata_cache import chunk_name
from coffea_dispatch.inputs.planning import PLANNED_ENTRIES, FileTask, reading_digest
from coffea_dispatch.inputs.weights import ChunkCount, chunk_count
from coffea_dispatch.result_keys import FOLLOW_UP_KEY, READ_KEY

OUTPUT_KEY = "out"
STATS_KEY = "stats"
BAD_FILES_KEY = "bad_files"
FAILURES_KEY = "failures"
NOT_RUN_KEY = "not_run_after_failure"
ESCAPED_KEY = "escaped"  # path a processor wrote beside its output folder (`../x`) -> how many times: removed
WRITTEN_KEY = "written"  # dump-relative output path -> how many chunks wrote it (more than 1: overwritten)
TIMINGS_KEY = "timings"  # file -> "start-stop" -> seconds: the metadata cache keeps them to order the next run
DESCRIBED_KEY = "described"  # (sample, file) -> planning.Description, from the FileTask that described it
BAD_INPUTS_KEY = "bad_inputs"  # sample -> {(file, reason)}: FileTasks whose input cannot be used


def _shared_event():
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork").Event() if "fork" in methods else threading.Event()


# Set by the first chunk that fails for good; the other chunks then return at once. Shared with forked
# workers. Errors travel back as results, not exceptions, because coffea's FuturesExecutor prints a raw
# traceback for every exception it re-raises.
RUN_FAILED = _shared_event()


class ProcessorFailure(DispatchError):
    """The user's processor raised: keep its real traceback, name the chunk that triggers it."""

    exit_code = 1  # a failure in the user's code, not bad input

    def __init__(self, where: str, error: str, traceback_text: str, stage: str = "the workflow raised"):
        super().__init__(f"{stage} {error} on {where}")
        self.where = where
        self.error = error
        self.traceback_text = traceback_text
        self.stage = stage

    def __reduce__(self):
        return (type(self), (self.where, self.error, self.traceback_text, self.stage))


def describe_item(item: WorkItem) -> str:
    return f"{item.filename} (entries {item.entrystart}-{item.entrystop})"


def chunk_stats(item: WorkItem, seconds: float, replicas: dict[str, list[str]], count: ChunkCount) -> dict[str, Any]:
    """The chunk's numbers for the summary; READ_KEY keeps what it read of its file (entries, sum of generator
    weights or luminosity blocks) under its entry range, for the run's completeness."""
    stats = {"chunks": 1, "events": len(item), "files": {item.filename}, "seconds": seconds}
    stats[READ_KEY] = {item.filename: {chunk_name(item.entrystart, item.entrystop): count}}
    if item.filename in replicas:  # which replica served it (a set: accumulates by union over chunks)
        stats["served"] = {(item.filename, served_by(item.filename))}
    return {item.dataset: stats}


@dataclass
class ChunkRunner:
    """Picklable callable: `runner(work_item) -> accumulator`."""

    processor: ProcessorABC
    workflow: str
    schema: type
    timeout: float | None = None
    retries: int = 2  # further attempts at a remote file that failed to open or read
    replicas: dict[str, list[str]] = field(default_factory=dict)  # file -> its replicas, tried in order
    checkpoints: Checkpoints = field(default_factory=Checkpoints)  # with --dump: its ledger, for resume
    output_root: str | None = None  # the dump
    output_places: list = field(default_factory=list)  # where the processor keeps paths into it: then it is staged

    @property
    def input_branches(self):
        return getattr(self.processor, "input_branches", None)

    @property
    def required_branches(self):
        return tuple(getattr(self.processor, "required_branches", ()))

    def branch_selection(self, filename: str, tree) -> tuple[list[str] | None, list[str] | None]:
        """The branches to build events from and those to read in one bulk call (faster than one lazy read per
        branch), checked for the workflow's required ones: worked out once per open file, not per chunk."""
        memo = derived(filename)
        wanted = (self.input_branches, getattr(self.processor, "preload_branches", None), self.required_branches)
        key = ("branches", getattr(tree, "object_path", ""), repr(wanted), self.workflow)
        if key not in memo:
            names = branch_names(tree)
            present = set(names)
            check_branch_names(filename, present, self.required_branches, self.workflow)
            memo[key] = (matching_branches(names, self.input_branches), self._preload(tree, present))
        return memo[key]

    def check_planned(self, item: WorkItem, tree) -> None:
        """The open file must be the one the chunk was planned from: the same ROOT UUID and entry count. A plan
        made from a wrong cache entry, or of a file replaced since, never runs."""
        uuid, planned = file_uuid(tree).hex(), item.fileuuid
        planned = planned.hex() if isinstance(planned, bytes) else planned
        if planned and uuid != planned:
            raise StalePlan(item.filename, f"has ROOT UUID {uuid}, not {planned} as planned")
        entries = (item.usermeta or {}).get(PLANNED_ENTRIES)
        if entries is not None and entries != tree.num_entries:
            raise StalePlan(
                item.filename, f"has {tree.num_entries} entries, but the run was planned from a wrong count ({entries})"
            )

    def _preload(self, tree, present: set[str]) -> list[str] | None:
        wanted = getattr(self.processor, "preload_branches", None)
        if not wanted or not isinstance(tree, uproot.TTree):  # uproot preloads RNTuple fields differently
            return None
        return [name for name in wanted if name in present]

    def events(self, item: WorkItem):
        register_replicas(self.replicas)  # this may be a fresh worker process (Dask on a batch cluster)
        tree = open_tree(item.filename, item.treename, self.timeout)
        self.check_planned(item, tree)
        names, preload = self.branch_selection(item.filename, tree)
        metadata = {
            "dataset": item.dataset,
            "filename": item.filename,
            "treename": item.treename,
            "entrystart": item.entrystart,
            "entrystop": item.entrystop,
            "fileuuid": fileuuid_metadata(item.fileuuid),
            **{k: v for k, v in (item.usermeta or {}).items() if k != PLANNED_ENTRIES},
        }
        return build_events(
            open_file(item.filename, self.timeout),
            treename=item.treename,
            entry_start=item.entrystart,
            entry_stop=item.entrystop,
            schema=self.schema,
            metadata=metadata,
            branches=names,
            preload=preload,
        )

    def __call__(self, item: WorkItem | FileTask) -> dict[str, Any]:
        if RUN_FAILED.is_set():
            return {NOT_RUN_KEY: 1}
        if isinstance(item, FileTask):
            return self.run_file(item)
        try:
            return self.process(item)
        except DispatchError as exc:  # a processor bug, an output that cannot be written, ...
            RUN_FAILED.set()
            return {FAILURES_KEY: [exc]}

    def run_file(self, task: FileTask) -> dict[str, Any]:
        """Describe an input and run its first chunks while it is open; its other chunks are follow-ups."""
        description = task.describe()
        if isinstance(description, BadInputFile):
            if task.stop_on_bad:  # found before any of its chunks ran: the run stops as planning would have
                RUN_FAILED.set()
            return {BAD_INPUTS_KEY: {task.sample: {(task.filename, description.reason)}}}
        items = task.chunks(description)
        # what `check` expects of this input, before any of its chunks is recorded
        chunks = [(item.entrystart, item.entrystop) for item in items]
        digest = reading_digest(items[0]) if items else None  # as resume.input_identities records it
        identity = {**description.identity, "reading": digest} if digest else description.identity
        self.checkpoints.record_input(task.sample, task.filename, chunks, identity, description.totals)
        result: dict[str, Any] = {DESCRIBED_KEY: {(task.sample, task.filename): task.remember(description)}}
        for item in items[: task.chunks_here]:
            result = accumulate([self(item)], result)
        if items[task.chunks_here :]:
            result[FOLLOW_UP_KEY] = items[task.chunks_here :]
        return result

    def process(self, item: WorkItem) -> dict[str, Any]:
        started = time.perf_counter()
        try:  # a remote file that fails to open or read is tried again (--retries) before it counts as bad
            with file_in_use(item.filename):  # other threads of this worker must not close it meanwhile
                (output, count), published = retrying(item.filename, self.retries, lambda: self._process_staged(item))
        except BadInputFile as exc:
            return bad_file_result(item, exc.reason)
        seconds = time.perf_counter() - started
        result = {OUTPUT_KEY: output, STATS_KEY: chunk_stats(item, seconds, self.replicas, count)}
        result[TIMINGS_KEY] = {item.filename: {chunk_name(item.entrystart, item.entrystop): seconds}}
        if published.outputs:
            result[WRITTEN_KEY] = dict.fromkeys(published.outputs, 1)
        if published.escaped:
            result[ESCAPED_KEY] = dict.fromkeys(published.escaped, 1)
        # recorded here, in the worker: a crash of the main process loses no chunk
        self.checkpoints.record_chunk(item, result, published.outputs)
        return result

    def _process_staged(self, item: WorkItem) -> tuple[tuple[Any, ChunkCount], Published]:
        """Run the chunk; a processor writing into the dump writes into a private folder instead, whose files
        move into place only after it returned: no partial file under a final name, and the chunk's record
        lists exactly its files, whatever the processor names them (HiggsDNA: by partition key). Every path
        the processor keeps at or below the dump (`output_location`, or any attribute) is moved there."""
        staging = self.checkpoints.staging(item) if self.output_places else None
        if staging is None:
            return self._process_once(item, self.processor), Published()
        try:  # a copy per chunk: threads of one Dask worker share the original
            processor = relocated(self.processor, self.output_root, str(staging / STAGED_OUTPUTS), self.output_places)
            output = self._process_once(item, processor)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return output, self.checkpoints.publish(staging)

    def _process_once(self, item: WorkItem, processor: ProcessorABC) -> tuple[Any, ChunkCount]:
        """Build the chunk's events, count what it reads (before the processor: a read that fails here is the
        input's fault, and nothing is published yet) and run the processor; an unreadable file raises
        BadInputFile."""
        try:
            events = self.events(item)
            tree = open_tree(item.filename, item.treename, self.timeout)
            count = chunk_count(item.filename, tree, item.entrystart, item.entrystop)
        except DispatchError:  # an unreadable input, a stale plan: said as they are
            raise
        except READ_ERRORS as exc:
            raise BadInputFile(item.filename, read_failure(item, exc)) from None
        except Exception as exc:
            if is_stale_remote_handle(item.filename, exc):
                raise BadInputFile(item.filename, read_failure(item, exc)) from None
            raise ProcessorFailure(
                describe_item(item), describe_error(exc), traceback.format_exc(), "building NanoEvents raised"
            ) from None
        try:
            return processor.process(events), count
        except READ_ERRORS as exc:  # virtual arrays read the file lazily, inside process()
            raise BadInputFile(item.filename, read_failure(item, exc)) from None
        except DispatchError:
            raise
        except Exception as exc:
            if is_stale_remote_handle(item.filename, exc):
                raise BadInputFile(item.filename, read_failure(item, exc)) from None
            raise ProcessorFailure(describe_item(item), describe_error(exc), traceback.format_exc()) from None


def read_failure(item: WorkItem, exc: BaseException) -> str:
    return f"read failed at entries {item.entrystart}-{item.entrystop} ({describe_error(exc)})"


def bad_file_result(item: WorkItem, reason: str) -> dict[str, Any]:
    """A set of (file, reason): merging results of several chunks of one bad file keeps one entry each."""
    return {BAD_FILES_KEY: {item.dataset: {(item.filename, reason)}}}
