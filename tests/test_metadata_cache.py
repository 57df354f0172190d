"""The metadata cache: a second plan over the same inputs reads none of them; a replaced file is never
described by its old entry; a damaged, unwritable or shared cache costs time, never correctness."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import shutil
from pathlib import Path

import pytest
import uproot

from coffea_dispatch.cli import main
from coffea_dispatch.dump.check import check_dump
from coffea_dispatch.errors import MissingBranch
from coffea_dispatch.inputs import describe
from coffea_dispatch.inputs.files import forget_file, local_identity
from coffea_dispatch.inputs.metadata_cache import FileMetadata, MetadataCache, branches_digest
from coffea_dispatch.inputs.planning import plan_chunks
from coffea_dispatch.synthetic.generator import SampleSpec, make_sample
from conftest import many_inputs, read_rows, write_analysis
from helpers import assert_same_rows, run_analysis_with

MANY = 200
REQUIRED = ("Photon_pt",)


@pytest.fixture
def opens(monkeypatch) -> list[str]:
    """Every file that uproot opens in this process, and every TTree planning reads."""
    calls: list[str] = []
    original_open, original_tree = uproot.open, describe.open_tree

    def counting_open(path, *args, **kwargs):
        calls.append(str(next(iter(path)) if isinstance(path, dict) else path))
        return original_open(path, *args, **kwargs)

    def counting_tree(filename, *args, **kwargs):
        calls.append(f"tree:{filename}")
        return original_tree(filename, *args, **kwargs)

    monkeypatch.setattr(uproot, "open", counting_open)
    monkeypatch.setattr(describe, "open_tree", counting_tree)
    return calls


@pytest.fixture(scope="module")
def many_files(tmp_path_factory) -> dict[str, list[str]]:
    """MANY distinct input files (copies of two generated files, each with its own ROOT UUID)."""
    return {"Many": many_inputs(tmp_path_factory.mktemp("many"), MANY, 2000, 60)}


def plan(samples, cache: MetadataCache, **options):
    for filename in (f for files in samples.values() for f in files):
        forget_file(filename)  # as in a new process: nothing open yet
    return plan_chunks(samples, chunksize=1000, required_branches=REQUIRED, cache=cache, **options)


@pytest.mark.slow
def test_a_second_plan_over_200_files_opens_none_of_them(many_files, tmp_path, opens):
    first = plan(many_files, MetadataCache(tmp_path / "cache"))
    assert len([c for c in opens if c.startswith("tree:")]) == MANY and first.from_cache == 0
    opens.clear()
    second = plan(many_files, MetadataCache(tmp_path / "cache"))
    assert opens == [] and second.from_cache == MANY
    assert second.items == first.items  # same chunks, same file UUIDs
    assert second.identities == first.identities


def test_a_replaced_file_is_described_again(tmp_path, opens):
    path = make_sample(tmp_path / "in" / "File.root", SampleSpec(events=3000, seed=70))
    samples = {"S": [str(path)]}
    cache = tmp_path / "cache"
    before = plan(samples, MetadataCache(cache))
    make_sample(path, SampleSpec(events=2500, seed=71))
    opens.clear()
    after = plan(samples, MetadataCache(cache))
    assert f"tree:{path}" in opens and after.from_cache == 0
    assert (before.entries[str(path)], after.entries[str(path)]) == (3000, 2500)
    assert after.items[0].fileuuid != before.items[0].fileuuid


def test_a_damaged_entry_is_ignored_and_rewritten(tmp_path, opens):
    path = make_sample(tmp_path / "File.root", SampleSpec(events=1000, seed=72))
    samples = {"S": [str(path)]}
    cache = MetadataCache(tmp_path / "cache")
    plan(samples, cache)
    (entry,) = (tmp_path / "cache").glob("files/*/*.json")
    entry.write_text('{"file": "trunc')
    assert plan(samples, MetadataCache(tmp_path / "cache")).from_cache == 0
    assert json.loads(entry.read_text())["entries"] == 1000
    assert plan(samples, MetadataCache(tmp_path / "cache")).from_cache == 1


def test_a_missing_branch_is_reported_from_the_cache_too(tmp_path):
    path = make_sample(tmp_path / "File.root", SampleSpec(events=1000, seed=73))
    samples = {"S": [str(path)]}
    messages = []
    for _ in range(2):
        with pytest.raises(MissingBranch) as error:
            cache = MetadataCache(tmp_path)
            plan_chunks(samples, chunksize=1000, required_branches=("NotABranch_pt",), workflow="w", cache=cache)
        messages.append(error.value.message)
    assert messages[0] == messages[1] and "NotABranch_pt" in messages[0]


@pytest.mark.slow
def test_an_unwritable_cache_is_skipped_and_no_cache_writes_nothing(tmp_path, generated, capsys):
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder should be")
    analysis = write_analysis(tmp_path / "config", generated)
    base = ["run", "--json-analysis", str(analysis), "--no-progress", "--no-plot", "--executor", "iterative"]
    assert main([*base, "--dump", str(tmp_path / "a"), "--metadata-cache", str(blocked)]) == 0
    assert (
        main([*base, "--dump", str(tmp_path / "b"), "--metadata-cache", str(tmp_path / "c"), "--no-metadata-cache"])
        == 0
    )
    assert not (tmp_path / "c").exists()
    assert main([*base, "--dump", str(tmp_path / "d"), "--metadata-cache", str(tmp_path / "e")]) == 0
    assert main([*base, "--dump", str(tmp_path / "f"), "--metadata-cache", str(tmp_path / "e")]) == 0
    assert "of 3 input file(s) came from the metadata cache" in " ".join(capsys.readouterr().out.split())


def _hammer(folder: str, number: int, barrier) -> None:
    cache = MetadataCache(Path(folder))
    names = [f"branch_{i}" for i in range(500)]
    barrier.wait()
    for round_number in range(50):
        entries = 1000 + round_number
        metadata = FileMetadata(entries, "ab" * 16, branches_digest(names), {"size": 1, "mtime_ns": 2}, {})
        cache.store("/shared/file.root", "Events", metadata, names)
        found = cache.lookup("/shared/file.root", "Events", {"size": 1, "mtime_ns": 2})
        if found is None or not 1000 <= found.entries < 1050 or cache.branch_names(found.branches) != set(names):
            os._exit(1)  # a partial or mixed entry was seen
    os._exit(0)


def test_runs_sharing_the_cache_never_see_a_partial_entry(tmp_path):
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(4)
    processes = [context.Process(target=_hammer, args=(str(tmp_path), n, barrier)) for n in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
    assert [p.exitcode for p in processes] == [0, 0, 0, 0]
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def test_a_remote_file_replaced_at_the_same_url_is_described_again(xrootd, tmp_path, opens):
    """A remote file has no cheap size and mtime: its ROOT UUID, from the file's header, decides."""
    first = make_sample(tmp_path / "first.root", SampleSpec(events=1500, seed=74))
    url = xrootd.add(first, name="replaced.root")
    samples = {"Remote": [url]}
    cache = tmp_path / "cache"
    before = plan(samples, MetadataCache(cache))
    opens.clear()
    again = plan(samples, MetadataCache(cache))
    assert again.from_cache == 1 and f"tree:{url}" not in opens  # only the header was read
    xrootd.add(make_sample(tmp_path / "second.root", SampleSpec(events=1200, seed=75)), name="replaced.root")
    after = plan(samples, MetadataCache(cache))
    assert after.from_cache == 0 and (before.entries[url], after.entries[url]) == (1500, 1200)


@pytest.mark.slow
def test_futures_planning_reads_every_input_on_the_workers_not_in_the_main_process(many_files, tmp_path, opens):
    """Cold cache, 200 inputs: the main process stats them; the workers read them (in parallel) and process."""
    from coffea_dispatch.pipeline.run import RunOptions, run_analysis

    analysis = write_analysis(tmp_path, many_files)
    options = RunOptions(
        json_analysis=str(analysis),
        executor="futures",
        workers=2,
        chunk=2000,
        progress=False,
        plot=False,
        metadata_cache=str(tmp_path / "cache"),
    )
    result = run_analysis(options)
    assert opens == []  # the forked workers opened them; their counts stay in their own memory
    assert result.events == MANY * 2000 and result.samples["Many"].files == MANY
    assert plan(many_files, MetadataCache(tmp_path / "cache")).from_cache == MANY  # the workers cached them


def _replace_keeping_size_and_mtime(path: Path, replacement: Path) -> None:
    """What `cp -p`, `rsync -a` or `touch -r` can do: another file at `path` with its size and mtime. The
    smaller file is padded (bytes past a ROOT file's end are never read)."""
    before = path.stat()
    data = replacement.read_bytes()
    assert len(data) <= before.st_size
    path.write_bytes(data + b"\0" * (before.st_size - len(data)))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def test_another_file_with_the_same_size_and_mtime_is_described_again(tmp_path):
    """Before, the stale entry planned 24,000 entries of a 20,000-event file: a new dump read the wrong chunks
    without a word, and a rerun into the old dump kept the old file's rows."""
    bigger = make_sample(tmp_path / "bigger.root", SampleSpec(events=24_000, seed=80))
    smaller = make_sample(tmp_path / "smaller.root", SampleSpec(events=20_000, seed=81))
    path = tmp_path / "in" / "File.root"
    path.parent.mkdir()
    shutil.copy2(bigger, path)
    analysis = write_analysis(tmp_path / "job", {"S": [str(path)]})
    cached = {"chunk": 5000, "metadata_cache": str(tmp_path / "cache")}
    assert run_analysis_with(analysis, tmp_path / "old", **cached).events == 24_000
    _replace_keeping_size_and_mtime(path, smaller)
    fresh = run_analysis_with(analysis, tmp_path / "fresh", **cached)
    rerun = run_analysis_with(analysis, tmp_path / "old", **cached)
    reference = run_analysis_with(analysis, tmp_path / "reference", chunk=5000, use_metadata_cache=False)
    assert fresh.events == rerun.events == reference.events == 20_000
    assert any("changed since the earlier run" in note for note in rerun.notes)
    for dump in ("fresh", "old"):
        assert_same_rows(read_rows(tmp_path / dump, "S"), read_rows(tmp_path / "reference", "S"))
        assert check_dump(tmp_path / dump)["S"].ok


WRONG_VALUES = {
    "entries as text": {"entries": "abc"},
    "negative entries": {"entries": -1},
    "entries beyond any file": {"entries": 10**15},
    "a tenth of the entries": {"entries": 100},
    "a bool": {"entries": True},
    "UUID not hex": {"uuid": "not-a-uuid"},
    "another file's UUID": {"uuid": "ab" * 16},
    "branches digest damaged": {"branches": "x"},
    "size as text": {"identity": {"size": "big"}},
    "another file": {"file": "/elsewhere.root"},
}


@pytest.mark.parametrize("change", WRONG_VALUES.values(), ids=WRONG_VALUES.keys())
def test_a_cache_entry_with_wrong_values_is_never_trusted(tmp_path, change):
    """Valid JSON, wrong values: before, a traceback, 0 or a tenth of the events, or 24 GB of chunks."""
    path = make_sample(tmp_path / "File.root", SampleSpec(events=1000, seed=76))
    samples = {"S": [str(path)]}
    plan(samples, MetadataCache(tmp_path / "cache"))
    (entry,) = (tmp_path / "cache").glob("files/*/*.json")
    content = json.loads(entry.read_text())
    entry.write_text(json.dumps({**content, **change}))
    again = plan(samples, MetadataCache(tmp_path / "cache"))
    assert again.from_cache == 0 and again.entries[str(path)] == 1000 and len(again.items) == 1
    assert plan(samples, MetadataCache(tmp_path / "cache")).from_cache == 1  # rewritten, and good


def test_a_wrong_entry_that_passes_its_checks_is_caught_where_the_file_is_opened(tmp_path, generated, capsys):
    """A well-formed entry with a wrong entry count (what a bug, or a file rewritten under a live run, could
    leave): the worker that opens the file refuses the chunk in one line and drops the entry; the rerun is
    right."""
    analysis = write_analysis(tmp_path / "job", {"Signal": generated["Signal"]})
    cache = MetadataCache(tmp_path / "cache")
    (good,) = plan({"Signal": generated["Signal"]}, cache).identities.values()
    filename = generated["Signal"][0]
    right = cache.lookup(filename, "Events", local_identity(filename))
    names = cache.branch_names(right.branches)
    cache.store(filename, "Events", dataclasses.replace(right, entries=right.entries // 10), sorted(names))
    command = ["run", "--json-analysis", str(analysis), "--dump", str(tmp_path / "out"), "--no-progress", "--no-plot"]
    command += ["--chunk", "5000", "--metadata-cache", str(tmp_path / "cache"), "--executor", "futures", "-j", "2"]
    capsys.readouterr()
    assert main(command) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "planned from a wrong count (5000)" in err and filename in err, err
    assert cache.lookup(filename, "Events", local_identity(filename)) is None  # dropped
    assert main(command) == 0
    reference = run_analysis_with(analysis, tmp_path / "reference", chunk=5000, use_metadata_cache=False)
    assert reference.events == good["entries"]
    assert_same_rows(read_rows(tmp_path / "out", "Signal"), read_rows(tmp_path / "reference", "Signal"))
