"""coffea 2026's Runner with its `checkpointer` on our executors: a run killed midway (SIGKILL, its whole process
group: our pool's workers and a stand-in scheduler's jobs die with it) and run again gives the accumulator of a
clean run, the second run loading the chunks the first saved instead of processing them again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from coffea import processor
from coffea.nanoevents import BaseSchema
from coffea.util import load

from coffea_dispatch.inputs.compat import LEGACY_COFFEA
from runner_processors import CHUNK_LOG_VARIABLE, CHUNK_SECONDS_VARIABLE, LoggedCounter

pytestmark = pytest.mark.skipif(LEGACY_COFFEA, reason="coffea 0.7 has no checkpointer (coffea.processor, 2025+)")

CHUNK = 5_000  # 24 chunks of the 120,000 generated events
CHUNKS = 24
TESTS = Path(__file__).resolve().parent

SCRIPT = """
import json, sys
from coffea import processor
from coffea.nanoevents import BaseSchema
from coffea.processor import SimpleCheckpointer
from coffea.util import save
import coffea_dispatch
from runner_processors import LoggedCounter

fileset, name, options, checkpoints, target = json.loads(sys.argv[1])
executor = coffea_dispatch.executor(name, status=False, **options)
runner = processor.Runner(
    executor=executor, schema=BaseSchema, chunksize=CHUNKSIZE, checkpointer=SimpleCheckpointer(checkpoints)
)
save(runner(fileset, treename="Events", processor_instance=LoggedCounter()), target)
executor.close()
""".replace("CHUNKSIZE", str(CHUNK))


def processed(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def saved(checkpoints: Path) -> int:
    return len(list(checkpoints.rglob("*.coffea")))


def start(arguments: list, env: dict[str, str], cwd: Path) -> subprocess.Popen:
    """The Runner script in a process group of its own (its workers and jobs are killed with it)."""
    script = cwd / "runner_script.py"
    script.write_text(SCRIPT)
    command = [sys.executable, str(script), json.dumps(arguments)]
    return subprocess.Popen(command, env=env, cwd=cwd, start_new_session=True, stderr=subprocess.PIPE, text=True)


def kill_midway(run: subprocess.Popen, checkpoints: Path, log: Path) -> None:
    """SIGKILL the whole group once a few chunks are saved, well before all are."""
    deadline = time.monotonic() + 240
    while saved(checkpoints) < 4 and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert run.poll() is None, f"the run ended before it was killed: {run.stderr.read()[-2000:]}"
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    assert 4 <= saved(checkpoints) < CHUNKS and len(processed(log)) < CHUNKS


@pytest.fixture(scope="module")
def clean(generated):
    runner = processor.Runner(executor=processor.IterativeExecutor(status=False), schema=BaseSchema, chunksize=CHUNK)
    return runner(generated, treename="Events", processor_instance=LoggedCounter())


def killed_and_run_again(name: str, options: dict, generated, tmp_path: Path, env: dict[str, str]) -> tuple:
    checkpoints, log, target = tmp_path / "checkpoints", tmp_path / "processed.log", tmp_path / "out.coffea"
    env = {**env, CHUNK_LOG_VARIABLE: str(log), CHUNK_SECONDS_VARIABLE: "0.4"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    arguments = [generated, name, options, str(checkpoints), str(target)]
    kill_midway(start(arguments, env, tmp_path), checkpoints, log)
    first = processed(log)
    again = start(arguments, {**env, CHUNK_SECONDS_VARIABLE: "0"}, tmp_path)
    assert again.wait(timeout=300) == 0, again.stderr.read()[-3000:]
    return load(str(target)), first, processed(log)[len(first) :]


def assert_resumed(output, first: list[str], second: list[str], clean) -> None:
    assert output == clean
    assert len(second) < CHUNKS  # the chunks saved before the kill were loaded, not processed again
    assert len(set(first) | set(second)) == CHUNKS


@pytest.mark.slow
@pytest.mark.parametrize("name", ["futures", "dask/local"])
def test_a_killed_runner_with_coffeas_checkpointer_resumes_on_our_executor(name, generated, clean, tmp_path):
    options = {"workers": 2, **({"scaleout": 1} if name == "dask/local" else {})}
    output, first, second = killed_and_run_again(name, options, generated, tmp_path, dict(os.environ))
    assert_resumed(output, first, second, clean)


def test_a_killed_runner_with_coffeas_checkpointer_resumes_on_a_job_array(generated, clean, tmp_path):
    """The stand-in scheduler runs each job as it is submitted, inside the killed group: jobs die midway too.
    Run again with the same folder=, the submission is continued (the checkpointer is part of the work's
    digest: the same one is the same work) and its jobs load what the killed ones saved."""
    from fake_scheduler import install

    env = {**os.environ, **install(tmp_path / "condor")}
    options = {"folder": str(tmp_path / "sub"), "poll_seconds": 0.2, "files_per_job": 3}
    output, first, second = killed_and_run_again("vanilla_lxplus", options, generated, tmp_path, env)
    assert_resumed(output, first, second, clean)


@pytest.mark.slow
def test_a_killed_runner_with_coffeas_checkpointer_resumes_on_a_vanilla_slurm_job_array(
    slurm, generated, clean, tmp_path
):
    """SLURM's jobs outlive the killed Runner process; run again with the same folder=, the finished jobs are
    collected, the others resubmitted, each loading the chunks saved."""
    options = {"folder": str(tmp_path / "sub"), "poll_seconds": 0.5, "walltime": "00:20:00"}
    output, first, second = killed_and_run_again(
        "vanilla_slurm", options, generated, tmp_path, {**os.environ, **slurm.env}
    )
    assert output == clean
