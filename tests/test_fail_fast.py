"""A batch system that refuses the worker jobs stops a Dask or parsl run within seconds, in one line quoting its
answer, exit 2, no traceback, no process left; worker jobs it accepts but never starts end the run after
--worker-wait with what its queue says of them, and are cancelled. On the command line and through
`coffea_dispatch.executor(...)` handed to coffea's Runner.

SLURM is the real one: its sbatch refusing (an empty configuration, the issue's "sbatch: fatal"), and the test
cluster's jobs kept pending in a partition that is down. HTCondor's daemons cannot be installed here: its
commands are stand-ins on PATH, written by the tests, answering as HTCondor does.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import psutil
import pytest
from coffea import processor
from coffea.nanoevents import BaseSchema

import coffea_dispatch
from coffea_dispatch.cli import main
from coffea_dispatch.errors import DispatchError
from coffea_dispatch.synthetic.generator import SampleSpec, make_sample
from conftest import ends_by_itself, write_analysis
from runner_processors import CountingProcessor
from services import INSTALL_SERVICES, MISSING_SERVICE

pytestmark = pytest.mark.slow  # every test here starts a cluster or a parsl kernel

CONDOR_REFUSAL = "ERROR: Can't find address of local schedd"  # condor_submit without a reachable schedd
SLURM_REFUSAL = "sbatch: fatal: Unable to process configuration file"  # sbatch with an empty slurm.conf
REFUSALS = {"sbatch": SLURM_REFUSAL, "condor_submit": CONDOR_REFUSAL}
DASK = ["dask/slurm", "dask/condor", "dask/lxplus"]
PARSL = ["parsl/slurm", "parsl/condor"]
ACCEPTANCE_SECONDS = 30  # issue 36's acceptance: a dask/slurm run against a failing sbatch ends within 30 s
LEFT_GRACE_SECONDS = 10  # a process being stopped as the run ends may take a moment to go


def submit_command(name: str) -> str:
    return "sbatch" if name.endswith("/slurm") else "condor_submit"


def stand_in(folder: Path, command: str, body: str) -> None:
    """A stand-in for one of HTCondor's commands (a test's, never the product's): a shell script on PATH."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / command
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> dict[str, list[str]]:
    folder = tmp_path_factory.mktemp("small")
    return {"Signal": [str(make_sample(folder / "signal.root", SampleSpec(events=2_000, seed=11)))]}


@pytest.fixture
def refusing(tmp_path, monkeypatch) -> Path:
    """Both batch systems refuse every job: the real sbatch with an empty configuration (as on a node where
    SLURM is not set up), condor_submit as HTCondor answers when no schedd can be reached."""
    if shutil.which("sbatch") is None:
        pytest.skip(f"{MISSING_SERVICE} SLURM: sbatch not installed ({INSTALL_SERVICES})")
    bin_folder = tmp_path / "bin"
    stand_in(bin_folder, "condor_submit", f'echo "Submitting job(s)"\necho "{CONDOR_REFUSAL}" >&2\nexit 1')
    monkeypatch.setenv("PATH", f"{bin_folder}{os.pathsep}{os.environ['PATH']}")
    configuration = tmp_path / "slurm.conf"
    configuration.write_text("")
    monkeypatch.setenv("SLURM_CONF", str(configuration))
    return bin_folder


def descendants() -> set[psutil.Process]:
    return set(psutil.Process().children(recursive=True))


def assert_none_left(before: set[psutil.Process]) -> None:
    """No process started by the run outlives it (parsl's interchange, a worker, a submit command)."""
    left = descendants() - before
    _, alive = psutil.wait_procs(list(left), timeout=LEFT_GRACE_SECONDS)
    assert not alive, [" ".join(p.cmdline()) for p in alive if p.is_running()]


def run_arguments(analysis: Path, name: str, tmp_path: Path, *more: str) -> list[str]:
    arguments = ["run", "--json-analysis", str(analysis), "--executor", name, "--no-progress", "--no-plot"]
    arguments += ["--log-directory", str(tmp_path / "logs"), "--walltime", "00:05:00", *more]
    return arguments + (["--dashboard-port", "0"] if name.startswith("dask/") else [])


def the_one_error(err: str) -> str:
    """The run's error: one line, the last, and no traceback or other error before it."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and "Error " not in err and "Exception" not in err, err
    assert [line for line in lines if line.startswith("error")] == lines[-1:], err
    return lines[-1]


@pytest.mark.parametrize("name", DASK + PARSL)
def test_a_refused_worker_job_stops_the_run_in_one_line(name, refusing, small, tmp_path, capsys):
    analysis = write_analysis(tmp_path / "analysis", small)
    before = descendants()
    code = ends_by_itself(lambda: main(run_arguments(analysis, name, tmp_path)))
    error = the_one_error(capsys.readouterr().err)
    assert code == 2
    command = submit_command(name)
    assert error.startswith(f"error: executor '{name}': {command} refused the worker job ("), error
    assert REFUSALS[command] in error and error.endswith(
        "check --queue, --walltime and --memory against the site's limits"
    )
    assert_none_left(before)


def run_with(executor: Any, fileset: dict[str, list[str]]) -> Any:
    runner = processor.Runner(executor=executor, schema=BaseSchema, chunksize=1_000)
    return runner(fileset, treename="Events", processor_instance=CountingProcessor())


def runner_refusal(name: str, options: dict[str, Any], fileset: dict[str, list[str]]) -> str:
    """What coffea's Runner, handed coffea_dispatch.executor(name, **options), is refused with (it must end)."""

    def call() -> None:
        with coffea_dispatch.executor(name, **options) as executor:
            run_with(executor, fileset)

    with pytest.raises(DispatchError) as refused:
        ends_by_itself(call)
    return str(refused.value)


@pytest.mark.parametrize("name", DASK + PARSL)
def test_a_refused_worker_job_fails_coffeas_runner_in_one_line(name, refusing, small, tmp_path):
    before = descendants()
    announced: list[str] = []
    options = {"status": False, "log_directory": str(tmp_path / "logs"), "announce": announced.append}
    options |= {"dashboard_port": 0} if name.startswith("dask/") else {}
    message = runner_refusal(name, options, small)
    command = submit_command(name)
    assert message.startswith(f"executor '{name}': {command} refused the worker job (") and "\n" not in message
    assert REFUSALS[command] in message and "Traceback" not in message
    assert message.endswith("check queue=, walltime= and memory= against the site's limits")  # keywords, not flags
    assert_none_left(before)


def marked(token: str) -> list[psutil.Process]:
    """Processes whose environment carries `token`: whatever a command started, wherever it was reparented."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get("FAIL_FAST_TEST") == token:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def test_dask_slurm_against_a_failing_sbatch_says_one_line_within_30_s_exit_2_and_leaves_no_process(
    refusing, small, tmp_path
):
    """Issue 36's acceptance: the command a user types, its own process, the sbatch of a node without SLURM's
    configuration (before: a tornado traceback, then an endless wait)."""
    analysis = write_analysis(tmp_path / "analysis", small)
    token = uuid.uuid4().hex
    command = [str(Path(sys.executable).parent / "coffea-dispatch"), *run_arguments(analysis, "dask/slurm", tmp_path)]
    environment = {**os.environ, "FAIL_FAST_TEST": token}
    done = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=ACCEPTANCE_SECONDS)
    assert done.returncode == 2
    error = the_one_error(done.stderr)
    assert "Traceback" not in done.stdout
    assert error.startswith("error: executor 'dask/slurm': sbatch refused the worker job (") and SLURM_REFUSAL in error
    _, alive = psutil.wait_procs(marked(token), timeout=LEFT_GRACE_SECONDS)
    assert not alive


# --- worker jobs accepted but never started: the bounded wait --------------------------------------------------

DOWN_PARTITION = "failfast-down"
SHORT_WAIT = "00:05"  # --worker-wait as MM:SS: five seconds


@pytest.fixture
def down_partition(slurm, monkeypatch) -> str:
    """A partition of the test cluster's node that is down: SLURM queues jobs there (PENDING, PartitionDown)
    and never starts them, as on a site whose partition is drained."""
    for key, value in slurm.env.items():
        monkeypatch.setenv(key, value)
    node = socket.gethostname().split(".")[0]
    shown = subprocess.run(["scontrol", "show", "partition", DOWN_PARTITION], capture_output=True, text=True)
    verb = "update" if shown.returncode == 0 else "create"
    spec = [f"PartitionName={DOWN_PARTITION}", f"Nodes={node}", "MaxTime=INFINITE", "State=DOWN"]
    subprocess.run(["scontrol", verb, *spec], check=True, capture_output=True)
    return DOWN_PARTITION


def slurm_states(job_ids: list[str]) -> list[str]:
    command = ["squeue", "--noheader", "--states=all", f"--jobs={','.join(job_ids)}", "--format=%T"]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()


def waited_jobs(error: str, name: str, queue_command: str) -> list[str]:
    """The job ids the one line names, after checking how it begins."""
    start = f"error: executor '{name}': no worker started within 00:00:05 (--worker-wait); "
    assert error.startswith(f"{start}{queue_command} says of job(s) "), error
    return error[len(start) :].split("job(s) ", 1)[1].split(":")[0].split(", ")


@pytest.mark.parametrize("name", ["dask/slurm", "parsl/slurm"])
def test_slurm_jobs_that_never_start_end_the_run_after_the_worker_wait(name, down_partition, small, tmp_path, capsys):
    analysis = write_analysis(tmp_path / "analysis", small)
    before = descendants()
    more = ("--queue", down_partition, "--scaleout", "1", "--worker-wait", SHORT_WAIT)
    code = ends_by_itself(lambda: main(run_arguments(analysis, name, tmp_path, *more)))
    error = the_one_error(capsys.readouterr().err)
    assert code == 2
    job_ids = waited_jobs(error, name, "squeue")
    assert error.split(f"{', '.join(job_ids)}: ")[1].startswith(
        "PENDING (PartitionDown); the worker jobs are cancelled"
    )
    assert set(slurm_states(job_ids)) == {"CANCELLED"}  # none left in the queue
    assert_none_left(before)


@pytest.fixture
def never_starting(tmp_path, monkeypatch) -> Path:
    """HTCondor accepts every job and keeps it idle: stand-ins for condor_submit, condor_q (its autoformat
    answers: ours, `JobStatus HoldReason`, and parsl's, `-af:jr JobStatus`) and condor_rm, which notes what it
    removes."""
    bin_folder = tmp_path / "bin"
    stand_in(bin_folder, "condor_submit", 'echo "Submitting job(s)."\necho "1 job(s) submitted to cluster 4242."')
    stand_in(bin_folder, "condor_q", 'case "$*" in\n  *-af:jr*) echo "$1 1" ;;\n  *) echo "1 undefined" ;;\nesac')
    stand_in(bin_folder, "condor_rm", f'echo "$@" >> {tmp_path / "removed"}\necho "All jobs removed."')
    monkeypatch.setenv("PATH", f"{bin_folder}{os.pathsep}{os.environ['PATH']}")
    return tmp_path / "removed"


@pytest.mark.parametrize("name", ["dask/condor", "parsl/condor"])
def test_htcondor_jobs_that_never_start_end_the_run_after_the_worker_wait(name, never_starting, small, tmp_path):
    before = descendants()
    options = {"status": False, "log_directory": str(tmp_path / "logs"), "announce": lambda line: None}
    options |= {"scaleout": 1, "worker_wait": SHORT_WAIT} | ({"dashboard_port": 0} if name.startswith("dask/") else {})
    message = runner_refusal(name, options, small)
    start = f"executor '{name}': no worker started within 00:00:05 (worker_wait=); condor_q says of job(s) 4242.0: "
    assert message.startswith(f"{start}IDLE; the worker jobs are cancelled"), message
    assert message.endswith("(queue=, memory=, walltime=) or wait longer (worker_wait=)")  # keywords, not flags
    assert "4242.0" in never_starting.read_text()  # condor_rm removed the job
    assert_none_left(before)
