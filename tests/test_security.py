"""Only our workers get in: every Dask cluster we start speaks mutual TLS with credentials made for the run,
dashboards listen on loopback, and what a batch system executes is writable by nobody else."""

from __future__ import annotations

import http.cookiejar
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
from distributed import Client
from distributed.security import Security

from coffea_dispatch.executors import ExecutorSettings, open_executor
from coffea_dispatch.executors import dask as dask_backends
from coffea_dispatch.executors.credentials import run_credentials
from coffea_dispatch.options import DEFAULT_DASHBOARD_PORT
from conftest import independent_of_coffea, write_analysis
from helpers import only_submission

pytestmark = independent_of_coffea
CREDENTIALS = "credentials"


def listening_hosts(port: int) -> set[str]:
    """The addresses this process listens on at `port` (the scheduler and its dashboard run here)."""
    sockets = psutil.Process().net_connections(kind="inet")
    return {c.laddr.ip for c in sockets if c.status == "LISTEN" and c.laddr.port == port}


def run_folders(root: Path) -> list[Path]:
    """The run folders in our private folder of the credentials directory `root`."""
    private = root / f"coffea-dispatch-{os.getuid()}"
    return sorted(p for p in private.iterdir() if p.is_dir()) if private.exists() else []


def status_of(url: str, opener=None) -> int:
    try:
        return (opener or urllib.request.build_opener()).open(url, timeout=10).status
    except urllib.error.HTTPError as error:
        return error.code


def assert_only_the_token_opens_the_dashboard(link: str) -> None:
    """Any local account reaches 127.0.0.1: without the printed URL's token, every page is refused."""
    assert "?token=" in link
    base = link.split("?")[0]
    pages = [base, base.replace("/status", "/info/main/workers.html"), base.replace("/status", "/info/main/logs.html")]
    assert [status_of(page) for page in pages] == [403, 403, 403]
    assert status_of(link.replace("token=", "token=guess")) == 403
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    assert status_of(link, browser) == 200  # the token sets a cookie; the pages then open
    assert [status_of(page, browser) for page in pages] == [200, 200, 200]


def assert_only_holders_get_in(client: Client, root: Path, announced: list[str]) -> None:
    """Our client works; a plain TCP client and a TLS client with other credentials cannot even connect (so
    they submit nothing); the credential files are ours alone; the printed dashboard URL answers, and the
    dashboard listens on loopback only."""
    assert client.submit(lambda x: x + 1, 1).result() == 2
    address = client.scheduler.address
    assert address.startswith("tls://")
    with pytest.raises(OSError):  # distributed's CommClosedError is an OSError
        Client("tcp://" + address.removeprefix("tls://"), timeout="5s")
    with pytest.raises(OSError):
        Client(address, security=Security.temporary(), timeout="5s")
    (folder,) = run_folders(root)
    assert folder.stat().st_mode & 0o777 == 0o700 and folder.parent.stat().st_mode & 0o777 == 0o700
    assert sorted((f.name, f.stat().st_mode & 0o777) for f in folder.iterdir()) == [
        ("certificate.pem", 0o600),
        ("key.pem", 0o600),
    ]
    (link,) = [line.removeprefix("Dask dashboard: ") for line in announced if line.startswith("Dask dashboard: ")]
    assert link.startswith("http://127.0.0.1:")
    assert_only_the_token_opens_the_dashboard(link)
    assert listening_hosts(int(link.split(":")[2].split("/")[0])) == {"127.0.0.1"}


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Port 8787 is already in use")
def test_dask_local_is_tls_only_and_its_dashboard_is_on_loopback(tmp_path):
    root = tmp_path / CREDENTIALS
    settings = ExecutorSettings(executor="dask/local", scaleout=1, credentials_directory=str(root))
    lines: list[str] = []
    with open_executor(settings, n_items=1, announce=lines.append) as run:
        assert_only_holders_get_in(run.client, root, lines)
        for worker in run.client.scheduler_info()["workers"].values():  # their own web servers
            assert status_of(f"http://127.0.0.1:{worker['services']['dashboard']}/metrics") == 404
    assert run_folders(root) == [] and not any(line.startswith("warning") for line in lines)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Port 8787 is already in use")
def test_dask_slurm_workers_join_over_tls_and_nobody_else_does(slurm, tmp_path, monkeypatch):
    """Real SLURM jobs start the workers with the run's credentials (their paths are on the worker command
    line); the credentials are gone when the run ends. That rows over TLS equal the iterative ones is
    test_dask_batch.py's dask/slurm test, which runs over TLS like every cluster."""
    for key, value in slurm.env.items():
        monkeypatch.setenv(key, value)
    root = tmp_path / CREDENTIALS
    settings = ExecutorSettings(
        executor="dask/slurm",
        memory="2GB",
        walltime="00:10:00",
        queue="debug",
        scaleout=1,
        log_directory=str(tmp_path / "logs"),
        credentials_directory=str(root),
    )
    lines: list[str] = []
    with open_executor(settings, n_items=1, announce=lines.append) as run:
        client = run.client
        (worker,) = client.scheduler_info()["workers"]
        assert worker.startswith("tls://")  # the job's worker came in over TLS
        assert_only_holders_get_in(client, root, lines)
    assert run_folders(root) == []


def test_credentials_of_a_killed_run_are_removed_by_the_next(tmp_path):
    root = tmp_path / CREDENTIALS
    killed = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from coffea_dispatch.executors.credentials import run_credentials\n"
        "context = run_credentials(Path(sys.argv[1]))\n"
        "context.__enter__()\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run([sys.executable, "-c", killed, str(root)], check=False)
    assert done.returncode == -signal.SIGKILL
    (left,) = run_folders(root)  # SIGKILL: nothing could clean up
    with run_credentials(root):
        assert left not in run_folders(root) and len(run_folders(root)) == 1
    assert run_folders(root) == []


def test_a_shared_credentials_directory_is_never_changed_and_only_our_files_are_deleted(tmp_path):
    """Before, a shared folder (drwxrwsr-x) was made drwx------ without a word, and a file of someone else's
    whose name looked like one of ours was deleted."""
    shared = tmp_path / "group-area"
    shared.mkdir()
    shared.chmod(0o2775)
    theirs = shared / "run~otherhost~123~abcd"  # another user's file and folder with names like ours
    theirs.mkdir()
    (shared / "run~otherhost~124~abcd").write_text("not ours")
    with run_credentials(shared):
        (folder,) = run_folders(shared)
        assert folder.parent.parent == shared and folder.parent.stat().st_mode & 0o777 == 0o700
    assert shared.stat().st_mode & 0o7777 == 0o2775
    assert sorted(p.name for p in shared.iterdir()) == [
        f"coffea-dispatch-{os.getuid()}",
        "run~otherhost~123~abcd",
        "run~otherhost~124~abcd",
    ]
    stranger = shared / f"coffea-dispatch-{os.getuid()}" / f"run~{socket.gethostname()}~999999~beef"
    stranger.write_text("a file no record lists, with a name like a dead run's")
    with run_credentials(shared):
        pass
    assert stranger.exists() and run_folders(shared) == []


def test_a_private_folder_others_may_enter_is_refused_never_chmod_ed(tmp_path):
    from coffea_dispatch.errors import DispatchError

    private = tmp_path / f"coffea-dispatch-{os.getuid()}"
    private.mkdir()
    private.chmod(0o755)
    with pytest.raises(DispatchError, match="others may enter it"), run_credentials(tmp_path):
        pass
    assert private.stat().st_mode & 0o777 == 0o755


@pytest.mark.parametrize(
    "dashboard, scheduler, warned",
    [
        ("127.0.0.1", None, []),
        ("127.0.0.1", "tls://scheduler.example.org:8786", []),
        ("127.0.0.1", "tcp://127.0.0.1:8786", []),
        ("0.0.0.0", None, ["dashboard listens on 0.0.0.0"]),
        (":9999", None, ["dashboard listens on every interface"]),
        ("127.0.0.1", "tcp://scheduler.example.org:8786", ["plain TCP: anyone who can reach that port"]),
    ],
)
def test_what_is_exposed_is_said_in_one_line(dashboard, scheduler, warned):
    settings = ExecutorSettings(executor="dask/local", dashboard_address=dashboard, scheduler_address=scheduler)
    lines = dask_backends.exposure_warnings(settings)
    assert len(lines) == len(warned) and all(w in line for w, line in zip(warned, lines, strict=True))


def test_dashboard_address_takes_a_host_or_host_and_port():
    assert dask_backends.dashboard_address(ExecutorSettings(executor="dask/local")) == (
        f"127.0.0.1:{DEFAULT_DASHBOARD_PORT}"
    )
    assert dask_backends.dashboard_address(ExecutorSettings(executor="dask/local", dashboard_address="0.0.0.0:9000"))
    custom = ExecutorSettings(executor="dask/local", dashboard_address="10.0.0.5", dashboard_port=9001)
    assert dask_backends.dashboard_address(custom) == "10.0.0.5:9001"


def test_what_the_batch_system_runs_is_writable_by_nobody_else(generated, tmp_path, monkeypatch):
    """With a group-writable umask (002, common on shared clusters) the submission folder, job scripts, submit
    files, submit.sh, the manifest and the per-job JSONs still give nobody else write access; the grid proxy is
    referenced where it is, never copied."""
    from coffea_dispatch.cli import run_analysis_main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no condor_submit: the files are written, not submitted
    analysis = write_analysis(tmp_path / "config", generated)
    previous = os.umask(0o002)
    try:
        code = run_analysis_main(["--json-analysis", str(analysis), "--executor", "vanilla_lxplus", "--skipCQR"])
    finally:
        os.umask(previous)
    assert code == 3
    submission = only_submission(tmp_path)
    paths = [submission.folder.parent, submission.folder, *submission.folder.rglob("*")]
    assert {p.suffix for p in paths} >= {".sh", ".sub", ".json"}
    writable = [f"{p} {oct(p.stat().st_mode)}" for p in paths if p.stat().st_mode & 0o022]
    assert writable == []
    assert [p for p in paths if "proxy" in p.name] == []


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Port 8787 is already in use")
def test_scheduler_address_tls_uses_the_users_dask_tls_configuration(tmp_path):
    """coffea-casa style: a cluster started elsewhere with TLS, its settings in the Dask configuration; attaching
    with --scheduler-address tls://... works and warns of nothing."""
    import dask
    from distributed import LocalCluster

    with run_credentials(tmp_path / CREDENTIALS) as security:
        tls = security.get_tls_config_for_role("client")
        configuration = {
            "distributed.comm.tls.ca-file": tls["ca_file"],
            "distributed.comm.tls.client.cert": tls["cert"],
            "distributed.comm.tls.client.key": tls["key"],
        }
        with LocalCluster(n_workers=1, processes=False, security=security, dashboard_address=":0") as cluster:
            assert cluster.scheduler_address.startswith("tls://")
            settings = ExecutorSettings(executor="dask/casa", scheduler_address=cluster.scheduler_address)
            lines: list[str] = []
            with dask.config.set(configuration), open_executor(settings, n_items=1, announce=lines.append) as run:
                assert run.client.submit(lambda: 41 + 1).result() == 42
            assert not any(line.startswith("warning") for line in lines)
