"""Planning pipelined with processing: an input no earlier run described is read by the worker that then runs
its chunks (one open per file), processing starts with the first file described, a file of many chunks hands
the rest to every worker, and the main process keeps a bounded number of chunks in flight."""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from pathlib import Path

import awkward as ak
import pytest
import uproot
from coffea.processor.executor import WorkItem

from coffea_dispatch.executors import FOLLOW_UP_KEY, KILLED_KEY
from coffea_dispatch.executors.local import IN_FLIGHT_PER_WORKER, PoolExecutor, Worker, WorkerSet
from coffea_dispatch.inputs.compat import LEGACY_COFFEA
from coffea_dispatch.pipeline.run import RunOptions, run_analysis
from coffea_dispatch.synthetic.generator import SampleSpec, make_sample
from conftest import many_inputs, write_analysis

N_FILES = 12


@pytest.fixture(scope="module")
def one_chunk_files(tmp_path_factory) -> dict[str, list[str]]:
    """N_FILES distinct small files (real copies of two generated ones), one chunk each."""
    return {"Inputs": many_inputs(tmp_path_factory.mktemp("pipeline"), N_FILES, 3000, 90)}


@pytest.fixture
def open_log(monkeypatch, tmp_path) -> Path:
    """Every uproot.open, in this process and in the workers forked from it, as a line `pid file`."""
    log = tmp_path / "opens.log"
    original = uproot.open

    def logging_open(path, *args, **kwargs):
        name = next(iter(path)) if isinstance(path, dict) else path
        with open(log, "a") as sink:
            sink.write(f"{os.getpid()} {name}\n")
        return original(path, *args, **kwargs)

    monkeypatch.setattr(uproot, "open", logging_open)
    return log


def run_futures(analysis: Path, tmp_path: Path, **options) -> object:
    settings = {"executor": "futures", "workers": 2, "progress": False, "plot": False, **options}
    return run_analysis(RunOptions(json_analysis=str(analysis), metadata_cache=str(tmp_path / "cache"), **settings))


@pytest.mark.slow
def test_each_input_is_opened_once_and_never_by_the_main_process(one_chunk_files, tmp_path, open_log):
    analysis = write_analysis(tmp_path / "config", one_chunk_files)
    result = run_futures(analysis, tmp_path, dump=str(tmp_path / "dump"))
    assert result.events == N_FILES * 3000
    opened = [line.split(" ", 1) for line in open_log.read_text().splitlines()]
    assert sorted(name for _, name in opened) == sorted(one_chunk_files["Inputs"])  # each exactly once
    assert str(os.getpid()) not in {pid for pid, _ in opened}


@pytest.mark.slow
def test_processing_starts_before_every_input_is_described(one_chunk_files, tmp_path):
    analysis = write_analysis(tmp_path / "config", one_chunk_files)
    dump = tmp_path / "dump"
    run_futures(analysis, tmp_path, dump=str(dump))
    ledger = dump / ".coffea-dispatch"
    first_chunk_done = min(p.stat().st_mtime_ns for p in ledger.glob("chunks/*/*.done"))
    last_input_described = max(p.stat().st_mtime_ns for p in ledger.glob("files/*/*.json"))
    assert first_chunk_done < last_input_described
    assert len(list(ledger.glob("files/*/*.json"))) == N_FILES  # and each input's plan is on record


def test_a_file_of_many_chunks_hands_its_other_chunks_to_every_worker(generated, tmp_path):
    """One input, 10 chunks, 2 workers: the worker that described it runs one chunk and hands back the rest."""
    analysis = write_analysis(
        tmp_path / "config", {"Signal": generated["Signal"]}, workflow="user_processors:ReportsProxy"
    )
    result = run_futures(analysis, tmp_path, chunk=5000)
    assert result.samples["Signal"].chunks == 10 and result.events == 50_000
    assert len(result.accumulator["pids"]) == 2


@pytest.mark.slow
def test_a_warm_cache_plans_in_the_main_process_and_opens_each_input_once(one_chunk_files, tmp_path, open_log):
    analysis = write_analysis(tmp_path / "config", one_chunk_files)
    run_futures(analysis, tmp_path, dump=str(tmp_path / "first"))
    open_log.unlink()
    result = run_futures(analysis, tmp_path, dump=str(tmp_path / "second"))
    assert any(f"{N_FILES} input file(s) came from the metadata cache" in note for note in result.notes)
    opened = [line.split(" ", 1)[1] for line in open_log.read_text().splitlines()]
    assert sorted(opened) == sorted(one_chunk_files["Inputs"])


@pytest.fixture
def pool():
    """Two forked workers at most, stopped after the test."""
    workers = WorkerSet(limit=2)
    yield workers
    workers.stop()


def _count(item: int) -> dict:
    return {"count": 1, "sum": item}


def _split(item: int) -> dict:
    """Items below 10 hand back ten follow-ups each (10 * item ... 10 * item + 9), as a FileTask does."""
    if item < 10:
        return {"count": 1, "sum": item, FOLLOW_UP_KEY: list(range(10 * item + 10, 10 * item + 20))}
    return {"count": 1, "sum": item}


def test_the_pool_executor_keeps_a_bounded_number_of_items_in_flight(pool, monkeypatch):
    peak = [0]
    send = Worker.send

    def counting_send(worker, token, item):
        send(worker, token, item)
        peak[0] = max(peak[0], sum(len(w.running) for w in pool.workers))

    monkeypatch.setattr(Worker, "send", counting_send)
    result = PoolExecutor(pool, status=False)(range(1000), _count, {})
    assert result == {"count": 1000, "sum": sum(range(1000))}
    assert peak[0] <= IN_FLIGHT_PER_WORKER * 2


def test_the_pool_executor_runs_follow_up_items_in_the_same_call(pool):
    result = PoolExecutor(pool, status=False)(range(3), _split, {})
    follow_ups = [i for item in range(3) for i in range(10 * item + 10, 10 * item + 20)]
    assert result == {"count": 3 + len(follow_ups), "sum": sum(range(3)) + sum(follow_ups)}


@pytest.mark.slow
@pytest.mark.skipif(LEGACY_COFFEA, reason="coffea 0.7 builds the form without type names (compat._legacy_events)")
def test_events_ask_only_the_branches_they_read_for_type_names(tmp_path, monkeypatch):
    """coffea 2025+'s from_root would ask every branch of a wide file for its type name; the events are the same."""
    from uproot.behaviors.TBranch import HasBranches

    from coffea_dispatch.higgsdna.diphoton import DiphotonNanoAODSchema, DiphotonProcessor
    from coffea_dispatch.inputs.describe import FileDescriber
    from coffea_dispatch.inputs.files import forget_file
    from coffea_dispatch.pipeline.chunk import ChunkRunner

    wide = str(make_sample(tmp_path / "wide.root", SampleSpec(events=500, seed=3, extra_branches=600)))
    runner = ChunkRunner(DiphotonProcessor(), "base", DiphotonNanoAODSchema)
    entries, uuid, _, _ = FileDescriber("Events")(wide)["described"][wide]
    item = WorkItem("Wide", wide, "Events", 0, entries, bytes.fromhex(uuid))
    expected = runner.events(item)
    forget_file(wide)  # as a worker that has just opened it
    monkeypatch.setattr(HasBranches, "typenames", lambda *a, **k: pytest.fail("every branch's type name was read"))
    events = runner.events(item)
    assert events.fields == expected.fields
    assert ak.to_list(events.Photon.pt) == ak.to_list(expected.Photon.pt)


def test_tree_metadata_is_read_with_the_garbage_collector_paused(generated, monkeypatch):
    """Reading a wide TTree makes ~50 objects per branch and no garbage: the collector must not walk the heap
    (every other open file's tree) again and again meanwhile; it is back on afterwards."""
    import gc

    from uproot.reading import ReadOnlyDirectory

    from coffea_dispatch.inputs.files import forget_file, open_tree

    collector_on: list[bool] = []
    original = ReadOnlyDirectory.__getitem__

    def noting(self, where):
        collector_on.append(gc.isenabled())
        return original(self, where)

    monkeypatch.setattr(ReadOnlyDirectory, "__getitem__", noting)
    filename = generated["Signal"][0]
    forget_file(filename)
    assert open_tree(filename).num_entries == 50_000
    assert collector_on and not any(collector_on)
    assert gc.isenabled()


def test_a_worker_killed_while_idle_is_replaced_and_nothing_is_lost(pool):
    executor = PoolExecutor(pool, status=False)
    assert executor(range(4), _count, {}) == {"count": 4, "sum": 6}
    os.kill(pool.workers[0].pid, signal.SIGKILL)
    time.sleep(0.5)
    result = executor(range(100), _count, {})
    result.pop(KILLED_KEY, None)  # if its pipe still took an item, that item was retried
    assert result == {"count": 100, "sum": sum(range(100))}


FORKS = [0]
os.register_at_fork(after_in_parent=lambda: FORKS.__setitem__(0, FORKS[0] + 1))


def test_futures_forks_no_more_workers_than_there_is_work_for(tmp_path):
    """-j 40, cold metadata cache, one file of 2 chunks: before, 40 processes were forked for 2 chunks."""
    path = make_sample(tmp_path / "File.root", SampleSpec(events=20_000, seed=91))
    analysis = write_analysis(tmp_path, {"S": [str(path)]})
    options = RunOptions(json_analysis=str(analysis), executor="futures", workers=40, chunk=10_000)
    before = FORKS[0]
    result = run_analysis(dataclasses.replace(options, progress=False, plot=False, use_metadata_cache=False))
    assert result.events == 20_000 and 1 <= result.workers <= 2
    assert FORKS[0] - before == result.workers
