"""What every batch backend must do, run over each of them: HTCondor (its scheduler stood in for by
tests/fake_scheduler.py, since no HTCondor daemon can run here), SLURM (the real test cluster), and "toy", a
third backend declared from the tests through the entry-point group, with no change to any source file.

Each: its executor name comes from the registry; a submission runs and `status` reports it from data; held jobs
show as pending in the queue, are cancelled, left without a record, and `resubmit --missing` completes them;
the merged rows equal the iterative run's; a submit command that answers nonsense, or is missing, is one line.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

import fake_scheduler
from coffea_dispatch.batch import registry
from coffea_dispatch.batch.backend import JobState, SubmitError
from coffea_dispatch.batch.job import read_record
from coffea_dispatch.batch.registry import array_backend
from coffea_dispatch.batch.status import submission_status
from coffea_dispatch.batch.submission import Submission
from coffea_dispatch.cli import main, run_analysis_main
from coffea_dispatch.executors import check_executor, executor_names
from conftest import TESTS, read_rows, write_analysis
from helpers import assert_same_rows, merged_rows, only_submission, run_iteratively, status_counts

pytestmark = pytest.mark.slow
JOB_TIMEOUT = 300


@pytest.fixture(scope="module")
def toy_plugin(tmp_path_factory):
    """Declare tests/toy_backend.py as an installed package would: a dist-info with an entry point."""
    folder = tmp_path_factory.mktemp("plugin")
    info = folder / "coffea_dispatch_toy-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: coffea-dispatch-toy\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{registry.ENTRY_POINT_GROUP}]\ntoy = toy_backend:Toy\n")
    sys.path.insert(0, str(folder))
    registry.forget()
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(folder), str(TESTS), before) if p)  # commands too
    yield
    sys.path.remove(str(folder))
    os.environ.pop("PYTHONPATH") if before is None else os.environ.update(PYTHONPATH=before)
    registry.forget()


class FakeScheduler:
    """HTCondor or toy: jobs run when submitted, or wait while held."""

    def __init__(self, executor: str, env: dict[str, str]):
        self.executor, self.env = executor, env
        self.extra_args: list[str] = []

    def held(self):
        return fake_scheduler.held()

    def release(self) -> None:
        fake_scheduler.release()

    def wait(self, submission: Submission) -> None:
        pass  # jobs ran at submission


class RealSlurm:
    """The test cluster: held means its partition is down, so submitted jobs stay pending."""

    executor = "vanilla_slurm"
    extra_args = ["--queue", "debug"]

    def __init__(self, cluster):
        self.env = cluster.env

    def _partition(self, state: str) -> None:
        command = ["scontrol", "update", "PartitionName=debug", f"State={state}"]
        subprocess.run(command, check=True, env={**os.environ, **self.env}, capture_output=True)

    @contextmanager
    def held(self):
        self._partition("DOWN")
        try:
            yield
        except BaseException:
            self._partition("UP")
            raise

    def release(self) -> None:
        self._partition("UP")

    def wait(self, submission: Submission) -> None:
        deadline = time.monotonic() + JOB_TIMEOUT
        while any(read_record(job.record) is None for job in submission.jobs):
            assert time.monotonic() < deadline, f"jobs did not finish; see {submission.jobs_folder}"
            time.sleep(0.5)


@pytest.fixture(params=["HTCondor", "SLURM", "Toy"])
def scheduler(request, tmp_path, monkeypatch, toy_plugin):
    if request.param == "SLURM":
        harness = RealSlurm(request.getfixturevalue("slurm"))
    else:
        executor = "vanilla_lxplus" if request.param == "HTCondor" else "vanilla_toy"
        harness = FakeScheduler(executor, fake_scheduler.install(tmp_path / "scheduler"))
    for key, value in harness.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    assert array_backend(harness.executor).name == request.param
    return harness


@pytest.fixture
def analysis(generated, tmp_path) -> Path:
    return write_analysis(
        tmp_path / "config", {"Signal": generated["Signal"], "Background": generated["Background"][:1]}
    )


def submit(harness, analysis: Path, dump: Path, *extra: str) -> int:
    arguments = ["--json-analysis", str(analysis), "--dump", str(dump), "--executor", harness.executor]
    arguments += ["--memory", "2GB", "--walltime", "00:10:00", "--chunk", "20000", *harness.extra_args, *extra]
    return run_analysis_main(arguments)


def counts(folder: Path) -> dict[str, tuple[int, ...]]:
    """Per sample, from `status`'s data: (done, failed, queued, running, gone)."""
    assert submission_status(folder, ask_queue=True)[2]  # every backend here can ask its queue
    return {sample: (c[0], c[1], *c[3:6]) for sample, c in status_counts(folder).items()}


def test_executor_names_come_from_the_registry(scheduler):
    assert scheduler.executor in executor_names()
    check_executor(scheduler.executor)
    backend = array_backend(scheduler.executor)
    assert backend.max_job_seconds(3600, None) > 0
    assert {b.name for b in registry.backends()} >= {"HTCondor", "SLURM", "Toy"}


def test_submission_runs_and_merges_to_the_iterative_rows(scheduler, analysis, tmp_path):
    assert submit(scheduler, analysis, tmp_path / "OUT") == 0
    submission = only_submission(tmp_path, scheduler.executor)
    assert all(job.cluster for job in submission.jobs)
    scheduler.wait(submission)
    assert counts(submission.folder) == {"Signal": (1, 0, 0, 0, 0), "Background": (1, 0, 0, 0, 0)}
    assert main(["merge", str(submission.folder)]) == 0
    run_iteratively(analysis, tmp_path / "iterative")
    for sample in ("Signal", "Background"):
        assert_same_rows(merged_rows(tmp_path / "OUT", sample), read_rows(tmp_path / "iterative", sample))


def test_held_jobs_are_pending_then_cancelled_then_resubmitted(scheduler, analysis, tmp_path):
    with scheduler.held():
        assert submit(scheduler, analysis, tmp_path / "OUT") == 0
        submission = only_submission(tmp_path, scheduler.executor)
        queued = array_backend(scheduler.executor).queued_jobs(submission)
        assert queued == {job.name: JobState.PENDING for job in submission.jobs}
        assert counts(submission.folder) == {"Signal": (0, 0, 1, 0, 0), "Background": (0, 0, 1, 0, 0)}
        assert main(["cancel", str(submission.folder)]) == 0
        deadline = time.monotonic() + 30
        while array_backend(scheduler.executor).queued_jobs(submission):
            assert time.monotonic() < deadline, "cancelled jobs stayed in the queue"
            time.sleep(0.2)
        assert counts(submission.folder) == {"Signal": (0, 0, 0, 0, 1), "Background": (0, 0, 0, 0, 1)}
    scheduler.release()
    assert main(["resubmit", "--missing", str(submission.folder)]) == 0
    resubmitted = Submission.load(submission.folder)
    assert [job.attempts for job in resubmitted.jobs] == [2, 2]
    scheduler.wait(resubmitted)
    assert counts(submission.folder) == {"Signal": (1, 0, 0, 0, 0), "Background": (1, 0, 0, 0, 0)}


def test_a_submit_answer_without_a_job_id_is_one_line_showing_it(scheduler, analysis, tmp_path, monkeypatch):
    backend = array_backend(scheduler.executor)
    liar = tmp_path / "liar"
    liar.mkdir()
    (liar / backend.submit_command).write_text("#!/bin/sh\necho 'all good, trust me'\n")
    (liar / backend.submit_command).chmod(0o755)
    monkeypatch.setenv("PATH", f"{liar}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(SubmitError, match="gave no job id we can read .*all good, trust me") as raised:
        submit(scheduler, analysis, tmp_path / "OUT", "--debug")
    assert raised.value.stdout.strip() == "all good, trust me" and raised.value.returncode == 0
    assert all(job.cluster is None for job in only_submission(tmp_path, scheduler.executor).jobs)


def test_without_the_submit_command_submit_sh_submits_the_jobs_where_it_is(
    scheduler, analysis, tmp_path, monkeypatch, capsys
):
    backend = array_backend(scheduler.executor)
    python_only = tmp_path / "python-only"
    python_only.mkdir()
    (python_only / "python3").symlink_to(sys.executable)
    path = os.environ["PATH"]
    monkeypatch.setenv("PATH", str(python_only))
    assert submit(scheduler, analysis, tmp_path / "OUT") == 3
    err = capsys.readouterr().err
    submission = only_submission(tmp_path, scheduler.executor)
    script = submission.folder / "submit.sh"
    assert err.strip() == (
        f"error: {backend.submit_command} is not on PATH here: 2 job(s) of {submission.folder} are written; "
        f"where {backend.submit_command} is, submit them with: bash {script}"
    )
    assert backend.queued_jobs(submission) is None  # no queue command either: only the records can tell
    listed = [line for line in script.read_text().splitlines() if line.startswith(f"#   {backend.submit_command} ")]
    assert len(listed) == 2 and all(job.cluster is None for job in submission.jobs)
    monkeypatch.setenv("PATH", path)  # where the submit command is
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    submitted = Submission.load(submission.folder)
    assert all(job.cluster for job in submitted.jobs) and not submitted.unsubmitted
    scheduler.wait(submitted)
    assert counts(submission.folder) == {"Signal": (1, 0, 0, 0, 0), "Background": (1, 0, 0, 0, 0)}
    assert "nothing to submit" in subprocess.run(["bash", str(script)], capture_output=True, text=True).stdout
