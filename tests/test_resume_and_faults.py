"""Never lose an event: resume after a crash, and faults injected into real runs.

Every fault test ends the same way: `coffea-dispatch check` finds exactly one complete output per input chunk,
and the rows equal those of an uninterrupted iterative run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coffea_dispatch.cli import main
from coffea_dispatch.dump.check import check_dump
from coffea_dispatch.dump.completeness_file import COMPLETENESS
from conftest import FAULT_CHUNK as CHUNK
from conftest import FAULT_TOTAL_CHUNKS as TOTAL_CHUNKS
from conftest import TESTS, read_rows, snapshot, write_analysis
from helpers import assert_complete_and_identical, assert_same_rows, completed_chunks, truncate_inside_photon_pt
from helpers import run_analysis_with as run
from user_processors import CHUNK_LOG, KILL_FLAG, KILL_SWITCH

pytestmark = pytest.mark.slow  # every test here starts workers, a cluster or a server


def logged_chunks(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_rerun_resumes_only_the_missing_chunks(generated, reference_dump, tmp_path, monkeypatch):
    log = tmp_path / "chunks.log"
    monkeypatch.setenv(CHUNK_LOG, str(log))
    analysis = write_analysis(tmp_path, generated, workflow="user_processors:SlowDiphoton")
    first = run(analysis, tmp_path / "out", chunk=CHUNK)
    assert first.resumed_chunks == 0 and len(logged_chunks(log)) == TOTAL_CHUNKS
    victim = sorted((tmp_path / "out" / "Signal" / "nominal").glob("*.parquet"))[3]
    victim.unlink()  # one output lost
    log.unlink()
    again = run(analysis, tmp_path / "out", chunk=CHUNK)
    assert again.resumed_chunks == TOTAL_CHUNKS - 1 and len(logged_chunks(log)) == 1
    assert again.events == first.events == 120_000  # the summary counts the resumed chunks too
    assert again.accumulator["Signal"]["candidates"] == first.accumulator["Signal"]["candidates"]
    assert_complete_and_identical(tmp_path / "out", reference_dump, generated)


def test_another_configuration_or_chunking_is_refused_and_overwrite_redoes(generated, reference_dump, tmp_path, capsys):
    analysis = write_analysis(tmp_path, generated)
    dump = tmp_path / "out"
    run(analysis, dump, chunk=CHUNK)
    before = snapshot(dump)
    tighter = write_analysis(tmp_path / "tight", generated, metaconditions={"preselection": {"lead_pt_min": 40.0}})
    base = ["run", "--json-analysis", str(tighter), "--dump", str(dump), "--chunk", str(CHUNK), "--no-progress"]
    assert main(base) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "another configuration" in err and "--overwrite" in err
    other_chunks = ["run", "--json-analysis", str(analysis), "--dump", str(dump), "--chunk", "7000", "--no-progress"]
    assert main(other_chunks) == 2
    assert f"holds chunks of --chunk {CHUNK}" in capsys.readouterr().err
    assert snapshot(dump) == before  # refused before anything was written
    assert main([*other_chunks, "--overwrite", "--no-plot"]) == 0  # old outputs removed, nothing overlaps
    assert_complete_and_identical(dump, reference_dump, generated)
    assert main(["check", str(dump)]) == 0


def test_a_partial_run_with_max_is_completed_by_the_full_run(generated, reference_dump, tmp_path):
    analysis = write_analysis(tmp_path, generated)
    run(analysis, tmp_path / "out", chunk=CHUNK, max=1)
    assert main(["check", str(tmp_path / "out")]) == 0  # complete for what was planned
    full = run(analysis, tmp_path / "out", chunk=CHUNK)
    assert full.resumed_chunks == 2  # the first chunk of each sample
    assert_complete_and_identical(tmp_path / "out", reference_dump, generated)


def start_run(analysis: Path, dump: Path, executor: str, env: dict) -> subprocess.Popen:
    command = [sys.executable, "-m", "coffea_dispatch.cli", "run", "--json-analysis", str(analysis), "--dump"]
    command += [str(dump), "--executor", executor, "--chunk", str(CHUNK), "--no-progress", "--no-plot"]
    if executor == "dask/local":
        command += ["--scaleout", "2"]
    return subprocess.Popen(
        command,
        env={**os.environ, **env, "PYTHONPATH": str(TESTS)},
        start_new_session=True,  # its own process group: killing it kills its workers too, like a lost node
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("executor", ["futures", "dask/local"])
def test_main_process_killed_mid_run_then_rerun_resumes(generated, reference_dump, tmp_path, monkeypatch, executor):
    log = tmp_path / "chunks.log"
    analysis = write_analysis(tmp_path, generated, workflow="user_processors:SlowDiphoton")
    dump = tmp_path / "out"
    process = start_run(analysis, dump, executor, {CHUNK_LOG: str(log)})
    deadline = time.monotonic() + 120
    while completed_chunks(dump) < 6:
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)  # the main process and every worker, without warning
    process.wait()
    time.sleep(0.5)
    done = completed_chunks(dump)
    assert 6 <= done < TOTAL_CHUNKS
    assert main(["check", str(dump)]) == 0  # chunks not written yet: incomplete, not damaged
    assert main(["check", str(dump), "--strict"]) == 1
    log.unlink()
    monkeypatch.setenv(CHUNK_LOG, str(log))
    again = run(analysis, dump, executor, chunk=CHUNK, workers=2)
    assert again.resumed_chunks == done
    assert len(logged_chunks(log)) == TOTAL_CHUNKS - done  # only the missing chunks were processed
    assert_complete_and_identical(dump, reference_dump, generated)


def test_dask_worker_sigkilled_mid_run_loses_nothing(generated, reference_dump, tmp_path, monkeypatch):
    flag = tmp_path / "killed"
    monkeypatch.setenv(KILL_FLAG, str(flag))
    analysis = write_analysis(tmp_path, generated, workflow="user_processors:KillsItsWorkerOnce")
    result = run(analysis, tmp_path / "out", "dask/local", chunk=CHUNK, scaleout=2, workers=1)
    assert flag.exists()  # a worker really died
    assert result.events == 120_000 and not result.failed_chunks
    assert_complete_and_identical(tmp_path / "out", reference_dump, generated)


def test_a_futures_worker_killed_mid_chunk_costs_nothing(generated, reference_dump, tmp_path, monkeypatch):
    """What the OOM killer does to one worker: before, a BrokenProcessPool traceback and exit 1. Now the chunk is
    run again in a fresh worker, as Dask does, and the run completes."""
    flag = tmp_path / "killed"
    monkeypatch.setenv(KILL_FLAG, str(flag))
    analysis = write_analysis(tmp_path, generated, workflow="user_processors:KillsItsWorkerOnce")
    result = run(analysis, tmp_path / "out", "futures", chunk=CHUNK, workers=2)
    assert flag.exists()  # a worker really died
    assert result.events == 120_000 and not result.failed_chunks
    (note,) = [n for n in result.notes if "died" in n]
    assert "Background_1.root (entries 0-5000) died (SIGKILL, peak memory" in note and "fresh worker" in note
    assert_complete_and_identical(tmp_path / "out", reference_dump, generated)


def test_a_chunk_that_kills_every_worker_is_named_and_the_rerun_completes(
    generated, reference_dump, tmp_path, monkeypatch, capsys
):
    switch = tmp_path / "memory-hungry"
    switch.touch()
    monkeypatch.setenv(KILL_SWITCH, str(switch))
    analysis = write_analysis(tmp_path, generated, workflow="user_processors:KillsItsWorkerWhileSwitched")
    dump = tmp_path / "out"
    command = ["run", "--json-analysis", str(analysis), "--dump", str(dump), "--chunk", str(CHUNK), "--no-progress"]
    command += ["--no-plot", "--executor", "futures", "-j", "2"]
    assert main(command) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out and "BrokenProcessPool" not in captured.err
    (line,) = [x for x in captured.out.splitlines() if x.startswith("failed chunk")]
    assert "Background_1.root (entries 0-5000) killed the worker running it twice (SIGKILL" in line
    assert completed_chunks(dump) == TOTAL_CHUNKS - 1  # the other chunks finished
    switch.unlink()  # the user follows the advice (here: the chunk no longer needs too much memory)
    assert main(command) == 0
    assert_complete_and_identical(dump, reference_dump, generated)


@pytest.mark.parametrize("damage", ["truncated", "random_bytes"])
def test_damaged_files_fail_clearly_or_are_skipped_and_the_rest_completes(
    generated, reference_dump, tmp_path, capsys, damage
):

    broken = tmp_path / f"{damage}.root"
    if damage == "random_bytes":
        broken.write_bytes(os.urandom(100_000))
    else:
        truncate_inside_photon_pt(generated["Background"][1], broken)
    samples = {**generated, "Broken": [str(broken)]}
    analysis = write_analysis(tmp_path, samples)
    base = ["run", "--json-analysis", str(analysis), "--dump", str(tmp_path / "out"), "--chunk", str(CHUNK)]
    base += ["--no-progress", "--no-plot", "--executor", "futures"]
    assert main(base) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(broken) in err and "--skipbadfiles" in err
    assert main([*base, "--skipbadfiles"]) == 0
    assert f"skipped (Broken) {broken}" in " ".join(capsys.readouterr().out.split())
    for sample in generated:  # the good files complete, identical to the reference
        assert_same_rows(read_rows(tmp_path / "out", sample), read_rows(reference_dump, sample))
    checks = check_dump(tmp_path / "out")
    assert all(checks[s].ok for s in generated)


@pytest.fixture
def small_disk(mounted):
    """A 1 MB tmpfs: the run's outputs (about 2 MB) do not fit."""
    return mounted("size=1m")


def test_disk_full_fails_clearly_leaves_no_partial_output_and_rerun_completes(
    generated, reference_dump, small_disk, capsys
):
    analysis = write_analysis(small_disk.parent / "config", generated)
    dump = small_disk / "out"
    command = ["run", "--json-analysis", str(analysis), "--dump", str(dump), "--chunk", str(CHUNK)]
    command += ["--no-progress", "--no-plot", "--executor", "iterative"]
    assert main(command) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "No space left on device" in err
    leftovers = [p for p in dump.rglob("*") if p.is_file() and p.name.endswith(".tmp")]
    assert not leftovers  # no temporary file left behind
    checks = check_dump(dump)
    assert not any(c.unreadable for c in checks.values())  # nothing partial looks complete
    assert sum(len(c.missing) for c in checks.values()) > 0
    subprocess.run(["mount", "-o", "remount,size=200m", str(small_disk)], check=True)  # space freed
    assert main(command) == 0
    assert_complete_and_identical(dump, reference_dump, generated)


def test_a_disk_that_fills_while_the_plot_is_written_is_one_line_and_the_rerun_draws_it(
    generated, reference_dump, small_disk, capsys
):
    """Every chunk is recorded, then the disk fills (the processor's postprocess fills it, as another process
    could): before, two tracebacks."""
    analysis = write_analysis(small_disk.parent / "config", generated, workflow="user_processors:FillsTheDiskAtTheEnd")
    dump = small_disk / "out"
    subprocess.run(["mount", "-o", "remount,size=20m", str(small_disk)], check=True)
    command = ["run", "--json-analysis", str(analysis), "--dump", str(dump), "--chunk", str(CHUNK)]
    command += ["--no-progress", "--executor", "iterative"]
    assert main(command) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "No space left on device" in err and "every chunk is recorded" in err
    assert not (dump / "diphoton_mass.png").exists() and not list(dump.glob(".diphoton_mass.png*"))
    assert all(c.ok for c in check_dump(dump).values())
    (small_disk / "filler").unlink()
    assert main(command) == 0 and (dump / "diphoton_mass.png").stat().st_size > 0
    assert_complete_and_identical(dump, reference_dump, generated)


def test_overwrite_redoes_only_what_this_run_processes(generated, reference_dump, tmp_path):
    """A batch job (or an --only run) with --overwrite must not delete the outputs of the others in the dump."""
    analysis = write_analysis(tmp_path, generated)
    dump = tmp_path / "out"
    run(analysis, dump, chunk=CHUNK)
    background = snapshot(dump / "Background")
    again = run(analysis, dump, chunk=CHUNK, only="Signal", overwrite=True)
    assert again.resumed_chunks == 0 and again.events == 50_000
    assert snapshot(dump / "Background") == background  # untouched
    assert_complete_and_identical(dump, reference_dump, generated)


def test_killed_run_completed_by_its_unprocessed_json_into_the_same_dump(generated, reference_dump, tmp_path, capsys):
    """SIGKILL midway (no completeness.json written), `check --unprocessed`, then the unprocessed JSON run into
    the same dump: every record of the dump counts, so completeness.json, the summary and check all say read."""
    analysis = write_analysis(tmp_path, generated, workflow="user_processors:SlowDiphoton")
    dump = tmp_path / "out"
    process = start_run(analysis, dump, "futures", {})
    deadline = time.monotonic() + 120
    while completed_chunks(dump) < 3:
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    left = tmp_path / "left.json"
    main(["check", str(dump), "--unprocessed", str(left)])
    content = json.loads(analysis.read_text())
    rest = tmp_path / "rest-analysis.json"
    rest.write_text(json.dumps({**content, "samplejson": str(left)}))
    capsys.readouterr()
    assert main(["run", "--json-analysis", str(rest), "--dump", str(dump), "--chunk", str(CHUNK), "--no-plot",
                 "--no-progress", "--executor", "futures"]) == 0  # fmt: skip
    assert "completeness: all inputs read" in capsys.readouterr().out
    assert json.loads((dump / COMPLETENESS).read_text())["complete"] is True
    assert main(["check", str(dump), "--strict"]) == 0
    assert_complete_and_identical(dump, reference_dump, generated)


def test_a_run_killed_before_it_read_anything_leaves_every_input_to_check(generated, reference_dump, tmp_path):
    """Killed before any chunk ran, with inputs described on the workers (none in the metadata cache): check
    and the unprocessed JSON name every file the run was given, and running that JSON completes the dump."""
    analysis = write_analysis(tmp_path, generated, workflow="user_processors:SlowDiphoton")
    dump = tmp_path / "out"
    process = start_run(analysis, dump, "futures", {"XDG_CACHE_HOME": str(tmp_path / "empty-cache")})
    deadline = time.monotonic() + 120
    while not (dump / COMPLETENESS).exists():
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    left = tmp_path / "left.json"
    assert main(["check", str(dump), "--strict", "--unprocessed", str(left)]) == 1
    listed = json.loads(left.read_text())
    assert {s: sorted(e if isinstance(e, str) else e["file"] for e in files) for s, files in listed.items()} == {
        s: sorted(files) for s, files in generated.items()
    }
    rest = tmp_path / "rest-analysis.json"
    rest.write_text(json.dumps({**json.loads(analysis.read_text()), "samplejson": str(left)}))
    assert main(["run", "--json-analysis", str(rest), "--dump", str(dump), "--chunk", str(CHUNK), "--no-plot",
                 "--no-progress", "--executor", "futures"]) == 0  # fmt: skip
    assert main(["check", str(dump), "--strict"]) == 0
    assert_complete_and_identical(dump, reference_dump, generated)
