"""Batch-system Dask clusters: real SLURM runs; HTCondor/LXPLUS job scripts rendered (no HTCondor here)."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

import coffea_dispatch
from coffea_dispatch.cli import main
from coffea_dispatch.errors import DispatchError
from coffea_dispatch.executors import ExecutorSettings, kind_of
from coffea_dispatch.executors import dask as dask_backends
from coffea_dispatch.inputs.proxy import grid_proxy
from conftest import ends_by_itself, write_analysis
from helpers import make_proxy, rows_on_slurm_equal_iterative


def rendered(settings: ExecutorSettings) -> str:
    """The worker job script, checked for the run's TLS credentials (files that exist only while it is up)."""
    with dask_backends.start_cluster(kind_of(settings.name), settings) as cluster:
        script = cluster.job_script()
        assert cluster.scheduler_address.startswith("tls://")
        for flag in ("--tls-ca-file", "--tls-cert", "--tls-key"):
            path = script.split(f"{flag} ")[1].split()[0].strip("'\"")
            assert os.stat(path).st_mode & 0o777 == 0o600 and Path(path).parent.stat().st_mode & 0o777 == 0o700
        credentials = Path(path).parent
    assert not credentials.exists()  # deleted with the cluster
    return script


@pytest.mark.filterwarnings("ignore:Port 8787 is already in use")
def test_condor_job_script(tmp_path):
    proxy = make_proxy(tmp_path, days=30)
    script = rendered(
        ExecutorSettings(
            executor="dask/condor",
            workers=2,
            memory="4GB",
            disk="8GB",
            queue="longlunch",
            voms=str(proxy),
            remote_inputs=True,
            log_directory=str(tmp_path / "logs"),
        )
    )
    assert "MY.DaskWorkerMemory = 4000000000" in script and "MY.DaskWorkerDisk = 8000000000" in script
    assert "MY.DaskWorkerCores = 2" in script
    assert '+JobFlavour = "longlunch"' in script
    assert f"export X509_USER_PROXY={proxy}" in script
    assert f"{sys.executable} -m distributed.cli.dask_worker" in script


@pytest.mark.filterwarnings("ignore:Port 8787 is already in use")
def test_lxplus_job_script_and_scheduler_port(tmp_path):
    proxy = make_proxy(tmp_path, days=30)
    taken = socket.socket()
    try:
        taken.bind(("", 8786))
    except OSError:
        taken.close()
        taken = None  # already taken by someone else: the point is the same
    try:
        script = rendered(
            ExecutorSettings(
                executor="dask/lxplus",
                memory="2GB",
                disk="4GB",
                queue="espresso",
                voms=str(proxy),
                remote_inputs=True,
                worker_image="/cvmfs/my/image:v1",
                log_directory=str(tmp_path / "logs"),
            )
        )
    finally:
        if taken:
            taken.close()
    assert '+JobFlavour = "espresso"' in script
    assert 'MY.SingularityImage = "/cvmfs/my/image:v1"' in script
    assert "--worker-port 10000:10100" in script
    assert "MY.DaskWorkerMemory = 2000000000" in script and "MY.DaskWorkerDisk = 4000000000" in script
    assert f"export X509_USER_PROXY={proxy}" in script
    scheduler_port = int(script.split("dask_worker tls://")[1].split()[0].rsplit(":", 1)[1])
    assert scheduler_port > 8786 and scheduler_port != 8787  # 8787 is the dashboard's


@pytest.mark.filterwarnings("ignore:Port 8787 is already in use")
def test_slurm_job_script(tmp_path):
    proxy = make_proxy(tmp_path, days=30)
    script = rendered(
        ExecutorSettings(
            executor="dask/slurm",
            workers=2,
            memory="6GB",
            walltime="02:30:00",
            queue="short",
            voms=str(proxy),
            log_directory=str(tmp_path / "logs"),
        )
    )
    for line in (
        "#SBATCH -p short",
        "#SBATCH -t 02:30:00",
        "#SBATCH --mem=6G",
        "#SBATCH --cpus-per-task=2",
        f"export X509_USER_PROXY={proxy}",
    ):
        assert line in script


def test_proxy_needed_missing_or_expiring(tmp_path, monkeypatch):
    monkeypatch.delenv("X509_USER_PROXY", raising=False)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # openssl yes, voms-proxy-info no
    with pytest.raises(DispatchError, match="--voms .*: no such proxy file"):
        grid_proxy(str(tmp_path / "nope"), needed=True, lifetime_needed=3600)
    valid = make_proxy(tmp_path, days=2)
    assert grid_proxy(str(valid), needed=True, lifetime_needed=3600) == valid.resolve()
    with pytest.raises(DispatchError, match="expires in .* before the jobs' 168.0 h"):
        grid_proxy(str(valid), needed=True, lifetime_needed=7 * 24 * 3600)
    with monkeypatch.context() as patch:  # openssl cannot issue an already-expired certificate: its lifetime is
        patch.setattr("coffea_dispatch.inputs.proxy.seconds_left", lambda proxy: -60)
        with pytest.raises(DispatchError, match="has expired.*voms-proxy-init"):
            grid_proxy(str(valid), needed=True, lifetime_needed=3600)
    monkeypatch.setattr("coffea_dispatch.inputs.proxy.find_proxy", lambda voms: None)
    with pytest.raises(DispatchError, match="need a grid proxy and none was found"):
        grid_proxy(None, needed=True, lifetime_needed=3600)
    assert grid_proxy(None, needed=False, lifetime_needed=3600) is None  # local inputs: no proxy needed


@pytest.mark.slow
def test_dask_slurm_writes_the_rows_of_the_iterative_run(slurm, generated, shared_nanoaod, tmp_path, monkeypatch):
    samples = {
        **generated,
        "DY": [str(shared_nanoaod / "nano_dy.root")],
        "Dimuon": [str(shared_nanoaod / "nano_dimuon.root")],
        "Empty": [str(shared_nanoaod / "nano_dy_empty.root")],
    }
    result = rows_on_slurm_equal_iterative(slurm, monkeypatch, tmp_path, samples, "dask/slurm", memory="4GB")
    assert result.samples["DY"].events == 40
    assert (result.samples["Empty"].events, result.samples["Empty"].chunks) == (0, 1)
    # the workers really ran as SLURM jobs: one job of 2 workers, kept for the whole run (never retired and
    # replaced because adaptive scaling counted workers instead of jobs)
    assert len(list((tmp_path / "logs").glob("*.err"))) == 1


@pytest.mark.slow
def test_cluster_fails_at_once_when_sbatch_refuses_the_worker_job(slurm, tmp_path, monkeypatch):
    for key, value in slurm.env.items():
        monkeypatch.setenv(key, value)

    credentials = tmp_path / "credentials"

    def start() -> None:
        with coffea_dispatch.cluster(
            "dask/slurm",
            queue="no-such-partition",
            walltime="00:05:00",
            log_directory=str(tmp_path / "logs"),
            credentials_directory=str(credentials),
        ):
            pass

    with pytest.raises(DispatchError) as refused:
        ends_by_itself(start)
    message = str(refused.value)
    assert message.startswith("executor 'dask/slurm': sbatch refused the worker job (sbatch: error: ")
    assert "partition" in message and "\n" not in message and "Traceback" not in message
    assert "check queue=, walltime= and memory= against the site's limits" in message  # keywords, not flags
    (private,) = credentials.iterdir()  # the run's credentials were made, and deleted as the cluster closed
    assert list(private.iterdir()) == []


@pytest.mark.slow
def test_run_fails_at_once_when_sbatch_refuses_the_worker_job(slurm, generated, tmp_path, monkeypatch, capsys):
    for key, value in slurm.env.items():
        monkeypatch.setenv(key, value)
    analysis = write_analysis(tmp_path, {"Signal": generated["Signal"]})
    arguments = ["run", "--json-analysis", str(analysis), "--executor", "dask/slurm", "--queue", "no-such-partition"]
    arguments += ["--walltime", "00:05:00", "--log-directory", str(tmp_path / "logs"), "--no-progress", "--no-plot"]
    code = ends_by_itself(lambda: main(arguments))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("error: executor 'dask/slurm': sbatch refused the worker job (sbatch: error: ")
    assert err[-1].endswith("check --queue, --walltime and --memory against the site's limits")
