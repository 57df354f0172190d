"""Dask executors on a real LocalCluster: same rows as iterative, the dashboard, the performance report."""

from __future__ import annotations

import socket
import urllib.request

import pytest

from coffea_dispatch.executors.dashboard import dashboard_lines
from coffea_dispatch.run import RunOptions, run_analysis
from conftest import LOOSE_CUTS, read_rows, write_analysis
from test_rows import assert_same_rows

SMALL_CHUNK = 15_000  # several chunks per generated file


def run(analysis, dump, executor, **extra):
    return run_analysis(
        RunOptions(json_analysis=str(analysis), dump=str(dump), executor=executor, progress=False, plot=False, **extra)
    )


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
            with urllib.request.urlopen(url, timeout=30) as response:
                statuses[url] = response.status

    try:
        analysis = write_analysis(tmp_path, {"Signal": generated["Signal"]})
        run(analysis, tmp_path / "out", "dask/local", scaleout=1, announce=check_link)
    finally:
        blocker.close()
    ((url, status),) = statuses.items()
    assert status == 200
    assert url.endswith("/status") and ":8787/" not in url


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
