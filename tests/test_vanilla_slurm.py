"""vanilla_slurm on a real single-node SLURM cluster: sbatch --array, jobs run by slurmd, status from the job
records and squeue, resubmission of a failed job, merge, and `--wait` doing the whole cycle in one command."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from coffea.util import load

import helpers
from coffea_dispatch.batch.backend import JobState
from coffea_dispatch.batch.job import read_record
from coffea_dispatch.batch.recovery import more_memory
from coffea_dispatch.batch.slurm import Slurm, array_spec
from coffea_dispatch.batch.submission import Submission
from coffea_dispatch.cli import main, run_analysis_main
from coffea_dispatch.inputs.compat import LEGACY_COFFEA
from conftest import LOOSE_CUTS, TESTS, needs_uproot5_for_semicolons, read_rows, write_analysis
from helpers import HOSTILE, assert_same_rows, merged_rows, run_iteratively, status_counts

pytestmark = pytest.mark.slow  # every test here starts workers, a cluster or a server

JOB_TIMEOUT = 300


def submit(analysis: Path, dump: Path, *extra: str) -> int:
    return run_analysis_main(
        [
            "--json-analysis",
            str(analysis),
            "--dump",
            str(dump),
            "--skipCQR",
            "--executor",
            "vanilla_slurm",
            "--queue",
            "debug",
            "--memory",
            "2GB",
            "--walltime",
            "00:10:00",
            "--chunk",
            "20000",
            *extra,
        ]
    )


def only_submission(cwd: Path) -> Submission:
    return helpers.only_submission(cwd, "vanilla_slurm")


def wait_for_records(submission: Submission) -> None:
    """Until every job has written its record (the jobs run in slurmd, not in this process)."""
    deadline = time.monotonic() + JOB_TIMEOUT
    while any(read_record(job.record) is None for job in submission.jobs):
        assert time.monotonic() < deadline, f"SLURM jobs did not finish; see {submission.jobs_folder}"
        time.sleep(0.5)


def broken_samples(generated: dict, folder: Path) -> tuple[dict, Path]:
    broken = folder / "broken.root"
    broken.write_bytes(b"not a ROOT file" * 100)
    return {"Signal": generated["Signal"], "Background": [*generated["Background"], str(broken)]}, broken


def test_array_spec_is_short_for_any_set_of_jobs():
    assert array_spec([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    assert array_spec([3]) == "3" and array_spec([2, 1, 1]) == "1-2"


def test_submit_fail_status_resubmit_merge_on_real_slurm(generated, on_slurm, capsys):
    samples, broken = broken_samples(generated, on_slurm)
    analysis = write_analysis(on_slurm / "config", samples)
    assert submit(analysis, on_slurm / "OUT") == 0
    submission = only_submission(on_slurm)
    assert sorted(p.name for p in submission.jobs_folder.glob("*.sh")) == ["AN-Background.sh", "AN-Signal.sh"]
    assert all(job.cluster for job in submission.jobs)  # sbatch's array job ids, recorded per job
    assert len({job.cluster for job in submission.jobs}) == 2  # one array per sample
    wait_for_records(submission)
    assert main(["status", str(submission.folder)]) == 1
    flat = " ".join(capsys.readouterr().out.split())
    assert status_counts(submission.folder)["Background"] == (2, 1, 0, 0, 0, 0, 70_000)  # the queue was asked
    assert "failed job Background-2 (exit code 2; cause: bad input)" in flat
    assert "broken.root: cannot be opened as a ROOT file" in flat  # from SLURM's --error file of task 2

    shutil.copy(generated["Signal"][0], broken)  # the user fixes the file
    assert main(["resubmit", str(submission.folder)]) == 0
    resubmitted = Submission.load(submission.folder)
    assert [job.attempts for job in resubmitted.jobs] == [1, 1, 1, 2]
    assert resubmitted.jobs[-1].cluster not in {job.cluster for job in resubmitted.jobs[:-1]}
    wait_for_records(resubmitted)
    assert main(["status", str(submission.folder)]) == 0
    assert main(["merge", str(submission.folder)]) == 0
    run_iteratively(analysis, on_slurm / "iterative")
    for sample in samples:
        assert_same_rows(merged_rows(on_slurm / "OUT", sample), read_rows(on_slurm / "iterative", sample))


def fix_after_first_failure(root: Path, job: str, broken: Path, good: str) -> threading.Thread:
    """Once the submission under `root` exists and `job` has recorded its failure, replace the broken file:
    the resubmission then succeeds."""

    def fix() -> None:
        deadline = time.monotonic() + JOB_TIMEOUT
        while time.monotonic() < deadline:
            records = list(root.glob(f"*/jobs/{job}.result.json")) if root.exists() else []
            if records and (found := read_record(records[0])) is not None and found.status == "failed":
                shutil.copy(good, broken)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=fix, daemon=True)
    thread.start()
    return thread


def test_wait_does_the_whole_cycle_in_one_command(generated, on_slurm, capsys):
    samples, broken = broken_samples(generated, on_slurm)
    analysis = write_analysis(on_slurm / "config", samples)
    fix_after_first_failure(on_slurm / ".higgs_dna_vanilla_slurm", "Background-2", broken, generated["Signal"][0])
    code = submit(analysis, on_slurm / "OUT", "--wait", "--retries", "2", "--poll-seconds", "0.5", "-o", "acc.coffea")
    assert code == 0, capsys.readouterr()
    out = " ".join(capsys.readouterr().out.split())
    submission = only_submission(on_slurm)
    assert submission.jobs[-1].attempts >= 2  # Background-2 failed, was resubmitted, then succeeded
    assert "failed jobs were resubmitted" in out and "merged Background: " in out
    assert "│ total (wall) │ 4 │" in out  # the run summary: 4 files
    run_iteratively(analysis, on_slurm / "iterative")
    for sample in samples:
        assert_same_rows(merged_rows(on_slurm / "OUT", sample), read_rows(on_slurm / "iterative", sample))
        assert_same_rows(read_rows(on_slurm / "OUT", sample), read_rows(on_slurm / "iterative", sample))
    accumulator = load(str(on_slurm / "acc.coffea"))  # summed over the jobs: every candidate counted once
    for sample in samples:
        assert accumulator[sample]["candidates"] == len(read_rows(on_slurm / "iterative", sample)["event"])


def test_wait_fails_clearly_when_a_job_keeps_failing(generated, on_slurm, capsys):
    samples, _ = broken_samples(generated, on_slurm)
    analysis = write_analysis(on_slurm / "config", samples)
    assert submit(analysis, on_slurm / "OUT", "--wait", "--retries", "1", "--poll-seconds", "0.5") == 1
    err = capsys.readouterr().err.strip()
    # a local file that is not ROOT stays broken: rerunning it would fail the same way, so --wait stops at once
    assert err.startswith("error: 1 job(s) failed after 0 resubmission(s): Background-2; Background-2 (attempt 1): "
                          "bad input (error: ")  # fmt: skip
    assert "-> not resubmitted: a local input cannot be read; fix or drop it (--skipbadfiles)" in err
    assert len(err.splitlines()) == 1
    assert not (on_slurm / "OUT" / "merged").exists()  # nothing merged from an incomplete submission
    assert only_submission(on_slurm).jobs[-1].attempts == 1


@needs_uproot5_for_semicolons
def test_hostile_names_and_percent_signs_on_real_slurm(generated, on_slurm, monkeypatch):
    folder = on_slurm / f"{HOSTILE} 100%a"  # sbatch expands %a in log names: the folder's own % must stay
    folder.mkdir()
    weird_file = folder / f"{HOSTILE}.root"
    shutil.copy(generated["Signal"][0], weird_file)
    analysis = write_analysis(folder / "config", {HOSTILE: [str(weird_file)]})
    dump = folder / "OUT"
    monkeypatch.chdir(folder)  # the submission folder, and so SLURM's log paths, contain the % too
    assert submit(analysis, dump) == 0
    submission = only_submission(folder)
    wait_for_records(submission)
    assert read_record(submission.jobs[0].record).status == "done"
    assert (submission.jobs_folder / f"AN-{HOSTILE}.0.err").exists()  # SLURM wrote the log where status looks
    assert not list(on_slurm.rglob("PWNED*"))
    run_iteratively(analysis, on_slurm / "iterative")
    assert_same_rows(read_rows(dump, HOSTILE), read_rows(on_slurm / "iterative", HOSTILE))


def test_without_sbatch_the_files_are_written_and_the_exact_commands_given(generated, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "/nonexistent")  # no SLURM client here
    assert submit(write_analysis(tmp_path / "config", generated), tmp_path / "OUT", "--no-cluster-per-sample") == 3
    err = capsys.readouterr().err.strip()
    submission = only_submission(tmp_path)
    assert len(err.splitlines()) == 1 and err.startswith("error: sbatch is not on PATH here: 3 job(s)")
    script = submission.jobs_folder / "AN-Background-1.sh"
    submit_script = (submission.folder / "submit.sh").read_text()
    assert err.endswith(f"submit them with: bash {submission.folder / 'submit.sh'}")
    assert script.exists() and "--array=0 --job-name=AN-Background-1" in submit_script and str(script) in submit_script
    assert (
        "--partition=debug" in submit_script and "--mem=2000M" in submit_script and "--time=00:10:00" in submit_script
    )
    assert all(job.cluster is None for job in submission.jobs)


def slow_jobs(monkeypatch) -> None:
    """Each chunk of the stand-in workflow takes 2 s in the jobs (sbatch --export=ALL hands them this variable), so
    a job is still running when the canceller sees it: a 0.7 s job could end before squeue reported it running."""
    monkeypatch.setenv("HIGGSDNA_LIKE_SECONDS_PER_CHUNK", "2")


def cancel_when_running(root: Path, job: str, env: dict) -> threading.Thread:
    """scancel `job` (its array task, not the whole array) of the submission under `root` as soon as SLURM runs
    it: killed from outside, it leaves no record, like a job killed for memory or walltime."""

    def cancel() -> None:
        deadline = time.monotonic() + JOB_TIMEOUT
        while time.monotonic() < deadline:
            folders = list(root.glob("*/submission.json")) if root.exists() else []
            if folders:
                submission = Submission.load(folders[0].parent)
                target = next(j for j in submission.jobs if j.name == job)
                if target.cluster and Slurm().queued_jobs(submission).get(job) is JobState.RUNNING:
                    subprocess.run(
                        ["scancel", f"{target.cluster}_{target.index}"], env={**os.environ, **env}, check=True
                    )
                    return
            time.sleep(0.05)

    thread = threading.Thread(target=cancel, daemon=True)
    thread.start()
    return thread


def test_a_job_killed_from_outside_is_seen_gone_and_rerun_with_missing(generated, on_slurm, slurm, capsys, monkeypatch):
    slow_jobs(monkeypatch)
    analysis = write_analysis(on_slurm / "config", generated)
    canceller = cancel_when_running(on_slurm / ".higgs_dna_vanilla_slurm", "Signal-0", slurm.env)
    assert submit(analysis, on_slurm / "OUT") == 0
    canceller.join(JOB_TIMEOUT)
    submission = only_submission(on_slurm)
    deadline = time.monotonic() + JOB_TIMEOUT
    while Slurm().queued_jobs(submission) or any(read_record(j.record) is None for j in submission.jobs[1:]):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert read_record(submission.jobs[0].record) is None  # killed before it could write its record
    capsys.readouterr()
    assert main(["status", str(submission.folder)]) == 1
    flat = " ".join(capsys.readouterr().out.split())
    assert status_counts(submission.folder)["Signal"] == (0, 0, 1, 0, 0, 1, 0) and "gone job Signal-0" in flat
    assert main(["resubmit", str(submission.folder)]) == 0  # without --missing: no failed record, nothing rerun
    assert Submission.load(submission.folder).jobs[0].attempts == 1
    assert main(["resubmit", str(submission.folder), "--missing"]) == 0
    wait_for_records(Submission.load(submission.folder))
    assert main(["status", str(submission.folder)]) == 0
    assert main(["check", str(on_slurm / "OUT")]) == 0  # every chunk exactly once
    run_iteratively(analysis, on_slurm / "iterative")
    assert_same_rows(read_rows(on_slurm / "OUT", "Signal"), read_rows(on_slurm / "iterative", "Signal"))


def test_wait_resubmits_a_job_killed_from_outside(generated, on_slurm, slurm, capsys, monkeypatch):
    slow_jobs(monkeypatch)
    analysis = write_analysis(on_slurm / "config", generated)
    cancel_when_running(on_slurm / ".higgs_dna_vanilla_slurm", "Background-1", slurm.env)
    assert submit(analysis, on_slurm / "OUT", "--wait", "--poll-seconds", "0.5") == 0, capsys.readouterr().err
    submission = only_submission(on_slurm)
    assert [job.attempts for job in submission.jobs] == [1, 1, 2]
    run_iteratively(analysis, on_slurm / "iterative")
    for sample in generated:
        assert_same_rows(merged_rows(on_slurm / "OUT", sample), read_rows(on_slurm / "iterative", sample))


def test_real_nanoaod_files_through_vanilla_slurm_wait(shared_nanoaod, on_slurm, capsys):
    samples = {
        "DY": [str(shared_nanoaod / "nano_dy.root")],
        "Dimuon": [str(shared_nanoaod / "nano_dimuon.root")],
        "Empty": [str(shared_nanoaod / "nano_dy_empty.root")],
    }
    analysis = write_analysis(on_slurm / "config", samples, metaconditions={"preselection": LOOSE_CUTS})
    assert submit(analysis, on_slurm / "OUT", "--wait", "--poll-seconds", "0.5") == 0, capsys.readouterr().err
    out = " ".join(capsys.readouterr().out.split())
    assert "│ DY │ 1 │ 1 │ 40 │" in out and "│ Empty │ 1 │ 1 │ 0 │" in out
    run_iteratively(analysis, on_slurm / "iterative")
    for sample in ("DY", "Dimuon"):
        expected = read_rows(on_slurm / "iterative", sample)
        assert len(expected["event"]) > 0
        assert_same_rows(merged_rows(on_slurm / "OUT", sample), expected)
    assert pq.read_table(on_slurm / "OUT" / "merged" / "Empty" / "nominal" / "merged.parquet").num_rows == 0


def with_test_processors(monkeypatch, **environment: str) -> None:
    """Jobs import tests/user_processors.py; `environment` tunes what those processors do."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p))
    for key, value in environment.items():
        monkeypatch.setenv(key, value)


def run_in(folder: Path, monkeypatch, samples: dict, workflow: str, *extra: str) -> tuple[int, Path, Submission]:
    """Submit `samples` with `workflow` from its own folder: (exit code, analysis JSON, the submission)."""
    folder.mkdir()
    monkeypatch.chdir(folder)
    analysis = write_analysis(folder / "config", samples, workflow=workflow)
    code = submit(analysis, folder / "OUT", "--poll-seconds", "0.5", *extra)
    return code, analysis, only_submission(folder)


@pytest.mark.skipif(
    LEGACY_COFFEA,
    reason="SLURM kills at a walltime of at least a minute; recovery does not depend on coffea's generation, so only "
    "the coffea 2026 pass runs it (CI time)",
)
def test_walltime_gets_a_longer_time_and_a_processor_exception_is_not_resubmitted(
    generated, on_slurm, monkeypatch, capsys
):
    """On the real cluster: a job killed at its --walltime is triaged as walltime (SLURM's words and state), rerun
    with twice the time (SLURM's own TimeLimit of the rerun says so), and completes with the iterative rows; a job
    whose processor raised is not sent again, and the reproduce command is shown. (The rerun does not sleep:
    proving that it needs the longer time would cost CI two more minutes.)"""
    marker = on_slurm / "slept"
    with_test_processors(monkeypatch, COFFEA_DISPATCH_TEST_SLEEP="300", COFFEA_DISPATCH_TEST_SLEEP_ONCE=str(marker))
    signal = {"Signal": generated["Signal"][:1]}
    code, _, bug = run_in(on_slurm / "bug", monkeypatch, signal, "user_processors:Explodes", "--wait", "--retries", "2")
    err = " ".join(capsys.readouterr().err.split())
    assert code == 1 and "processor exception" in err and "not resubmitted" in err and "reproduce: bash " in err
    (job,) = Submission.load(bug.folder).jobs
    assert job.attempts == 1 and [(d["cause"], d["rerun"]) for d in job.decisions] == [("processor exception", False)]
    assert main(["status", str(bug.folder)]) == 1
    assert "cause: processor exception" in " ".join(capsys.readouterr().out.split())

    slow_args = ("--walltime", "00:01:00", "--wait", "--retries", "1")
    code, analysis, slow = run_in(
        on_slurm / "slow", monkeypatch, signal, "user_processors:SleepsPastItsWalltime", *slow_args
    )
    out = " ".join(capsys.readouterr().out.split())
    assert code == 0, out
    (job,) = Submission.load(slow.folder).jobs
    assert (job.attempts, job.walltime_seconds) == (2, 120) and marker.exists()
    limit = subprocess.run(["squeue", "--noheader", "--states=all", "--jobs", job.cluster, "--format=%l"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    assert limit.stdout.split() == ["2:00"]  # what SLURM gave the rerun
    (decision,) = job.decisions
    assert decision["cause"] == "walltime" and decision["action"] == "walltime --time 00:01:00 -> --time 00:02:00"
    assert "TIME LIMIT" in decision["evidence"] or "TIMEOUT" in decision["evidence"]
    first = read_record(slow.jobs_folder / "Signal-0.result.attempt1.json")
    assert (first.status, first.signal) == ("failed", 15) and first.peak_rss_mb > 0  # SIGTERM at the walltime
    assert "resubmission: Signal-0 (attempt 1): walltime" in out
    monkeypatch.setenv("COFFEA_DISPATCH_TEST_SLEEP", "0")
    run_iteratively(analysis, on_slurm / "iterative")
    assert_same_rows(merged_rows(on_slurm / "slow" / "OUT", "Signal"), read_rows(on_slurm / "iterative", "Signal"))


@pytest.mark.skipif(LEGACY_COFFEA, reason="recovery does not depend on coffea's generation (CI time)")
def test_a_job_killed_for_memory_completes_with_more_memory(generated, on_slurm, monkeypatch, capsys):
    """SLURM enforces --mem on the test cluster (jobacct_gather with OverMemoryKill): a job holding more than it
    asked for is killed, triaged as memory from slurmstepd's words (with the peak it measured), and completes
    after one resubmission with max(1.5 x peak, 1 GB more), rounded up to whole GB."""
    with_test_processors(monkeypatch, COFFEA_DISPATCH_TEST_HOLD_MB="1000")
    signal = {"Signal": generated["Signal"][:1]}
    extra = ("--memory", "800MB", "--wait", "--retries", "1")
    code, analysis, submission = run_in(on_slurm / "big", monkeypatch, signal, "user_processors:HoldsMemory", *extra)
    out = " ".join(capsys.readouterr().out.split())
    assert code == 0, out
    (job,) = Submission.load(submission.folder).jobs
    (decision,) = job.decisions
    assert decision["cause"] == "memory" and "exceeded" in decision["evidence"].lower()
    expected = more_memory(800, decision["peak_mb"], None)
    assert decision["peak_mb"] > 800 and job.memory_mb == expected >= 2048 and job.attempts == 2
    assert "resubmission: Signal-0 (attempt 1): memory" in out and f"memory 800 MB -> {expected} MB" in out
    assert not (submission.jobs_folder / "Signal-0.result.attempt1.json").exists()  # killed: it left no record
    monkeypatch.setenv("COFFEA_DISPATCH_TEST_HOLD_MB", "0")
    run_iteratively(analysis, on_slurm / "iterative")
    assert_same_rows(merged_rows(on_slurm / "big" / "OUT", "Signal"), read_rows(on_slurm / "iterative", "Signal"))
