"""Completeness and normalisation: per sample, the files read, skipped, failed and not run, and the sums of
generator weights of the inputs against those of the events processed, checked against uproot sums computed
here over exactly the entries read; what is left, written by `check --unprocessed`, completes the dump.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import uproot

import coffea_dispatch
from coffea_dispatch.cli import main
from coffea_dispatch.dump.completeness import Completeness, FileReading, SampleReading
from coffea_dispatch.dump.completeness_file import COMPLETENESS, read_completeness, record_completeness
from coffea_dispatch.errors import DispatchError
from coffea_dispatch.inputs.analysis import load_analysis
from coffea_dispatch.synthetic.generator import distinct_copy
from conftest import LOOSE_CUTS, TESTS, read_rows, write_analysis
from helpers import (
    NANO,
    assert_same_rows,
    higgsdna_analysis,
    only_submission,
    outputs,
    run_analysis_with,
    run_iteratively,
    truncate_inside_photon_pt,
)

CHUNK = 15_000


def uproot_sum(filename: str, start: int = 0, stop: int | None = None) -> float:
    """The sum of genWeight over [start, stop), read here with uproot alone."""
    with uproot.open(filename) as handle:
        weights = handle["Events"]["genWeight"].array(entry_start=start, entry_stop=stop, library="np")
        return float(np.sum(weights, dtype=np.float64))


def runs_sum(filename: str) -> float:
    with uproot.open(filename) as handle:
        runs = handle["Runs"]
        name = "genEventSumw" if "genEventSumw" in runs else "genEventSumw_"
        return float(np.sum(runs[name].array(library="np")))


def assert_sums_equal_uproot(completeness: Completeness) -> None:
    """Every sample's genWeight sum over the events read, and every file's, equal uproot's over its ranges."""
    for sample in completeness.values():
        if not sample.simulation:
            continue
        expected = 0.0
        for filename, reading in sample.files.items():
            read = sum(uproot_sum(filename, start, stop) for start, stop in reading.read_ranges())
            assert math.isclose(reading.sumw_read or 0.0, read, rel_tol=1e-9, abs_tol=1e-6), filename
            expected += read
        assert math.isclose(sample.sumw_read or 0.0, expected, rel_tol=1e-9, abs_tol=1e-6), sample.sample


def run_cli(analysis: Path, dump: Path, *options: str) -> int:
    command = ["run", "--json-analysis", str(analysis), "--dump", str(dump), "--chunk", str(CHUNK)]
    return main([*command, "--no-progress", "--no-plot", *options])


def rerun_what_is_left(tmp_path: Path, analysis: Path, left: Path, name: str = "left") -> Path:
    """The same analysis JSON reading `left` (what check --unprocessed wrote), as a HiggsDNA user edits it."""
    content = json.loads(analysis.read_text())
    content["samplejson"] = str(left)
    path = tmp_path / f"{name}-analysis.json"
    path.write_text(json.dumps(content))
    return path


# ---- the numbers, on real NanoAOD and generated files ------------------------------------------------------------


def test_real_nanoaod_sums_equal_uproot_and_a_skimmed_file_is_named(shared_nanoaod, generated, tmp_path, capsys):
    dy, empty, data = (str(shared_nanoaod / n) for n in ("nano_dy.root", "nano_dy_empty.root", "nano_dimuon.root"))
    samples = {"DY": [dy, empty], "Data": [data], "Generated": generated["Background"]}
    analysis = write_analysis(tmp_path, samples, metaconditions={"preselection": LOOSE_CUTS})
    assert run_cli(analysis, tmp_path / "out", "--executor", "futures", "-j", "2") == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "completeness: all inputs read" in out
    # nano_dy.root holds 40 events of a dataset whose Runs tree counts 850,098: read whole, the sums differ
    assert f"{dy}: read whole, but its Runs tree's genEventSumw is 1.51667e+10" in out
    found = read_completeness(tmp_path / "out")
    assert found.complete and found["DY"].files[empty].status == "read"  # a zero-event file is read, not failed
    assert math.isclose(found["DY"].sumw, runs_sum(dy), rel_tol=1e-12)  # the input's: from its Runs tree
    assert math.isclose(found["DY"].sumw_of_inputs_read(), runs_sum(dy), rel_tol=1e-12)
    generated_sum = sum(uproot_sum(f) for f in generated["Background"])  # no Runs tree: its events' weights
    assert math.isclose(found["Generated"].sumw, generated_sum, rel_tol=1e-9)
    assert_sums_equal_uproot(found)
    with uproot.open(data) as handle:  # data: distinct (run, luminosity block) pairs, no weights
        pairs = set(zip(*(handle["Events"][b].array(library="np") for b in ("run", "luminosityBlock")), strict=True))
    assert not found["Data"].simulation and found["Data"].lumis() == (len(pairs), len(pairs))
    assert main(["check", str(tmp_path / "out"), "--strict"]) == 0
    assert main(["check", str(tmp_path / "out")]) == 0


def test_python_api_result_carries_completeness(generated, tmp_path):
    """coffea_dispatch.run without a dump: the accumulator's chunk counts say what was read (--max: part)."""
    from user_processors import CountPhotons

    result = coffea_dispatch.run(generated, CountPhotons(), executor="iterative", chunksize=CHUNK, max=1)
    reading = result.completeness
    assert not reading.complete
    assert reading["Signal"].counts() == {"partial": 1}
    assert reading["Background"].counts() == {"partial": 1, "not run": 1}
    assert reading["Signal"].entries_read == 16_667 and reading["Signal"].fraction() < 0.5
    assert_sums_equal_uproot(reading)
    assert "read" in result._repr_html_()
    assert not (tmp_path / COMPLETENESS).exists()


# ---- what is left, as something that runs -------------------------------------------------------------------------


@pytest.mark.slow
def test_max_leaves_entry_ranges_that_complete_the_dump_and_read_nothing_twice(generated, tmp_path, capsys):
    analysis = write_analysis(tmp_path, generated, metaconditions={"preselection": LOOSE_CUTS})
    run_analysis_with(analysis, tmp_path / "clean", "iterative", chunk=CHUNK)
    dump = tmp_path / "out"
    assert run_cli(analysis, dump, "--executor", "futures", "-j", "2", "--max", "2") == 0
    last = capsys.readouterr().out.strip().splitlines()
    assert last[-2].startswith("completeness: Signal: 0 of 1 file(s) read, 1 partial; 33.39% of its genEventSumw")
    assert last[-1].startswith("completeness: Background: 0 of 2 file(s) read, 1 partial, 1 not run; 61.90%")
    partial = read_completeness(dump)
    assert_sums_equal_uproot(partial)
    assert main(["check", str(dump), "--strict", "--unprocessed", str(tmp_path / "left.json")]) == 1
    left = json.loads((tmp_path / "left.json").read_text())
    assert left["Signal"] == [{"file": generated["Signal"][0], "entries": [[2 * 16_667, 50_000]]}]
    # run into a new dump: exactly the entries left, so both dumps together hold every event once
    elsewhere = rerun_what_is_left(tmp_path, analysis, tmp_path / "left.json")
    assert run_cli(elsewhere, tmp_path / "rest", "--executor", "iterative") == 0
    for sample in generated:
        both = [read_rows(dump, sample), read_rows(tmp_path / "rest", sample)]
        events = np.concatenate([rows["event"] for rows in both if rows])
        assert len(events) == len(read_rows(tmp_path / "clean", sample)["event"])
        assert len(set(zip(np.concatenate([r["run"] for r in both if r]), events, strict=True))) == len(events)
    assert read_completeness(tmp_path / "rest")["Signal"].files[generated["Signal"][0]].read_ranges() == [
        (2 * 16_667, 50_000)
    ]
    # run into the same dump: it completes it
    assert run_cli(elsewhere, dump, "--executor", "futures", "-j", "2") == 0
    done = read_completeness(dump)
    assert done.complete and done["Signal"].fraction() == 1.0
    assert_sums_equal_uproot(done)
    for sample in generated:
        assert_same_rows(read_rows(dump, sample), read_rows(tmp_path / "clean", sample))
    assert main(["check", str(dump), "--strict"]) == 0


@pytest.mark.slow
def test_skipped_and_failed_files_are_left_and_the_fixed_rerun_completes(generated, tmp_path, capsys):
    broken = tmp_path / "inputs" / "broken.root"  # not ROOT at all: skipped when described
    broken.parent.mkdir()
    broken.write_bytes(b"not a ROOT file" * 100)
    damaged = truncate_inside_photon_pt(generated["Background"][0], tmp_path / "inputs" / "damaged.root")
    samples = {"Signal": generated["Signal"], "Background": [str(damaged), generated["Background"][1], str(broken)]}
    analysis = write_analysis(tmp_path, samples, metaconditions={"preselection": LOOSE_CUTS})
    dump = tmp_path / "out"
    assert run_cli(analysis, dump, "--executor", "futures", "-j", "2", "--skipbadfiles") == 0
    last = " ".join(capsys.readouterr().out.strip().splitlines()[-1].split())
    assert last.startswith("completeness: Background: 1 of 3 file(s) read, 1 skipped, 1 failed;"), last
    assert "of its genEventSumw missing" in last
    found = read_completeness(dump)
    background = found["Background"]
    assert background.files[str(broken)].status == "skipped" and background.files[str(damaged)].status == "failed"
    assert found["Signal"].complete
    assert_sums_equal_uproot(Completeness({"Signal": found["Signal"]}))
    good = generated["Background"][1]
    assert math.isclose(background.sumw_read, uproot_sum(good), rel_tol=1e-9)
    left = tmp_path / "left.json"
    assert main(["check", str(dump), "--unprocessed", str(left)]) == 0  # not run yet: incomplete, not damaged
    damaged_sum = uproot_sum(generated["Background"][0])  # what the damaged file weighs (its genWeights read)
    said = " ".join(capsys.readouterr().out.split())
    assert f"at least {damaged_sum:.6g} of its genEventSumw missing, and all of 1 file(s) of unknown size" in said
    assert json.loads(left.read_text()) == {"Background": [str(damaged), str(broken)]}
    assert main(["check", str(dump), "--unprocessed", str(left)]) == 2  # never overwritten
    # the two inputs fixed (fresh copies of good files), what is left run into the same dump
    distinct_copy(generated["Background"][0], damaged)
    distinct_copy(generated["Signal"][0], broken)
    assert run_cli(rerun_what_is_left(tmp_path, analysis, left), dump, "--executor", "iterative") == 0
    assert "completeness: all inputs read" in capsys.readouterr().out
    assert main(["check", str(dump), "--strict"]) == 0
    run_analysis_with(analysis, tmp_path / "clean", "iterative", chunk=CHUNK)
    for sample in samples:
        assert_same_rows(read_rows(dump, sample), read_rows(tmp_path / "clean", sample))
    assert_sums_equal_uproot(read_completeness(dump))


@pytest.mark.slow
def test_a_cancelled_job_of_a_job_array_is_left_and_rerun(generated, tmp_path, monkeypatch, capsys):
    """vanilla_lxplus (its scheduler stood in for): one job cancelled while queued, the others run. status and
    check name its files as not run, the unprocessed JSON reruns them into the dump, which is then complete."""
    from fake_scheduler import held, install, release

    monkeypatch.chdir(tmp_path)
    for key, value in install(tmp_path / "condor").items():
        monkeypatch.setenv(key, value)
    analysis = write_analysis(tmp_path / "config", generated)
    command = ["--json-analysis", str(analysis), "--dump", str(tmp_path / "OUT"), "--executor", "vanilla_lxplus"]
    with held():
        assert main(["run", *command, "--chunk", "20000", "--no-progress"]) == 0
    submission = only_submission(tmp_path)
    assert main(["cancel", str(submission.folder), "Background-1"]) == 0
    release()
    capsys.readouterr()
    assert main(["status", str(submission.folder)]) == 1
    status = " ".join(capsys.readouterr().out.split())
    assert "completeness: Background: 1 of 2 file(s) read, 1 not run" in status, status
    left = tmp_path / "left.json"
    assert main(["check", str(submission.folder), "--unprocessed", str(left), "--strict"]) == 1
    assert json.loads(left.read_text()) == {"Background": [generated["Background"][1]]}
    assert main(["merge", str(submission.folder), "--allow-incomplete"]) == 0
    assert not read_completeness(tmp_path / "OUT").complete  # kept true by merge
    assert_sums_equal_uproot(read_completeness(tmp_path / "OUT"))
    rerun = rerun_what_is_left(tmp_path, analysis, left)
    assert main(["run", "--json-analysis", str(rerun), "--dump", str(tmp_path / "OUT"), "--executor", "iterative",
                 "--chunk", "20000", "--no-progress", "--no-plot"]) == 0  # fmt: skip
    done = read_completeness(tmp_path / "OUT")
    assert done.complete, done.lines()
    assert_sums_equal_uproot(done)
    assert main(["check", str(tmp_path / "OUT"), "--strict"]) == 0
    run_iteratively(analysis, tmp_path / "reference")
    for sample in generated:
        assert_same_rows(read_rows(tmp_path / "OUT", sample), read_rows(tmp_path / "reference", sample))


@pytest.mark.slow
def test_higgsdna_like_processor_left_by_max_is_completed(higgsdna, generated, tmp_path):
    """A self-writing processor (HiggsDNA's contract): its own files, completed by the unprocessed JSON."""
    analysis = higgsdna_analysis(tmp_path, generated)
    dump = tmp_path / "out"
    options = ["--executor", "iterative", *NANO]
    assert run_cli(analysis, dump, *options, "--max", "1") == 0
    assert not read_completeness(dump).complete
    assert_sums_equal_uproot(read_completeness(dump))
    assert main(["check", str(dump), "--unprocessed", str(tmp_path / "left.json")]) == 0
    assert run_cli(rerun_what_is_left(tmp_path, analysis, tmp_path / "left.json"), dump, *options) == 0
    assert read_completeness(dump).complete
    assert run_cli(analysis, tmp_path / "clean", *options) == 0
    assert outputs(dump) == outputs(tmp_path / "clean")
    assert_sums_equal_uproot(read_completeness(dump))


# ---- units ---------------------------------------------------------------------------------------------------------


def test_missing_ranges_status_and_merge():
    reading = FileReading(100, {"sumw": 10.0, "sumw_events": 10.0, "source": "genWeight"})
    assert reading.status == "not run" and reading.missing() == [(0, 100)]
    reading.read = {"0-25": (25, 2.5, None), "50-75": (25, 3.0, None)}
    assert reading.status == "partial" and reading.missing() == [(25, 50), (75, 100)]
    assert math.isclose(reading.weight_fraction(), 0.55)
    assert FileReading(0).status == "read"  # zero events: read
    assert FileReading(None, problem="skipped: not ROOT").status == "skipped"
    earlier = Completeness({"S": SampleReading("S", {"f": reading, "g": FileReading(10)})})
    now = Completeness({"S": SampleReading("S", {"f": FileReading(100, read={"25-50": (25, 1.0, None)})})})
    merged = now.merged_into(earlier, {"f": {"25-50"}})
    assert merged["S"].files["f"].missing() == [(75, 100)] and "g" in merged["S"].files
    replaced = FileReading(100, read={"0-100": (100, 9.0, None)}, uuid="b" * 32)
    reading.uuid = "a" * 32
    assert now.__class__({"S": SampleReading("S", {"f": replaced})}).merged_into(earlier, {})["S"].files["f"].read == {
        "0-100": (100, 9.0, None)
    }  # another file at that path: its earlier chunks do not count
    assert earlier.unprocessed() == {"S": [{"file": "f", "entries": [[25, 50], [75, 100]]}, "g"]}
    assert Completeness.from_json(json.loads(json.dumps(earlier.to_json()))).to_json() == earlier.to_json()


def test_a_completeness_json_the_tool_did_not_write_is_left_alone(tmp_path):
    (tmp_path / COMPLETENESS).write_text('{"mine": true}')
    answer = record_completeness(tmp_path, Completeness({"S": SampleReading("S", {"f": FileReading(10)})}))
    assert list(answer) == ["S"]  # the run still has its answer; only the file is not written
    assert (tmp_path / COMPLETENESS).read_text() == '{"mine": true}'
    assert read_completeness(tmp_path) == {}


@pytest.mark.parametrize(
    "entry",
    [{"file": "a.root"}, {"file": "a.root", "entries": [[5, 5]]}, {"file": "a.root", "entries": [[0, 1.5]]},
     {"file": "a.root", "entries": [[0, 10]], "x": 1}, {"file": "a.root", "entries": "0-10"},
     {"file": "a.root", "entries": [[0, 10], [5, 15]]}],  # overlapping: entries 5-10 read twice
)  # fmt: skip
def test_bad_entry_ranges_are_one_line_naming_the_sample(tmp_path, entry):
    (tmp_path / "samples.json").write_text(json.dumps({"S": [entry]}))
    (tmp_path / "a.json").write_text(json.dumps({"samplejson": "samples.json", "workflow": "base"}))
    with pytest.raises(DispatchError, match="sample 'S': invalid file entry"):
        load_analysis(tmp_path / "a.json")


def test_overwrite_with_max_forgets_what_it_removed(generated, tmp_path):
    """--overwrite removes every earlier chunk of the files it plans: a --max 1 rerun then holds one chunk."""
    analysis = write_analysis(tmp_path, generated, metaconditions={"preselection": LOOSE_CUTS})
    assert run_cli(analysis, tmp_path / "out", "--executor", "iterative") == 0
    assert read_completeness(tmp_path / "out").complete
    assert run_cli(analysis, tmp_path / "out", "--executor", "iterative", "--max", "1", "--overwrite") == 0
    found = read_completeness(tmp_path / "out")
    assert found["Signal"].counts() == {"partial": 1} and found["Signal"].entries_read == 16_667
    assert found == Completeness.from_json(json.loads(json.dumps(found.to_json())))
    assert coffea_dispatch.completeness_of(tmp_path / "out").to_json() == found.to_json()  # the records agree


def test_a_runner_job_array_is_complete_for_check_and_status(generated, tmp_path, monkeypatch, capsys):
    """A job array made through coffea's Runner: its jobs say what they read, so `check` and `status` count
    every file read once (before, each job's record said nothing: `check` listed every file as not run)."""
    from coffea import processor
    from coffea.nanoevents import BaseSchema

    from fake_scheduler import install
    from runner_processors import CountingProcessor

    for key, value in install(tmp_path / "condor").items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
    folder = tmp_path / "sub"
    executor = coffea_dispatch.executor("vanilla_lxplus", folder=str(folder), poll_seconds=0.2, status=False)
    runner = processor.Runner(executor=executor, schema=BaseSchema, chunksize=20_000)
    runner(generated, treename="Events", processor_instance=CountingProcessor())
    reading = coffea_dispatch.completeness_of(folder)
    assert reading.complete and sum(s.entries_read for s in reading.values()) == 120_000
    assert_sums_equal_uproot(reading)
    assert main(["check", str(folder), "--strict", "--unprocessed", str(tmp_path / "left.json")]) == 0
    assert not (tmp_path / "left.json").exists()
    capsys.readouterr()
    assert main(["status", str(folder)]) == 0
    assert "completeness: all inputs read" in capsys.readouterr().out  # status says what check says


def test_chunks_a_runner_job_array_skipped_as_bad_are_not_counted_read(generated, tmp_path, monkeypatch):
    """coffea's skipbadfiles gives a chunk up (its result is None): the job is done, its file is not read."""
    from coffea import processor
    from coffea.nanoevents import BaseSchema

    from fake_scheduler import install
    from runner_processors import UNREADABLE_DATASET_VARIABLE, CountingProcessor

    for key, value in install(tmp_path / "condor").items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv(UNREADABLE_DATASET_VARIABLE, "Signal")
    folder = tmp_path / "sub"
    executor = coffea_dispatch.executor("vanilla_lxplus", folder=str(folder), poll_seconds=0.2, status=False)
    runner = processor.Runner(executor=executor, schema=BaseSchema, chunksize=20_000, skipbadfiles=True)
    output = runner(generated, treename="Events", processor_instance=CountingProcessor())
    assert "Signal" not in output and output["Background"]["events"] == 70_000
    reading = coffea_dispatch.completeness_of(folder)
    assert reading["Background"].complete and not reading["Signal"].complete
    assert reading["Signal"].files[generated["Signal"][0]].status == "failed"
    assert main(["check", str(folder), "--strict"]) == 1


def test_a_luminosity_block_counts_as_read_only_when_all_its_events_were(shared_nanoaod, tmp_path):
    """nano_dimuon.root: 40 events of one luminosity block. --max reads a part of it: no dump holding a part
    counts the block; the unprocessed JSON run into the same dump completes it."""
    data = str(shared_nanoaod / "nano_dimuon.root")
    analysis = write_analysis(tmp_path, {"Data": [data]}, metaconditions={"preselection": LOOSE_CUTS})
    first, second = tmp_path / "first", tmp_path / "second"
    assert main(["run", "--json-analysis", str(analysis), "--dump", str(first), "--chunk", "15", "--max", "1",
                 "--no-progress", "--no-plot", "--executor", "iterative"]) == 0  # fmt: skip
    assert read_completeness(first)["Data"].lumis() == (0, 1)
    left = tmp_path / "left.json"
    main(["check", str(first), "--unprocessed", str(left)])
    rest = rerun_what_is_left(tmp_path, analysis, left)
    for dump in (second, first):
        assert main(["run", "--json-analysis", str(rest), "--dump", str(dump), "--chunk", "15",
                     "--no-progress", "--no-plot", "--executor", "iterative"]) == 0  # fmt: skip
    assert read_completeness(second)["Data"].lumis() == (0, 1)  # the rest of the block only
    assert read_completeness(first)["Data"].lumis() == (1, 1) and read_completeness(first).complete


def test_completeness_of_a_folder_that_is_no_dump_is_refused(tmp_path):
    """A typo in the folder name must not read as "all inputs read", as `check` refuses it."""
    for folder in (tmp_path / "no_such_folder", tmp_path):
        with pytest.raises(DispatchError, match="not a --dump folder"):
            coffea_dispatch.completeness_of(folder)
