"""Remote inputs read over root:// from a real XRootD server on loopback: the same rows as local paths,
unreachable and dying servers handled cleanly, resume after the server comes back."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from coffea_dispatch.cli import main
from conftest import FAULT_CHUNK as CHUNK
from conftest import FAULT_TOTAL_CHUNKS as TOTAL_CHUNKS
from conftest import read_rows, write_analysis
from helpers import (
    assert_complete_and_identical,
    assert_same_rows,
    completed_chunks,
    make_proxy,
    merged_rows,
    only_submission,
    run_like_the_schedd,
)
from helpers import run_analysis_with as run
from user_processors import CHUNK_LOG

pytestmark = pytest.mark.slow  # every test here starts workers, a cluster or a server

FAST_FAILURE = {"timeout": 5, "retries": 1}  # a dead server is reported in seconds, not minutes


@pytest.mark.parametrize("executor", ["iterative", "futures", "dask/local"])
def test_root_urls_give_the_rows_of_local_paths(xrootd, generated, reference_dump, tmp_path, executor):
    analysis = write_analysis(tmp_path, xrootd.urls)
    extra = {"scaleout": 2} if executor == "dask/local" else {"workers": 2} if executor == "futures" else {}
    result = run(analysis, tmp_path / "out", executor, chunk=CHUNK, **extra)
    assert result.events == 120_000
    assert_complete_and_identical(tmp_path / "out", reference_dump, generated)


def test_unreachable_server_fails_in_one_line_or_is_skipped(xrootd, generated, reference_dump, tmp_path, capsys):
    dead = xrootd.url(Path(xrootd.urls["Signal"][0]).name, port=1)  # nothing listens on port 1
    samples = {**xrootd.urls, "Dead": [dead]}
    analysis = write_analysis(tmp_path, samples)
    base = ["run", "--json-analysis", str(analysis), "--dump", str(tmp_path / "out"), "--chunk", str(CHUNK)]
    base += ["--no-progress", "--no-plot", "--timeout", "5", "--retries", "1", "--executor", "iterative"]
    started = time.monotonic()
    assert main(base) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and dead in err and "Connection error" in err and "--skipbadfiles" in err
    assert time.monotonic() - started < 30
    assert main([*base, "--skipbadfiles"]) == 0
    assert f"skipped (Dead) {dead}" in " ".join(capsys.readouterr().out.split())
    for sample in generated:
        assert_same_rows(read_rows(tmp_path / "out", sample), read_rows(reference_dump, sample))


def test_validate_over_root_reports_unreachable_and_corrupt_files(xrootd, tmp_path, capsys):
    garbage = tmp_path / "garbage.root"
    garbage.write_bytes(os.urandom(50_000))
    corrupt = xrootd.add(garbage)
    dead = xrootd.url("anything.root", port=1)
    missing = xrootd.url("not-there.root")
    analysis = write_analysis(tmp_path, {"Good": xrootd.urls["Signal"], "Bad": [corrupt, dead, missing]})
    command = ["run", "--json-analysis", str(analysis), "--validate", "--timeout", "5", "--retries", "0"]
    assert main([*command, "--dump", str(tmp_path / "out")]) == 2
    out = " ".join(capsys.readouterr().out.split())
    assert f"bad (Bad) {corrupt}: cannot be opened as a ROOT file" in out
    assert f"bad (Bad) {dead}" in out and f"bad (Bad) {missing}" in out and "no such file" in out
    assert "│ Good │ 1 │ 50,000 │ 0 │" in out
    assert not (tmp_path / "out").exists()  # nothing processed, nothing written


def test_server_stopped_mid_run_then_restarted_rerun_completes(
    xrootd, generated, reference_dump, tmp_path, monkeypatch, capsys
):
    log = tmp_path / "chunks.log"
    monkeypatch.setenv(CHUNK_LOG, str(log))
    analysis = write_analysis(tmp_path, xrootd.urls, workflow="user_processors:SlowDiphoton")
    dump = tmp_path / "out"
    base = ["run", "--json-analysis", str(analysis), "--dump", str(dump), "--chunk", str(CHUNK)]
    base += ["--no-progress", "--no-plot", "--timeout", "5", "--retries", "1", "--executor", "futures", "-j", "2"]
    stopper = stop_server_after(xrootd, dump, chunks=4)
    try:
        code = main(base)
    finally:
        stopper.join()
        xrootd.start()
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "root://localhost:" in err, err
    done = completed_chunks(dump)
    assert 4 <= done < 24
    log.unlink()
    assert main([*base[:-4], "--executor", "futures", "-j", "2"]) == 0  # the server is back: resume
    assert len(log.read_text().splitlines()) == 24 - done  # only what was missing
    assert_complete_and_identical(dump, reference_dump, generated)


def test_vanilla_jobs_read_root_urls_with_the_proxy_exported(xrootd, generated, reference_dump, tmp_path, monkeypatch):
    """HTCondor job scripts run as the schedd would, and real SLURM jobs with --wait: root:// inputs need a grid
    proxy, which every job script exports."""

    proxy = make_proxy(tmp_path, days=30)
    monkeypatch.chdir(tmp_path)
    analysis = write_analysis(tmp_path / "config", xrootd.urls)
    common = ["--json-analysis", str(analysis), "--chunk", str(CHUNK), "--voms", str(proxy), "--no-progress"]
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no condor_submit: files written, exit 3
    assert main(["run", *common, "--dump", str(tmp_path / "condor"), "--executor", "vanilla_lxplus"]) == 3
    submission = only_submission(tmp_path)
    for script in submission.jobs_folder.glob("*.sh"):
        assert f"export X509_USER_PROXY={proxy}" in script.read_text()
    run_like_the_schedd(submission)
    for sample in generated:
        assert_same_rows(read_rows(tmp_path / "condor", sample), read_rows(reference_dump, sample))
    assert main(["check", str(tmp_path / "condor")]) == 0


def test_vanilla_slurm_reads_root_urls(xrootd, slurm, generated, reference_dump, tmp_path, monkeypatch):

    for key, value in slurm.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    proxy = make_proxy(tmp_path, days=30)
    analysis = write_analysis(tmp_path / "config", xrootd.urls)
    command = ["run", "--json-analysis", str(analysis), "--chunk", str(CHUNK), "--voms", str(proxy)]
    command += ["--no-progress", "--dump", str(tmp_path / "slurm"), "--executor", "vanilla_slurm"]
    assert main([*command, "--memory", "2GB", "--wait", "--poll-seconds", "0.5"]) == 0
    for sample in generated:
        assert_same_rows(merged_rows(tmp_path / "slurm", sample), read_rows(reference_dump, sample))
    assert main(["check", str(tmp_path / "slurm")]) == 0


def test_replica_fallback_and_redirector(xrootd, generated, reference_dump, tmp_path, capsys):
    """The first replica's server is down: the second serves, the summary says so; bare /store paths are read
    through --redirector."""
    signal = Path(xrootd.urls["Signal"][0]).name
    dead_first = [xrootd.url(signal, port=1), xrootd.url(signal)]
    samples = {"Signal": [dead_first], "Background": [f"/store/data/{Path(u).name}" for u in xrootd.urls["Background"]]}
    analysis = write_analysis(tmp_path, samples)
    command = ["run", "--json-analysis", str(analysis), "--dump", str(tmp_path / "out"), "--chunk", str(CHUNK)]
    command += ["--no-progress", "--no-plot", "--timeout", "5", "--retries", "0", "--executor", "futures", "-j", "2"]
    assert main([*command, "--redirector", xrootd.redirector]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"replica (Signal) {dead_first[0]} read from {dead_first[1]}" in out
    assert_complete_and_identical(tmp_path / "out", reference_dump, generated)
    assert main(command) == 2  # without the redirector, /store/... is a local path that does not exist
    assert "/store/data/Background_0.root: file does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("executor", ["futures", "dask/local"])
def test_the_grid_proxy_reaches_every_worker_reading_remote_files(xrootd, tmp_path, monkeypatch, executor):

    monkeypatch.delenv("X509_USER_PROXY", raising=False)
    proxy = make_proxy(tmp_path, days=30)
    analysis = write_analysis(tmp_path, xrootd.urls, workflow="user_processors:ReportsProxy")
    extra = {"scaleout": 2} if executor == "dask/local" else {"workers": 2}
    result = run(analysis, None, executor, chunk=CHUNK, voms=str(proxy), **extra)
    assert result.accumulator["proxy"] == {str(proxy.resolve()): TOTAL_CHUNKS}
    assert os.getpid() not in result.accumulator["pids"]  # read in worker processes, not here


def test_server_stopped_mid_run_with_skipbadfiles_lists_the_file_and_the_rest_completes(
    xrootd, generated, reference_dump, tmp_path, capsys
):
    """Signal is remote, Background local: the server dies while Signal is read. With --skipbadfiles the run
    ends with Signal's file listed as skipped and Background complete; once the server is back, the same
    command without --skipbadfiles completes Signal."""
    samples = {"Signal": xrootd.urls["Signal"], "Background": generated["Background"]}
    analysis = write_analysis(tmp_path, samples, workflow="user_processors:SlowDiphoton")
    dump = tmp_path / "out"
    base = ["run", "--json-analysis", str(analysis), "--dump", str(dump), "--chunk", str(CHUNK), "--no-progress"]
    base += ["--no-plot", "--timeout", "5", "--retries", "1", "--executor", "futures", "-j", "2"]
    stopper = stop_server_after(xrootd, dump, chunks=3)
    try:
        code = main([*base, "--skipbadfiles"])
    finally:
        stopper.join()
        xrootd.start()
    out = " ".join(capsys.readouterr().out.split())
    assert code == 0 and f"skipped (Signal) {xrootd.urls['Signal'][0]}" in out
    assert_same_rows(read_rows(dump, "Background"), read_rows(reference_dump, "Background"))
    assert main(["check", str(dump)]) == 0  # Signal's missing chunks: incomplete, not damaged
    assert main(["check", str(dump), "--strict"]) == 1
    assert main(base) == 0  # the server is back
    assert_complete_and_identical(dump, reference_dump, generated)


def stop_server_after(server, dump: Path, chunks: int):
    """Kill the XRootD server once `chunks` chunks of the run writing `dump` are complete."""
    import threading

    def stop() -> None:
        deadline = time.monotonic() + 120
        while completed_chunks(dump) < chunks and time.monotonic() < deadline:
            time.sleep(0.02)
        server.stop()

    thread = threading.Thread(target=stop, daemon=True)
    thread.start()
    return thread
