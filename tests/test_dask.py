"""Dask executors on a real LocalCluster: same rows as iterative, the dashboard, the performance report."""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import dask
import distributed  # noqa: F401  before any dask.config.set: see below
import pyarrow.parquet as pq
import pytest

import coffea_dispatch
from coffea_dispatch.cli import main
from coffea_dispatch.errors import DispatchError
from coffea_dispatch.executors.dashboard import dashboard_lines
from conftest import LOOSE_CUTS, TESTS, independent_of_coffea, read_rows, write_analysis
from helpers import SMALL_CHUNK, assert_same_rows
from helpers import run_analysis_with as run

pytestmark = pytest.mark.slow  # every test here starts workers, a cluster or a server


def test_dask_local_writes_the_rows_of_the_iterative_run(generated, tmp_path):
    analysis = write_analysis(tmp_path, generated)
    run(analysis, tmp_path / "iterative", "iterative", chunk=SMALL_CHUNK)
    result = run(analysis, tmp_path / "dask", "dask/local", chunk=SMALL_CHUNK, scaleout=2)
    for sample in generated:
        assert_same_rows(read_rows(tmp_path / "dask", sample), read_rows(tmp_path / "iterative", sample))
        assert result.samples[sample].chunks >= 2 * len(generated[sample])
    assert result.workers == 2
    assert sum(s.events for s in result.samples.values()) == 120_000


def test_dask_local_on_real_nanoaod(shared_nanoaod, tmp_path):
    samples = {
        "DY": [str(shared_nanoaod / "nano_dy.root")],
        "Dimuon": [str(shared_nanoaod / "nano_dimuon.root")],
        "Empty": [str(shared_nanoaod / "nano_dy_empty.root")],
    }
    analysis = write_analysis(tmp_path, samples, metaconditions={"preselection": LOOSE_CUTS})
    run(analysis, tmp_path / "iterative", "iterative")
    result = run(analysis, tmp_path / "dask", "dask/local", scaleout=2)
    for sample in ("DY", "Dimuon"):
        assert_same_rows(read_rows(tmp_path / "dask", sample), read_rows(tmp_path / "iterative", sample))
    assert result.samples["Empty"].events == 0 and result.samples["Empty"].chunks == 1


@pytest.mark.filterwarnings("ignore:Port 8787 is already in use")
def test_dashboard_url_is_real_when_8787_is_taken(generated, tmp_path):
    """Another process holds 8787: Dask picks another port, and the URL we print is the one that answers."""
    blocker = socket.socket()
    try:
        blocker.bind(("127.0.0.1", 8787))
        blocker.listen()
    except OSError:
        pytest.skip("port 8787 is in use by something we cannot control")
    statuses: dict[str, int] = {}

    def check_link(line: str) -> None:
        if line.startswith("Dask dashboard: "):
            url = line.removeprefix("Dask dashboard: ")
            browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
            with browser.open(url, timeout=30) as response:  # the token buys a cookie, the cookie the page
                statuses[url] = response.status

    try:
        analysis = write_analysis(tmp_path, {"Signal": generated["Signal"]})
        run(analysis, tmp_path / "out", "dask/local", scaleout=1, announce=check_link)
    finally:
        blocker.close()
    ((url, status),) = statuses.items()
    assert status == 200
    assert "/status?token=" in url and ":8787/" not in url


def test_dask_performance_report(generated, tmp_path):
    report = tmp_path / "dask-report.html"
    analysis = write_analysis(tmp_path, {"Signal": generated["Signal"]})
    run(analysis, tmp_path / "out", "dask/local", scaleout=1, dask_report=str(report))
    assert report.stat().st_size > 10_000 and b"<html" in report.read_bytes()[:2000].lower()


def test_tunnel_lines_on_a_remote_host():
    link = "http://10.0.0.5:40123/status"
    assert dashboard_lines(link, environ={}) == [f"Dask dashboard: {link}"]
    lines = dashboard_lines(link, environ={"SSH_CONNECTION": "1.2.3.4 5555 10.0.0.5 22"})
    assert lines[1].startswith("from your laptop: ssh -N -L 8000:localhost:40123 ")
    assert lines[2] == "then open http://localhost:8000/status"
    assert len(dashboard_lines(link, show_tunnel=True, environ={})) == 3


@pytest.mark.parametrize(
    "workflow, verdict",
    [
        ("user_processors:AbortsOnOneChunk", "kills the process with signal SIGABRT"),
        ("user_processors:HogsMemoryOnOneChunk", "needs about"),
    ],
)
def test_killed_worker_is_diagnosed_and_other_outputs_complete(generated, tmp_path, capsys, workflow, verdict):
    reference = write_analysis(tmp_path / "ref", generated)
    run(reference, tmp_path / "expected", "iterative", chunk=SMALL_CHUNK)
    analysis = write_analysis(tmp_path / "job", generated, workflow=workflow)
    dump = tmp_path / "out"
    # distributed's defaults are in dask's config once it is imported: imported inside this block (the first
    # time), the block's end removed the whole "distributed" section with it, and the next test failed with
    # KeyError: 'comm' (the order-dependent failure seen when this test ran after its sibling)
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        code = main(
            [
                "run",
                "--json-analysis",
                str(analysis),
                "--dump",
                str(dump),
                "--executor",
                "dask/local",
                "-s",
                "2",
                "--memory",
                "1GB",
                "--chunk",
                str(SMALL_CHUNK),
                "--no-progress",
                "--no-plot",
            ]
        )
    out = " ".join(capsys.readouterr().out.split())
    assert code == 1
    killer = f"{generated['Background'][1]} (entries 0-15000) {verdict}"
    assert killer in out
    if verdict == "needs about":
        assert re.search(r"needs about [12]\.\d GB \(peak RSS\) but workers have 1\.0 GB: use --memory [34]GB", out)
    assert "reproduce it alone: coffea-dispatch run --json-analysis" in out
    # every other chunk wrote exactly the rows the iterative base workflow writes
    expected = sorted((tmp_path / "expected").rglob("*.parquet"))
    produced = {p.relative_to(dump) for p in dump.rglob("*.parquet") if ".diagnosis" not in p.parts}
    missing = [
        p.relative_to(tmp_path / "expected") for p in expected if p.relative_to(tmp_path / "expected") not in produced
    ]
    assert [m.name for m in missing] == [n for n in (m.name for m in missing) if n.startswith("Background_1-")]
    assert len(missing) == 1 and missing[0].name.endswith("_0-15000.parquet")
    for path in expected:
        relative = path.relative_to(tmp_path / "expected")
        if relative in produced:
            assert pq.read_table(dump / relative).equals(pq.read_table(path)), relative
    # the single-file analysis JSON really lists only the killer's file
    reproducer = next((dump / ".diagnosis").rglob("analysis.json"))
    samples = json.loads((reproducer.parent / "samples.json").read_text())
    assert samples == {"Background": [generated["Background"][1]]}
    if "SIGABRT" in verdict:  # and the printed command reproduces the crash
        command = out.split("reproduce it alone: ")[1].split(" --dump ")[0].split()
        environment = {**os.environ, "PYTHONPATH": str(TESTS)}  # where user_processors lives
        done = subprocess.run(
            [str(Path(sys.executable).parent / command[0]), *command[1:], "--no-progress"],
            capture_output=True,
            timeout=300,
            env=environment,
        )
        assert done.returncode == -signal.SIGABRT


def test_local_workers_fork_unless_the_user_chose(monkeypatch):
    from coffea_dispatch.executors.dask import START_METHOD_VARIABLE, local_start_method

    monkeypatch.delenv(START_METHOD_VARIABLE, raising=False)
    assert local_start_method() == "fork"  # Linux: inherit coffea and the planner's open files
    monkeypatch.setenv(START_METHOD_VARIABLE, "spawn")
    assert local_start_method() == "spawn"


def test_scheduler_address_attaches_to_a_running_cluster_and_leaves_it_running(generated, tmp_path):
    from distributed import Client, LocalCluster

    analysis = write_analysis(tmp_path, {"Signal": generated["Signal"]})
    run(analysis, tmp_path / "iterative", "iterative", chunk=SMALL_CHUNK)
    with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0") as cluster:
        result = run(
            analysis,
            tmp_path / "attached",
            "dask/local",
            chunk=SMALL_CHUNK,
            scheduler_address=cluster.scheduler_address,
        )
        with Client(cluster.scheduler_address) as client:  # still there after the run
            assert len(client.scheduler_info()["workers"]) == 1
    assert_same_rows(read_rows(tmp_path / "attached", "Signal"), read_rows(tmp_path / "iterative", "Signal"))
    assert result.samples["Signal"].events == 50_000


@independent_of_coffea
def test_scheduler_address_unreachable(generated, tmp_path, capsys):
    analysis = write_analysis(tmp_path, {"Signal": generated["Signal"]})
    code = main(
        [
            "run",
            "--json-analysis",
            str(analysis),
            "--executor",
            "dask/local",
            "--no-progress",
            "--scheduler-address",
            "tcp://127.0.0.1:1",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: --scheduler-address tcp://127.0.0.1:1: cannot connect")


def test_a_chunk_dask_blamed_that_runs_fine_alone_is_run_here(generated, tmp_path, monkeypatch):
    """Dask blames every chunk running on a worker that dies: one that only shared the worker with the killer
    (seen in loaded full-suite runs: a second chunk of the same worker marked failed beside the killer) is
    diagnosed alone, runs fine, and is run in the main process: nothing lost, no failure reported."""
    from coffea_dispatch.errors import KilledWorkerError
    from coffea_dispatch.pipeline import run as pipeline

    real_execute = pipeline._execute

    def blamed_once(executor, items, runner, skipbadfiles):
        collected, killed = real_execute(executor, items[1:], runner, skipbadfiles)
        return collected, [*killed, KilledWorkerError(items[0], 4 * 10**9)]  # as if its worker had died

    analysis = write_analysis(tmp_path, generated)
    run(analysis, tmp_path / "clean", "iterative", chunk=SMALL_CHUNK)  # and the inputs are cached: chunks, not files
    monkeypatch.setattr(pipeline, "_execute", blamed_once)
    result = run(analysis, tmp_path / "out", "iterative", chunk=SMALL_CHUNK)
    assert not result.failed_chunks and result.events == 120_000
    said = "was running on a Dask worker that died; it runs fine alone, so it was run here"
    assert any(said in note for note in result.notes)
    assert result.completeness.complete
    for sample in generated:
        assert_same_rows(read_rows(tmp_path / "out", sample), read_rows(tmp_path / "clean", sample))


@pytest.mark.parametrize(
    "name, options, refusal",
    [
        ("futures", {}, "cluster('futures'): not a Dask executor (choose from: dask/local, "),
        ("dask/nowhere", {}, "unknown executor 'dask/nowhere' (choose from: "),
        ("dask/local", {"memory": "lots"}, "memory='lots': expected a size such as 10GB or 2000MB"),
        ("dask/local", {"queue": "short"}, "executor 'dask/local': unknown option(s) queue (it takes: "),
        ("dask/slurm", {"walltime": "soon"}, "walltime="),
        ("dask/local", {"retries": 2}, "cluster('dask/local'): retries= is coffea's Runner's retries"),
        ("dask/local", {"announce": "print"}, "announce= must be a function taking one line of text"),
    ],
)
def test_cluster_options_are_checked_as_executor_checks_them(name, options, refusal, tmp_path):
    """Before anything starts: no credentials are made, no cluster is started."""
    credentials = str(tmp_path / "credentials")
    with (
        pytest.raises(DispatchError) as refused,
        coffea_dispatch.cluster(name, credentials_directory=credentials, **options),
    ):
        pytest.fail("the block ran")
    assert refusal in str(refused.value)
    assert not (tmp_path / "credentials").exists()
    if "retries" not in options and "announce" not in options and name.startswith("dask/"):
        with pytest.raises(DispatchError) as as_executor:  # executor() refuses the same, in the same words
            coffea_dispatch.executor(name, **options)
        assert refusal in str(as_executor.value)
