"""`check` and `resubmit` say what a failure is: a dump an interrupted run left is incomplete, not damaged (exit
0 without --strict), its missing chunks are a few lines per input file, `--unprocessed` with nothing left writes
nothing and is no error, and a job whose processor raised names the `resubmit --force` that reruns it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
from pathlib import Path

import pytest
import uproot
from coffea import processor
from coffea.nanoevents import BaseSchema

import coffea_dispatch
from coffea_dispatch.cli import main
from coffea_dispatch.dump.check import SampleCheck, check_dump
from coffea_dispatch.dump.coffea_form import runner_items
from coffea_dispatch.dump.ledger import chunk_key, chunk_record, read_marker
from coffea_dispatch.higgsdna.diphoton import DiphotonProcessor
from coffea_dispatch.output import LEDGER, owned_name
from coffea_dispatch.pipeline import report
from coffea_dispatch.synthetic.generator import SampleSpec, make_sample
from conftest import TESTS, write_analysis
from helpers import only_submission
from runner_processors import EveryEventOnce

CHUNK = 100
EVENTS = 300  # three chunks per file
SHOWN = 10  # report.SHOWN: input files `check` names one by one
FILES = SHOWN + 2
FILE_LINE = re.compile(r"not written \(Many\) \S+/Many_\d\d\.root: entries (.+) not written \((\d) chunks\)")
REST_LINE = re.compile(r"not written: and 2 more files \((\d) chunks\); check --unprocessed OUT.json lists them all")


class CtrlCOnSecondChunk(DiphotonProcessor):
    """The base workflow, stopped by Ctrl-C while the second chunk runs (in-process executor; which chunk comes
    second differs between coffea generations): one chunk recorded, with the plans of every input."""

    started = 0

    def process(self, events):
        CtrlCOnSecondChunk.started += 1
        if CtrlCOnSecondChunk.started == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return super().process(events)


@pytest.fixture(scope="module")
def many(tmp_path_factory) -> dict[str, list[str]]:
    folder = tmp_path_factory.mktemp("many")
    files = [make_sample(folder / f"Many_{i:02d}.root", SampleSpec(events=EVENTS, seed=60 + i)) for i in range(FILES)]
    return {"Many": [str(f) for f in files]}


def run(analysis: Path, dump: Path) -> int:
    command = ["run", "--json-analysis", str(analysis), "--dump", str(dump), "--chunk", str(CHUNK)]
    return main([*command, "--executor", "iterative", "--no-progress", "--no-plot"])


@pytest.fixture(scope="module")
def interrupted(many, complete, tmp_path_factory) -> Path:
    """A dump whose run was interrupted by Ctrl-C after its first chunk: incomplete, nothing damaged. The inputs
    are known (the metadata cache, from `complete`), so the run planned every one of them before it started."""
    folder = tmp_path_factory.mktemp("interrupted")
    dump = folder / "out"
    assert run(write_analysis(folder, many, workflow="test_check_command:CtrlCOnSecondChunk"), dump) == 130
    return dump


@pytest.fixture(scope="module")
def complete(many, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("complete")
    assert run(write_analysis(folder, many), folder / "out") == 0
    return folder / "out"


def said(capsys) -> str:
    return " ".join(capsys.readouterr().out.split())


def test_an_interrupted_dump_is_incomplete_not_damaged(interrupted, capsys):
    """Before: exit 1 without --strict, as for a damaged dump (its chunks not run counted as missing outputs)."""
    assert main(["check", str(interrupted)]) == 0
    out = said(capsys)
    assert f"incomplete, not damaged: {3 * FILES - 1} chunk(s) not written yet" in out, out
    assert main(["check", str(interrupted), "--strict"]) == 1
    (check,) = check_dump(interrupted).values()
    assert (check.planned, check.complete, len(check.missing)) == (3 * FILES, 1, 3 * FILES - 1)
    assert not check.damaged and not check.ok


def test_damage_in_an_interrupted_dump_still_exits_1(interrupted, tmp_path, capsys):
    """An output damaged since it was written, or a file no chunk wrote: damage, with or without --strict."""
    for damage in ("truncated", "unexpected"):
        dump = tmp_path / damage
        shutil.copytree(interrupted, dump, symlinks=True)
        (output,) = sorted((dump / "Many").rglob("*.parquet"))
        if damage == "truncated":
            output.write_bytes(output.read_bytes()[:100])
        else:
            output.with_name("stray.parquet").write_bytes(output.read_bytes())
        assert check_dump(dump)["Many"].damaged
        capsys.readouterr()
        assert main(["check", str(dump)]) == 1, damage
        assert "incomplete, not damaged" not in said(capsys)


def test_missing_chunks_are_entry_ranges_per_file_in_a_bounded_number_of_lines(interrupted, capsys):
    """Before: one line per missing chunk (35 here; thousands for a real run interrupted early)."""
    assert main(["check", str(interrupted)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("not written")]
    assert len(lines) == SHOWN + 1, lines
    named = [FILE_LINE.fullmatch(line) for line in lines[:-1]]
    assert all(named), lines
    assert sum(m[1] == "0-300" and m[2] == "3" for m in named) >= SHOWN - 1, lines
    rest = REST_LINE.fullmatch(lines[-1])
    assert rest and sum(int(m[2]) for m in named) + int(rest[1]) == 3 * FILES - 1, lines


def test_gaps_between_missing_chunks_are_separate_ranges():
    check = SampleCheck("S", missing=[("f.root", 4000, 10000), ("f.root", 0, 1000), ("f.root", 1000, 2000)])
    assert check.not_written() == {"f.root": ([(0, 2000), (4000, 10000)], 3)}
    line = "not written (S) f.root: entries 0-2000, 4000-10000 not written (3 chunks)"
    assert report.not_written_lines({"S": check}) == [line]


def test_an_output_published_without_its_record_is_incompleteness(complete, tmp_path, capsys):
    """A run killed between publishing a chunk's output and recording it: the output is in the publishing
    journal, and the rerun of the chunk removes it. Before: an unexpected output, exit 1."""
    dump = tmp_path / "out"
    shutil.copytree(complete, dump, symlinks=True)
    plan = json.loads(sorted((dump / LEDGER / "files" / "Many").glob("*.json"))[0].read_text())
    record_path = chunk_record(dump, "Many", plan["file"], 0, CHUNK)
    outputs = read_marker(record_path)["outputs"]
    journal = dump / LEDGER / "publishing" / "Many" / owned_name(chunk_key(plan["file"], 0, CHUNK), "1")
    journal.parent.mkdir(parents=True, exist_ok=True)
    journal.write_text(json.dumps(outputs))
    record_path.unlink()
    check = check_dump(dump)["Many"]
    assert check.unrecorded == outputs and not check.damaged and check.missing == [(plan["file"], 0, CHUNK)]
    assert main(["check", str(dump)]) == 0
    assert f"not recorded (Many) {outputs[0]}" in said(capsys)
    assert main(["check", str(dump), "--strict"]) == 1


def test_unprocessed_with_nothing_left_writes_nothing_even_where_the_file_exists(complete, tmp_path, capsys):
    """Before: `error: left.json: exists` (exit 2) although there was nothing to write."""
    left = tmp_path / "left.json"
    assert main(["check", str(complete), "--unprocessed", str(left), "--strict"]) == 0
    assert not left.exists() and f"nothing left to run: {left} not written" in said(capsys)
    left.write_text("mine")
    assert main(["check", str(complete), "--unprocessed", str(left), "--strict"]) == 0
    assert left.read_text() == "mine" and f"nothing left to run: {left} not written" in said(capsys)


def test_unprocessed_never_replaces_a_file_when_something_is_left(interrupted, tmp_path, capsys):
    left = tmp_path / "left.json"
    left.write_text("mine")
    assert main(["check", str(interrupted), "--unprocessed", str(left)]) == 2
    assert left.read_text() == "mine"
    left.unlink()
    assert main(["check", str(interrupted), "--unprocessed", str(left)]) == 0
    assert len(json.loads(left.read_text())["Many"]) == FILES


@pytest.mark.slow
def test_a_processor_exception_names_resubmit_force_which_reruns_it(many, tmp_path, monkeypatch, capsys):
    """vanilla_lxplus (its scheduler stood in for): the job raises, `status` and `resubmit` say that
    `resubmit --force` reruns it as it is, and it does. Before: no word of --force."""
    from fake_scheduler import install

    monkeypatch.chdir(tmp_path)
    for key, value in install(tmp_path / "condor").items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
    analysis = write_analysis(tmp_path / "config", {"Many": many["Many"][:1]}, workflow="user_processors:Explodes")
    command = ["run", "--json-analysis", str(analysis), "--dump", str(tmp_path / "OUT"), "--executor"]
    assert main([*command, "vanilla_lxplus", "--chunk", str(CHUNK), "--no-progress"]) == 0
    folder = only_submission(tmp_path).folder
    force = f"coffea-dispatch resubmit --force {folder}"
    capsys.readouterr()
    assert main(["status", str(folder)]) == 1
    assert force in said(capsys)
    assert main(["resubmit", str(folder)]) == 0
    out = said(capsys)
    assert out.count(force) == 2 and "resubmitted as" not in out, out  # the job's decision, and the summary
    assert main(["resubmit", "--force", str(folder)]) == 0
    out = said(capsys)
    assert "rerun as asked (--force), although the processor raised" in out and "resubmitted as cluster" in out, out
    assert only_submission(tmp_path).jobs[0].attempts == 2


def test_ctrl_c_stops_a_run_whatever_handler_an_import_installed(many, complete, tmp_path, monkeypatch):
    """Importing dask-jobqueue replaces Ctrl-C's handler with one that calls sys.exit(): a run in that process
    ended with exit code 0 and no word; the command (and coffea_dispatch.run) take Ctrl-C back while they run."""
    CtrlCOnSecondChunk.started = 0
    previous = signal.signal(signal.SIGINT, lambda *_: sys.exit())
    try:
        analysis = write_analysis(tmp_path, many, workflow="test_check_command:CtrlCOnSecondChunk")
        assert run(analysis, tmp_path / "out") == 130
        assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler  # given back after the run
    finally:
        signal.signal(signal.SIGINT, previous)


RUNNER_CHUNK = 20_000  # 25,000-entry chunks of the 50,000-entry file; one 40,000 file read by --max 1, one not run


@pytest.fixture(scope="module")
def max_run(generated, tmp_path_factory) -> tuple[Path, dict, dict]:
    """A `--max 1` run into a dump (one chunk per sample), what `check --unprocessed --format coffea` writes of
    it, and the accumulator of the run."""
    folder = tmp_path_factory.mktemp("max_run")
    options = {"executor": "iterative", "chunksize": RUNNER_CHUNK, "max": 1, "progress": False, "plot": False}
    first = coffea_dispatch.run(generated, EveryEventOnce(), dump=str(folder / "out"), **options).accumulator
    left = folder / "left.json"
    assert main(["check", str(folder / "out"), "--unprocessed", str(left), "--format", "coffea"]) == 0
    return left, json.loads(left.read_text()), first


def test_unprocessed_in_coffea_form_names_each_file_left_with_its_steps_entries_and_uuid(generated, max_run):
    """Before: `check` had no --format (exit 2). A file read in part has the entries left as its steps, cut at
    the run's chunk size as coffea cuts; a file not run (never described by the run) is opened for them."""
    _, left, _ = max_run
    signal, (background_read, background_not_run) = generated["Signal"][0], generated["Background"]
    assert set(left) == {"Signal", "Background"}
    assert left["Signal"]["files"][signal]["steps"] == [[25_000, 50_000]]
    assert left["Background"]["files"][background_read]["steps"] == [[20_000, 40_000]]
    assert left["Background"]["files"][background_not_run]["steps"] == [[0, 15_000], [15_000, 30_000]]
    for spec in left.values():
        for path, entry in spec["files"].items():
            handle = uproot.open(path)
            assert entry["object_path"] == "Events" and entry["num_entries"] == handle["Events"].num_entries
            assert entry["uuid"] == str(handle.file.uuid)  # as coffea's preprocess writes it: its steps are kept


def test_coffeas_runner_on_the_coffea_form_and_the_max_run_read_every_event_once(generated, max_run):
    """coffea's Runner (IterativeExecutor) takes no steps in a fileset, but takes work items: those of the
    unprocessed file, with the first run's accumulator, equal a clean full run, and every entry of every file
    is read by exactly one of the two."""
    _, left, first = max_run
    runner = processor.Runner(executor=processor.IterativeExecutor(status=False), schema=BaseSchema, chunksize=10**6)
    rest = runner(runner_items(left), treename="Events", processor_instance=EveryEventOnce())
    full = runner(generated, treename="Events", processor_instance=EveryEventOnce())
    summed = processor.accumulate([first, rest])
    assert {d: summed[d] for d in generated} == {d: full[d] for d in generated}
    assert_every_entry_once(summed["ranges"], generated)


def assert_every_entry_once(read: list, generated: dict) -> None:
    """The (file, start, stop) ranges read cover each file from its first entry to its last, without a gap or
    an overlap."""
    for path in [f for files in generated.values() for f in files]:
        ranges = sorted((a, b) for f, a, b in read if f == path)
        assert ranges[0][0] == 0 and ranges[-1][1] == uproot.open(path)["Events"].num_entries
        assert all(before[1] == after[0] for before, after in zip(ranges, ranges[1:], strict=False)), ranges


def test_coffea_dispatch_run_on_the_coffea_form_reads_the_events_left(generated, max_run):
    """Our own run takes the file as written too (its steps are the chunks, its uuids checked)."""
    _, left, first = max_run
    options = {"executor": "iterative", "chunksize": RUNNER_CHUNK, "progress": False, "plot": False}
    rest = coffea_dispatch.run(left, EveryEventOnce(), **options).accumulator
    assert_every_entry_once(first["ranges"] + rest["ranges"], generated)
    for dataset, files in generated.items():
        every = sum(uproot.open(f)["Events"].num_entries for f in files)
        assert rest[dataset]["events"] + first[dataset]["events"] == every


@pytest.mark.slow
def test_unprocessed_in_coffea_form_of_a_job_array_is_cut_at_its_chunk_size(generated, tmp_path, monkeypatch):
    """A submission folder's jobs run with --chunk: what is left of each file is cut at it (--max 1: each job
    read one chunk of its file)."""
    from fake_scheduler import install

    monkeypatch.chdir(tmp_path)
    for key, value in install(tmp_path / "condor").items():
        monkeypatch.setenv(key, value)
    command = ["run", "--json-analysis", str(write_analysis(tmp_path / "config", generated)), "--dump", "OUT"]
    assert main([*command, "--executor", "vanilla_lxplus", "--chunk", "10000", "--max", "1", "--no-progress"]) == 0
    left = tmp_path / "left.json"
    assert main(["check", str(only_submission(tmp_path).folder), "--unprocessed", str(left), "--format", "coffea"]) == 0
    for spec in json.loads(left.read_text()).values():
        for path, entry in spec["files"].items():
            entries = uproot.open(path)["Events"].num_entries
            assert entry["steps"] == [[a, a + 10_000] for a in range(10_000, entries, 10_000)]


def test_the_coffea_form_is_what_coffeas_dataset_tools_accept(max_run):
    """coffea 2026's fileset model (what preprocess, apply_to_fileset and the dataset tools validate against):
    every file preprocessed, with its steps as written."""
    filespec = pytest.importorskip("coffea.dataset_tools.filespec", reason="coffea 0.7 has no dataset_tools")
    _, left, _ = max_run
    spec = filespec.DataGroupSpec.model_validate(left)
    for name, dataset in left.items():
        files = spec[name].files
        assert isinstance(files, filespec.PreprocessedFiles)
        assert {path: files[path].steps for path in dataset["files"]} == {
            path: entry["steps"] for path, entry in dataset["files"].items()
        }


def test_apply_to_fileset_on_the_coffea_form_reads_the_events_left(generated, max_run):
    """coffea's dask-awkward path on the file as written: the events left, each once."""
    pytest.importorskip("dask_awkward", reason="dask-awkward is not installed (coffea[dask-awkward])")
    import dask
    from coffea.dataset_tools import apply_to_fileset

    _, left, first = max_run
    counted = apply_to_fileset(lambda events: len(events), left, schemaclass=BaseSchema)
    (numbers,) = dask.compute(counted)
    every = {name: sum(uproot.open(f)["Events"].num_entries for f in files) for name, files in generated.items()}
    assert {name: numbers[name] + first[name]["events"] for name in generated} == every


UNEVEN_CHUNK = 3_000  # 10,000 entries: coffea cuts the file into [0,3334],[3334,6668],[6668,10000]


def test_coffea_form_steps_are_the_dumps_chunks_so_a_later_full_run_resumes_them(tmp_path):
    """Before: what was left ([3334,10000]) was re-cut on its own into [3334,6667],[6667,10000], which the left
    run wrote into the dump; a full run of the fileset into it then removed them as another chunking's and redid
    them. The steps are the run's chunks of the whole file, so the full run resumes every chunk."""
    path = str(make_sample(tmp_path / "Uneven.root", SampleSpec(events=10_000, seed=61)))
    fileset, dump = {"Uneven": [path]}, str(tmp_path / "out")
    options = {"executor": "iterative", "chunksize": UNEVEN_CHUNK, "progress": False, "plot": False}
    first = coffea_dispatch.run(fileset, EveryEventOnce(), dump=dump, max=1, **options).accumulator
    left_path = tmp_path / "left.json"
    assert main(["check", dump, "--unprocessed", str(left_path), "--format", "coffea"]) == 0
    left = json.loads(left_path.read_text())
    assert left["Uneven"]["files"][path]["steps"] == [[3334, 6668], [6668, 10000]]
    rest = coffea_dispatch.run(left, EveryEventOnce(), dump=dump, **options)
    assert sorted(r[1:] for r in first["ranges"] + rest.accumulator["ranges"]) == [
        (0, 3334),
        (3334, 6668),
        (6668, 10000),
    ]
    again = coffea_dispatch.run(fileset, EveryEventOnce(), dump=dump, **options)
    assert not [note for note in again.notes if "removed" in note], again.notes
    assert again.resumed_chunks == 3
    assert again.accumulator["Uneven"]["events"] == 10_000
    assert main(["check", dump, "--strict"]) == 0
