"""Dask at cluster scale: threads of one worker sharing open files, follow-up chunks that start while other
FileTasks still run (no barrier between rounds), one performance report for the whole run."""

from __future__ import annotations

import contextlib
import re

import pytest
from coffea.processor.executor import WorkItem

from coffea_dispatch.inputs import files as inputs
from coffea_dispatch.inputs.files import MAX_OPEN_FILES, file_in_use, open_tree
from coffea_dispatch.inputs.metadata_cache import MetadataCache
from coffea_dispatch.inputs.ordering import slowest_first
from coffea_dispatch.inputs.planning import PLANNED_ENTRIES, FileTask
from conftest import many_inputs, read_rows, write_analysis
from helpers import SMALL_CHUNK, assert_same_rows
from helpers import run_analysis_with as run
from user_processors import CHUNK_LOG, SLOW_CHUNK


@pytest.fixture
def inputs_closed_after():
    yield
    for name in list(inputs._open_files):
        inputs.forget_file(name)


def test_a_file_one_thread_reads_stays_open_while_others_are_opened(tmp_path, inputs_closed_after):
    """The reproducer of the crash with threaded Dask workers, in one thread: open f0, open MAX_OPEN_FILES more,
    read f0. The cache closed f0 under its reader; now a file in use is never closed: the cache holds more
    than its bound while more files are read at once, and shrinks back once they are not."""
    files = many_inputs(tmp_path, MAX_OPEN_FILES + 1, events=2_000, seed=5)
    with file_in_use(files[0]):
        first = open_tree(files[0])
        for other in files[1:]:
            with file_in_use(other):
                open_tree(other)
        assert len(first.arrays(["event"])) == 2_000  # "file ... is closed" before the fix
    assert len(inputs._open_files) == MAX_OPEN_FILES
    with contextlib.ExitStack() as readers:  # as many threads as files: all stay open, beyond the bound
        for filename in files:
            readers.enter_context(file_in_use(filename))
            open_tree(filename)
        assert len(inputs._open_files) == MAX_OPEN_FILES + 1
    assert len(inputs._open_files) == MAX_OPEN_FILES


def test_a_file_forgotten_while_read_is_closed_by_its_last_reader(tmp_path, inputs_closed_after):
    """A retry forgets a file (to reopen it) while another thread still reads it: that reader goes on."""
    (filename,) = many_inputs(tmp_path, 1, events=2_000, seed=6)
    with file_in_use(filename):
        tree = open_tree(filename)
        inputs.forget_file(filename)
        reopened = open_tree(filename)
        assert reopened is not tree
        assert len(tree.arrays(["event"])) == 2_000
    assert filename not in inputs._retired


@pytest.mark.slow
def test_threaded_dask_worker_reading_more_files_than_the_cache_holds(tmp_path):
    """One Dask worker with 8 threads over 20 files (the cache keeps 8): the rows of the iterative run."""
    samples = {"Signal": many_inputs(tmp_path / "inputs", 20, events=12_000, seed=11)}
    analysis = write_analysis(tmp_path, samples)
    run(analysis, tmp_path / "iterative", "iterative", chunk=4_000)
    run(analysis, tmp_path / "dask", "dask/local", chunk=4_000, scaleout=1, workers=8, use_metadata_cache=False)
    assert_same_rows(read_rows(tmp_path / "dask", "Signal"), read_rows(tmp_path / "iterative", "Signal"))


def _chunk_log(path):
    rows = [line.split() for line in path.read_text().splitlines()]
    return [(f, int(start), int(stop), float(began), float(ended)) for f, start, stop, began, ended in rows]


@pytest.mark.slow
def test_follow_ups_start_before_the_slowest_file_task_returns(generated, tmp_path, monkeypatch):
    """Two new files, one whose first chunk takes 4 s: the other file's chunks run meanwhile on the idle threads,
    instead of in a second round after the slow FileTask; and the performance report names every task of the
    run."""
    slow, fast = generated["Signal"][0], generated["Background"][0]
    log, report = tmp_path / "chunks.log", tmp_path / "report.html"
    monkeypatch.setenv(CHUNK_LOG, str(log))
    monkeypatch.setenv(SLOW_CHUNK, f"{slow.rsplit('/', 1)[1]} 4")
    analysis = write_analysis(tmp_path, {"Slow": [slow], "Fast": [fast]}, workflow="user_processors:SlowFirstChunk")
    options = {"chunk": SMALL_CHUNK, "use_metadata_cache": False, "dask_report": str(report)}
    result = run(analysis, tmp_path / "dask", "dask/local", scaleout=1, workers=4, **options)
    chunks = _chunk_log(log)
    slow_first = next(c for c in chunks if c[0] == slow and c[1] == 0)
    fast_follow_ups = [c for c in chunks if c[0] == fast and c[1] > 0]
    assert len(fast_follow_ups) >= 2
    assert max(c[4] for c in fast_follow_ups) < slow_first[4], "the fast file's other chunks waited for the slow one"
    text = report.read_text()
    tasks = set(re.findall(r"\b(chunk|file)-([0-9a-f]{8})-(\d+)\b", text))
    n_chunks = result.samples["Slow"].chunks + result.samples["Fast"].chunks
    assert sum(kind == "file" for kind, *_ in tasks) == 2
    # two new files on four threads: each FileTask only described its file, and every chunk was a task of its own
    assert sum(kind == "chunk" for kind, *_ in tasks) == n_chunks


def _chunk(filename: str, start: int, stop: int, entries: int) -> WorkItem:
    return WorkItem("S", filename, "Events", start, stop, b"", {PLANNED_ENTRIES: entries})


def test_the_queue_starts_with_what_took_longest_last_time(tmp_path):
    """Chunks timed at more than twice the typical one first; then new files, biggest first; then the other
    chunks file by file (the file of most work first), each file's slowest first."""
    cache = MetadataCache(tmp_path / "cache")
    cache.store_chunk_seconds("Events", {"a.root": {"0-100": 1.0, "100-200": 30.0}, "b.root": {"0-100": 2.0}})
    chunks = [_chunk("a.root", 0, 100, 200), _chunk("a.root", 100, 200, 200), _chunk("b.root", 0, 100, 100)]
    chunks += [_chunk("c.root", 0, 50, 100), _chunk("c.root", 50, 100, 100)]  # never timed: estimated, 4.4 s each
    small, big = (FileTask("S", f, {"size": n}, None, 100, 1) for f, n in (("d.root", 10), ("e.root", 99)))
    order = slowest_first([small, big], chunks, cache)
    assert [(i.filename, getattr(i, "entrystart", None)) for i in order] == [
        ("a.root", 100),
        ("e.root", None),
        ("d.root", None),
        ("c.root", 0),
        ("c.root", 50),
        ("b.root", 0),
        ("a.root", 0),
    ]


def test_without_timings_bigger_files_and_files_of_more_chunks_come_first(tmp_path):
    chunks = [_chunk("small.root", 0, 10, 10), _chunk("big.root", 0, 10, 30), _chunk("big.root", 10, 20, 30)]
    order = slowest_first([], chunks, MetadataCache(None))
    assert [(i.filename, i.entrystart) for i in order] == [("big.root", 0), ("big.root", 10), ("small.root", 0)]


def test_a_run_times_every_chunk_for_the_next_one(generated, tmp_path):
    analysis = write_analysis(tmp_path, {"Signal": generated["Signal"]})
    result = run(analysis, None, "iterative", chunk=SMALL_CHUNK, metadata_cache=str(tmp_path / "cache"))
    cache = MetadataCache(tmp_path / "cache")
    timed = [cache.chunk_seconds(f, "Events") for f in generated["Signal"]]
    assert sum(len(t) for t in timed) == result.samples["Signal"].chunks
    assert all(seconds > 0 for t in timed for seconds in t.values())


def test_the_last_chunks_are_the_shortest_whatever_their_file(tmp_path):
    cache = MetadataCache(tmp_path / "cache")
    cache.store_chunk_seconds("Events", {"a.root": {"0-10": 5.0, "10-20": 1.0}, "b.root": {"0-10": 4.0, "10-20": 3.0}})
    chunks = [_chunk(f, start, start + 10, 20) for f in ("a.root", "b.root") for start in (0, 10)]
    file_by_file = slowest_first([], chunks, cache, slots=1)
    # b.root (7 s of work) before a.root (6 s); the last two chunks (two waves of one slot): slowest first
    assert [(c.filename, c.entrystart) for c in file_by_file] == [
        ("b.root", 0),
        ("b.root", 10),
        ("a.root", 0),
        ("a.root", 10),
    ]
    two_slots = slowest_first([], chunks, cache, slots=2)  # the last 4: all of them, slowest first
    assert [(c.filename, c.entrystart) for c in two_slots] == [
        ("a.root", 0),
        ("b.root", 0),
        ("b.root", 10),
        ("a.root", 10),
    ]
