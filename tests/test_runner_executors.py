"""Our executors handed to coffea's own processor.Runner, as PocketCoffea and plain coffea scripts do: each
accumulator equals Runner(IterativeExecutor)'s, on both coffea generations."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from coffea import processor
from coffea.nanoevents import BaseSchema
from coffea.processor.executor import FileMeta
from coffea.util import load

import coffea_dispatch
from coffea_dispatch.batch.job import read_record
from coffea_dispatch.batch.submission import Submission
from coffea_dispatch.cli import main
from coffea_dispatch.errors import DispatchError
from coffea_dispatch.executors.dask import DaskRun
from coffea_dispatch.executors.for_runner import DispatchExecutor, JobArrayExecutor
from coffea_dispatch.signals import interruptible
from conftest import independent_of_coffea
from runner_processors import KILLING_DATASET_VARIABLE, SLOW_DATASET_VARIABLE, CountingProcessor

CHUNK = 20_000
TESTS = Path(__file__).resolve().parent


def run_with(executor, fileset):
    runner = processor.Runner(executor=executor, schema=BaseSchema, chunksize=CHUNK)
    return runner(fileset, treename="Events", processor_instance=CountingProcessor())


@pytest.fixture(scope="module")
def iterative(generated):
    return run_with(processor.IterativeExecutor(status=False), generated)


@pytest.fixture
def importable_by_jobs(monkeypatch):
    """Batch jobs import this test's processor module as a user's jobs import theirs: through PYTHONPATH."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))


def test_the_iterative_reference_counts_every_chunk_once(iterative, generated):
    assert iterative["Signal"]["events"] == 50_000 and iterative["Background"]["events"] == 70_000
    assert len(iterative["chunks"]) == 2 + 2 + 2  # coffea evens out the chunks of a file


@pytest.mark.slow
@pytest.mark.parametrize("name", ["iterative", "futures", "dask/local"])
def test_runner_on_our_local_executors_equals_the_iterative_run(name, generated, iterative):
    cluster = {"scaleout": 2} if name == "dask/local" else {}  # the size of a cluster: dask/local's option only
    with coffea_dispatch.executor(name, workers=2, status=False, **cluster) as ex:
        assert isinstance(ex, processor.executor.ExecutorBase)
        assert run_with(ex, generated) == iterative


@pytest.mark.slow
def test_a_chunk_that_kills_its_workers_fails_the_runner_call_instead_of_going_missing(generated, monkeypatch):
    """coffea's Runner would sum what came back: a lost chunk must not give a smaller accumulator."""
    monkeypatch.setenv(KILLING_DATASET_VARIABLE, "Signal")
    with pytest.raises(DispatchError) as error:
        run_with(coffea_dispatch.executor("futures", workers=2, status=False), {"Signal": generated["Signal"][:1]})
    assert "died twice (SIGKILL" in error.value.message and "Signal_0.root" in error.value.message


@pytest.mark.slow
def test_dask_workers_killed_by_the_runners_preprocessing_are_diagnosed(generated):
    """Workers with too little memory die describing the files: the same one line as on the command line,
    not coffea's 'Cannot add accumulators of incompatible type'."""
    starved = coffea_dispatch.executor("dask/local", memory="5MB", scaleout=1, status=False)
    with starved as ex, pytest.raises(DispatchError) as error:  # the nanny kills a worker describing or in a chunk
        run_with(ex, {"Signal": generated["Signal"]})
    assert error.value.message.startswith(generated["Signal"][0]) and "killed the Dask workers" in error.value.message
    assert "--memory" not in error.value.message  # the executor object's keyword, memory=, where it is named
    item = FileMeta("Signal", generated["Signal"][0], "Events")  # what the Runner's preprocessing hands out
    with pytest.raises(DispatchError) as error:
        DaskRun(client=None, worker_memory_bytes=5 * 2**20, n_workers=1)._killed(item, [])
    assert error.value.message == (
        f"{generated['Signal'][0]}: reading its metadata killed the Dask workers (KilledWorker): give each worker "
        "more memory (--memory, now 5 MB)"
    )


@independent_of_coffea
def test_copy_rebuilds_the_executor_as_coffea_does(tmp_path):
    ex = coffea_dispatch.executor("vanilla_slurm", files_per_job=2, memory="4GB", folder=str(tmp_path / "s"))
    copied = ex.copy(unit="chunk", function_name="CountingProcessor")
    assert isinstance(copied, JobArrayExecutor) and copied.function_name == "CountingProcessor"
    assert copied.submit.files_per_job == 2 and copied.settings.memory == "4GB" and copied.retries == 2
    assert copied.live is ex.live  # a cluster started by one copy is the other's


@independent_of_coffea
@pytest.mark.parametrize(
    ("name", "options", "words"),
    [
        ("futures", {"wokers": 2}, "unknown option(s) wokers"),
        ("futures", {"folder": "x"}, "unknown option(s) folder"),
        ("dask/slurm", {"scaleout": 0}, "scaleout= must be at least 1"),
        ("vanilla_slurm", {"memory": "lots"}, "memory='lots'"),
        ("no/such", {}, "unknown executor 'no/such'"),
    ],
)
def test_bad_options_are_one_line(name, options, words):
    with pytest.raises(DispatchError) as error:
        coffea_dispatch.executor(name, **options)
    assert words in error.value.message and "\n" not in error.value.message


@independent_of_coffea
def test_every_executor_name_gives_an_object_the_runner_accepts():
    from coffea_dispatch.executors import executor_names

    for name in executor_names():
        ex = coffea_dispatch.executor(name)
        processor.Runner(executor=ex)  # asserts isinstance(executor, ExecutorBase)
        assert isinstance(ex, DispatchExecutor) and ex.retries >= 0


@pytest.mark.slow
def test_parsl_slurm_on_the_runner(slurm, generated, iterative, tmp_path, monkeypatch, importable_by_jobs):
    for key, value in slurm.env.items():
        monkeypatch.setenv(key, value)
    options = {"scaleout": 1, "workers": 2, "walltime": "00:20:00", "log_directory": str(tmp_path / "logs")}
    with coffea_dispatch.executor("parsl/slurm", status=False, **options) as ex:
        assert run_with(ex, generated) == iterative


@pytest.mark.slow
def test_vanilla_slurm_on_the_runner_writes_the_seed_layout(
    slurm, generated, iterative, tmp_path, monkeypatch, importable_by_jobs
):
    for key, value in slurm.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    ex = coffea_dispatch.executor("vanilla_slurm", poll_seconds=0.5, status=False, walltime="00:20:00")
    assert run_with(ex, generated) == iterative
    (folder,) = (tmp_path / ".higgs_dna_vanilla_slurm").iterdir()
    assert folder.name.startswith("CountingProcessor_")
    submission = Submission.load(folder)
    assert len(submission.jobs) == 3  # one file per job
    assert sorted(p.name for p in (folder / "input").glob("AN-*.json")) == sorted(
        f"AN-{job.name}.json" for job in submission.jobs
    )
    assert all(read_record(job.record).status == "done" for job in submission.jobs)


def test_vanilla_lxplus_on_the_runner_through_the_htcondor_stand_in(
    generated, iterative, tmp_path, monkeypatch, importable_by_jobs, capsys
):
    from fake_scheduler import install

    for key, value in install(tmp_path / "condor").items():
        monkeypatch.setenv(key, value)
    ex = coffea_dispatch.executor("vanilla_lxplus", folder=str(tmp_path / "sub"), poll_seconds=0.2, status=False)
    assert run_with(ex, generated) == iterative
    submit_files = list((tmp_path / "sub" / "jobs").glob("*.sub"))
    assert submit_files and all("executable" in f.read_text() for f in submit_files)
    # the command line follows such a submission as any other: status, and merge sums the job accumulators
    assert main(["status", str(tmp_path / "sub")]) == 0
    assert main(["merge", str(tmp_path / "sub")]) == 0
    assert load(str(tmp_path / "sub" / "accumulator.coffea")) == iterative
    assert "the accumulators of 3 job(s), summed" in capsys.readouterr().out


def test_a_job_that_cannot_import_the_processor_names_the_module(generated, tmp_path, monkeypatch, capsys):
    from fake_scheduler import install

    for key, value in install(tmp_path / "condor").items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    ex = coffea_dispatch.executor("vanilla_lxplus", folder=str(tmp_path / "sub"), poll_seconds=0.2, status=False)
    with pytest.raises(DispatchError) as error:
        run_with(ex, {"Signal": generated["Signal"]})
    assert "processor exception" in error.value.message  # not resubmitted: a rerun cannot fix it
    errors = "".join(p.read_text() for p in (tmp_path / "sub" / "jobs").glob("*.err"))
    assert "error: the processor needs the module 'runner_processors'" in errors


MAIN_SCRIPT = """
import json, sys
import awkward as ak
from coffea import processor
from coffea.nanoevents import BaseSchema
import coffea_dispatch

class MainProcessor(processor.ProcessorABC):  # defined in __main__: no job can import it
    def process(self, events):
        return {events.metadata["dataset"]: int(ak.sum(ak.num(events.Photon_pt)))}

    def postprocess(self, accumulator):
        return accumulator

fileset, folder = json.loads(sys.argv[1]), sys.argv[2]
executor = coffea_dispatch.executor("vanilla_lxplus", folder=folder, poll_seconds=0.2, status=False)
runner = processor.Runner(executor=executor, schema=BaseSchema, chunksize=20_000)
print(json.dumps(runner(fileset, treename="Events", processor_instance=MainProcessor())))
"""


@independent_of_coffea
def test_a_processor_defined_in_main_travels_to_the_jobs_by_value(generated, iterative, tmp_path, monkeypatch):
    from fake_scheduler import install

    for key, value in install(tmp_path / "condor").items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    script = tmp_path / "analysis.py"
    script.write_text(MAIN_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), json.dumps(generated), str(tmp_path / "sub")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    assert counts == {sample: iterative[sample]["photons"] for sample in generated}


@pytest.fixture
def sigint_taken_by_dask_jobqueue():
    """What importing dask-jobqueue does to a process (its runner module): Ctrl-C calls sys.exit(), exit code 0."""
    previous = signal.signal(signal.SIGINT, lambda *_: sys.exit())
    yield
    signal.signal(signal.SIGINT, previous)


@independent_of_coffea
def test_interruptible_gives_ctrl_c_back_and_leaves_the_handler_as_it_was(sigint_taken_by_dask_jobqueue):
    taken = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt), interruptible():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
    assert signal.getsignal(signal.SIGINT) is taken
    with interruptible():  # an import that takes the handler inside the block is undone at its end
        signal.signal(signal.SIGINT, lambda *_: sys.exit())
    assert signal.getsignal(signal.SIGINT) is taken


@pytest.mark.slow
def test_interrupted_job_array_call_is_collected_by_calling_again(
    slurm, generated, iterative, tmp_path, monkeypatch, importable_by_jobs, sigint_taken_by_dask_jobqueue
):
    """Ctrl-C mid-wait leaves the jobs; the same call with the same folder resubmits none of the finished ones."""
    for key, value in slurm.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv(SLOW_DATASET_VARIABLE, "Background")
    monkeypatch.setenv("RUNNER_TEST_SLOW_SECONDS", "5")
    folder = tmp_path / "submission"
    options = {"folder": str(folder), "poll_seconds": 0.5, "status": False, "walltime": "00:20:00"}

    def interrupt_once_signal_is_done():
        record = lambda: next(iter(folder.glob("jobs/Signal-0.result.json")), None)  # noqa: E731
        deadline = time.monotonic() + 120
        while record() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_once_signal_is_done, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        run_with(coffea_dispatch.executor("vanilla_slurm", **options), generated)
    before = Submission.load(folder)
    records = {job.name: read_record(job.record) for job in before.jobs}
    done_then = {name for name, record in records.items() if record is not None and record.status == "done"}
    assert "Signal-0" in done_then and len(done_then) < len(before.jobs)  # interrupted mid-wait
    signal_record = Path(before.jobs[0].record).stat().st_mtime_ns
    assert run_with(coffea_dispatch.executor("vanilla_slurm", **options), generated) == iterative
    after = Submission.load(folder)
    assert all(job.attempts == 1 for job in after.jobs)  # nothing resubmitted
    assert Path(after.jobs[0].record).stat().st_mtime_ns == signal_record
    assert json.loads((folder / "submission.json").read_text())["digest"] == before.digest


def test_status_cancel_and_resubmit_work_on_a_runner_submission(
    generated, iterative, tmp_path, monkeypatch, importable_by_jobs, capsys
):
    """The command line follows a Runner's job array as any other: status, cancel, resubmit --missing; the
    Runner called again with its folder sums what the resubmitted jobs saved."""
    from fake_scheduler import held, install

    for key, value in install(tmp_path / "condor").items():
        monkeypatch.setenv(key, value)
    folder = tmp_path / "sub"
    options = {"folder": str(folder), "poll_seconds": 0.2, "status": False}

    def interrupt_once_submitted():
        deadline = time.monotonic() + 60
        while not list(folder.glob("jobs/*.sub")) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # the submission answered and recorded its cluster ids
        os.kill(os.getpid(), signal.SIGINT)

    with held():  # queued, never run: the Runner call waits until interrupted
        threading.Thread(target=interrupt_once_submitted, daemon=True).start()
        with pytest.raises(KeyboardInterrupt):
            run_with(coffea_dispatch.executor("vanilla_lxplus", **options), generated)
        assert main(["status", str(folder)]) == 1  # nothing done yet
        assert main(["cancel", str(folder)]) == 0
    assert main(["resubmit", str(folder), "--missing"]) == 0  # the schedd runs them now
    assert run_with(coffea_dispatch.executor("vanilla_lxplus", **options), generated) == iterative
    assert all(job.attempts == 2 for job in Submission.load(folder).jobs)
    assert "resubmitted as cluster(s)" in capsys.readouterr().out


@independent_of_coffea
def test_calling_again_with_a_folder_of_other_work_is_refused(generated, tmp_path, monkeypatch, importable_by_jobs):
    from fake_scheduler import install

    for key, value in install(tmp_path / "condor").items():
        monkeypatch.setenv(key, value)
    options = {"folder": str(tmp_path / "sub"), "poll_seconds": 0.2, "status": False}
    run_with(coffea_dispatch.executor("vanilla_lxplus", **options), {"Signal": generated["Signal"]})
    with pytest.raises(DispatchError, match="holds a submission of other work"):
        run_with(coffea_dispatch.executor("vanilla_lxplus", **options), generated)
