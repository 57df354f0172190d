"""vanilla_lxplus: submit files checked with the real htcondor2 bindings, job scripts run as the schedd would.

No HTCondor daemons exist here: `condor_submit` is absent, so the submission ends with exit code 3 and the
files written; the tests then run every job script with every ProcId, as the schedd would.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import htcondor2
import pyarrow.parquet as pq
import pytest

from coffea_dispatch.batch.job import read_record
from coffea_dispatch.batch.submission import Submission
from coffea_dispatch.cli import main, run_analysis_main
from coffea_dispatch.dump.completeness_file import read_completeness
from coffea_dispatch.output import read_parquet_metadata
from conftest import needs_uproot5_for_semicolons, read_rows, snapshot, sort_rows, write_analysis
from helpers import (
    HOSTILE,
    assert_same_rows,
    merged_rows,
    only_submission,
    run_iteratively,
    run_like_the_schedd,
    status_counts,
)


def submit(analysis: Path, dump: Path, *extra: str) -> int:
    return run_analysis_main(
        [
            "--json-analysis",
            str(analysis),
            "--dump",
            str(dump),
            "--skipCQR",
            "--executor",
            "vanilla_lxplus",
            "--queue",
            "espresso",
            "--memory",
            "10GB",
            "--chunk",
            "20000",
            *extra,
        ]
    )


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if shutil.which("condor_submit"):
        pytest.skip("these tests expect no condor_submit on PATH (no HTCondor daemons here)")
    return tmp_path


def test_higgsdna_command_writes_the_submission_and_says_how_to_submit(generated, in_tmp, capsys):
    analysis = write_analysis(in_tmp / "config", generated)
    assert submit(analysis, in_tmp / "OUT") == 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "condor_submit is not on PATH" in err
    submission = only_submission(in_tmp)
    assert submission.folder.name.startswith("analysis_") and len(submission.folder.name) == len("analysis_") + 15
    assert sorted(p.name for p in submission.input_folder.iterdir()) == sorted(
        [f"{s}-{i}.json" for s, files in generated.items() for i in range(len(files))]
        + [f"AN-{s}-{i}.json" for s, files in generated.items() for i in range(len(files))]
    )
    assert sorted(p.name for p in submission.jobs_folder.glob("*.s*")) == [
        "AN-Background.sh",
        "AN-Background.sub",
        "AN-Signal.sh",
        "AN-Signal.sub",
    ]
    script = submission.folder / "submit.sh"
    assert err.endswith(f"submit them with: bash {script}")  # one command, however many clusters
    assert f"#   condor_submit {submission.jobs_folder / 'AN-Signal.sub'}" in script.read_text()
    assert [entry["jobs"] for entry in submission.unsubmitted] == [["Signal-0"], ["Background-0", "Background-1"]]
    # every job is one file, and its analysis JSON reproduces it by hand
    for job in submission.jobs:
        assert json.loads(Path(job.sample_json).read_text()) == {job.sample: job.files} and len(job.files) == 1
        assert json.loads(Path(job.analysis_json).read_text())["samplejson"] == Path(job.sample_json).name


def test_submit_files_parse_with_htcondor2(generated, in_tmp):
    submit(write_analysis(in_tmp / "config", generated), in_tmp / "OUT")
    submission = only_submission(in_tmp)
    text = (submission.jobs_folder / "AN-Background.sub").read_text()
    description = htcondor2.Submit(text)
    assert int(description.getQArgs()) == 2
    assert description.expand("request_memory") == "10000"
    assert description["MY.JobFlavour"] == '"espresso"'
    assert description.expand("getenv") == "True" and description.expand("max_retries") == "2"
    assert "NumJobStarts" in description["on_exit_hold"] and "NumJobStarts" in description["periodic_release"]
    assert "(HoldReasonCode =!= 34)" in description["periodic_release"]  # memory holds wait for resubmit
    assert description["requirements"] == "Machine =!= LastRemoteHost"
    description["ProcId"] = "1"
    assert description.expand("arguments") == "1"
    assert description.expand("output").endswith("jobs/AN-Background.1.out")


@pytest.mark.slow
def test_jobs_run_as_the_schedd_would_write_the_iterative_rows(generated, in_tmp):
    analysis = write_analysis(in_tmp / "config", generated)
    submit(analysis, in_tmp / "OUT")
    submission = only_submission(in_tmp)
    run_like_the_schedd(submission)
    records = [read_record(job.record) for job in submission.jobs]
    assert all(r is not None and r.status == "done" and r.exit_code == 0 for r in records)
    assert sum(r.events for r in records) == 120_000  # every generated event, each in exactly one job
    run_iteratively(analysis, in_tmp / "iterative")
    for sample in generated:
        assert_same_rows(read_rows(in_tmp / "OUT", sample), read_rows(in_tmp / "iterative", sample))


def test_one_cluster_per_job_and_files_per_job(generated, in_tmp):
    submit(write_analysis(in_tmp / "config", generated), in_tmp / "OUT", "--no-cluster-per-sample")
    submission = only_submission(in_tmp)
    assert sorted(p.name for p in submission.jobs_folder.glob("*.sub")) == [
        "AN-Background-0.sub",
        "AN-Background-1.sub",
        "AN-Signal-0.sub",
    ]
    for sub in submission.jobs_folder.glob("*.sub"):
        assert htcondor2.Submit(sub.read_text()).getQArgs() == "1"
    shutil.rmtree(in_tmp / ".higgs_dna_vanilla_lxplus")
    submit(write_analysis(in_tmp / "config", generated), in_tmp / "OUT", "--files-per-job", "2")
    assert [len(j.files) for j in only_submission(in_tmp).jobs] == [1, 2]


@pytest.mark.slow
@needs_uproot5_for_semicolons
def test_hostile_sample_names_and_paths_run_correctly_and_execute_nothing(generated, in_tmp):
    weird_folder = in_tmp / HOSTILE
    weird_folder.mkdir()
    weird_file = weird_folder / f"{HOSTILE}.root"
    shutil.copy(generated["Signal"][0], weird_file)
    analysis = write_analysis(in_tmp / HOSTILE / "config", {HOSTILE: [str(weird_file)]})
    dump = in_tmp / f"OUT {HOSTILE}"
    assert submit(analysis, dump) == 3
    submission = only_submission(in_tmp)
    run_like_the_schedd(submission)
    assert read_record(submission.jobs[0].record).status == "done"
    assert not list(in_tmp.rglob("PWNED*")) and not Path("PWNED").exists()
    rows = read_rows(dump, HOSTILE)
    run_iteratively(analysis, in_tmp / "iterative")
    assert_same_rows(rows, read_rows(in_tmp / "iterative", HOSTILE))


def test_second_submission_in_the_same_second_gets_its_own_folder(generated, in_tmp):
    analysis = write_analysis(in_tmp / "config", generated)
    submit(analysis, in_tmp / "OUT")
    submit(analysis, in_tmp / "OUT2")  # another --dump: another run (the same one would continue the first)
    folders = sorted((in_tmp / ".higgs_dna_vanilla_lxplus").iterdir())
    assert len(folders) == 2 and all((f / "submission.json").exists() for f in folders)


def test_a_second_run_into_the_same_dump_finishes_the_first_submission(generated, in_tmp, monkeypatch, capsys):
    """No --wait: the first run submits and returns; the same command again continues that submission (no new
    folder, no job rerun) and, its jobs all done, collects it: the summary and the merged iterative rows."""
    from fake_scheduler import held, install, release

    for key, value in install(in_tmp / "condor").items():
        monkeypatch.setenv(key, value)
    analysis = write_analysis(in_tmp / "config", generated)
    with held():  # queued, not run yet
        assert submit(analysis, in_tmp / "OUT") == 0
    first = capsys.readouterr().out
    assert "submitted 3 job(s)" in first and "Signal" not in first  # not waited for: no summary yet
    release()  # the schedd runs them
    assert submit(analysis, in_tmp / "OUT") == 0
    second = capsys.readouterr().out
    (folder,) = (in_tmp / ".higgs_dna_vanilla_lxplus").iterdir()
    assert f"continuing {folder}" in second and "Signal" in second and "merged Signal" in second
    assert second.strip().endswith("completeness: all inputs read")  # collected: every job's files read
    assert read_completeness(in_tmp / "OUT").complete
    assert all(job.attempts == 1 for job in Submission.load(folder).jobs)
    run_iteratively(analysis, in_tmp / "reference")
    for sample in generated:
        assert_same_rows(merged_rows(in_tmp / "OUT", sample), read_rows(in_tmp / "reference", sample))


@pytest.mark.slow
def test_status_shows_done_failed_and_unfinished_jobs(generated, in_tmp, capsys):
    broken = in_tmp / "broken.root"
    broken.write_bytes(b"not a ROOT file" * 100)
    samples = {"Signal": generated["Signal"], "Background": [*generated["Background"], str(broken)]}
    submit(write_analysis(in_tmp / "config", samples), in_tmp / "OUT")
    submission = only_submission(in_tmp)
    assert main(["status", str(submission.folder)]) == 1  # nothing has run yet
    assert "the batch queue could not be asked" in capsys.readouterr().out  # no condor_q here
    counts = status_counts(submission.folder)
    assert counts == {"Signal": (0, 0, 1, 0, 0, 0, 0), "Background": (0, 0, 3, 0, 0, 0, 0)}
    with pytest.raises(subprocess.CalledProcessError):  # the broken file's job exits non-zero
        run_like_the_schedd(submission)
    sub = (submission.jobs_folder / "AN-Background.sub").read_text()
    for proc in range(3):  # what the schedd would have run for the whole Background cluster, logs included
        description = htcondor2.Submit(sub)
        description["ProcId"] = str(proc)
        with open(description.expand("error"), "w") as error:
            subprocess.run(
                [description.expand("executable"), description.expand("arguments")],
                stderr=error,
                stdout=subprocess.DEVNULL,
                timeout=600,
            )
    assert main(["status", str(submission.folder)]) == 1
    flat = " ".join(capsys.readouterr().out.split())
    assert status_counts(submission.folder)["Background"] == (2, 1, 0, 0, 0, 0, 70_000)
    assert "failed job Background-2 (exit code 2; cause: bad input)" in flat
    assert "broken.root: cannot be opened as a ROOT file" in flat  # the tail of the job's error file


@pytest.mark.slow
def test_merge_sums_normalisation_and_gives_the_iterative_rows(generated, in_tmp, capsys):
    analysis = write_analysis(in_tmp / "config", generated)
    submit(analysis, in_tmp / "OUT")
    submission = only_submission(in_tmp)
    assert main(["merge", str(submission.folder)]) == 2  # no job has run: merging would lose events
    assert "merge anyway with --allow-incomplete" in capsys.readouterr().err
    assert main(["merge", str(submission.folder), "--allow-incomplete"]) == 2  # allowed, but nothing written yet
    assert "no such output folder to merge" in capsys.readouterr().err
    run_like_the_schedd(submission)
    # one chunk file written with its columns in another order must still merge
    chunk = sorted((in_tmp / "OUT" / "Signal" / "nominal").glob("*.parquet"))[0]
    original = pq.read_table(chunk)
    pq.write_table(original.select(list(reversed(original.column_names))), chunk)
    before = snapshot(in_tmp / "OUT")
    assert main(["merge", str(submission.folder)]) == 0
    run_iteratively(analysis, in_tmp / "iterative")
    for sample in generated:
        merged = in_tmp / "OUT" / "merged" / sample / "nominal" / "merged.parquet"
        table = pq.read_table(merged)
        rows = sort_rows({name: table.column(name).to_numpy() for name in table.column_names})
        assert_same_rows(rows, read_rows(in_tmp / "iterative", sample))
        chunks = (in_tmp / "iterative" / sample / "nominal").glob("*.parquet")
        expected = sum(float(read_parquet_metadata(c)["sum_genw_presel"]) for c in chunks)
        assert float(read_parquet_metadata(merged)["sum_genw_presel"]) == pytest.approx(expected, rel=1e-12)
    after = snapshot(in_tmp / "OUT")
    assert all(after[name] == content for name, content in before.items())  # inputs untouched


def run_resubmission_like_the_schedd(sub: Path) -> None:
    """A `queue job in (...)` submit file: run its executable once per item, as the schedd would."""
    text = sub.read_text()
    for item in htcondor2.Submit(text).itemdata():
        description = htcondor2.Submit(text)
        for key, value in item.items():
            description[key] = value
        with open(description.expand("error"), "w") as error:
            subprocess.run(
                [description.expand("executable"), description.expand("arguments")],
                check=True,
                stderr=error,
                stdout=subprocess.DEVNULL,
                timeout=600,
            )


@pytest.mark.slow
def test_resubmit_reruns_only_the_failed_job_and_completes_the_submission(generated, in_tmp, capsys):
    broken = in_tmp / "broken.root"
    broken.write_bytes(b"not a ROOT file" * 100)
    samples = {"Signal": generated["Signal"], "Background": [*generated["Background"], str(broken)]}
    analysis = write_analysis(in_tmp / "config", samples)
    submit(analysis, in_tmp / "OUT")
    submission = only_submission(in_tmp)
    assert sorted(run_like_the_schedd(submission, check=False)) == [0, 0, 0, 2]  # the broken file's job fails
    assert main(["status", str(submission.folder)]) == 1
    shutil.copy(generated["Signal"][0], broken)  # the user fixes the file
    assert main(["resubmit", str(submission.folder)]) == 3  # no condor_submit here: written, with the command
    assert "1 job(s)" in capsys.readouterr().err
    (sub,) = submission.jobs_folder.glob("AN-Background.resubmit*.sub")
    assert list(htcondor2.Submit(sub.read_text()).itemdata()) == [{"job": "2"}]
    run_resubmission_like_the_schedd(sub)
    assert main(["status", str(submission.folder)]) == 0
    assert (submission.jobs_folder / "Background-2.result.attempt1.json").exists()  # the failed attempt is kept
    assert Submission.load(submission.folder).jobs[-1].attempts == 2
    assert main(["resubmit", str(submission.folder)]) == 0  # nothing left to rerun
    assert main(["merge", str(submission.folder)]) == 0
    run_iteratively(analysis, in_tmp / "iterative")
    table = pq.read_table(in_tmp / "OUT" / "merged" / "Background" / "nominal" / "merged.parquet")
    rows = sort_rows({name: table.column(name).to_numpy() for name in table.column_names})
    assert_same_rows(rows, read_rows(in_tmp / "iterative", "Background"))


@pytest.mark.parametrize("executor", ["vanilla_lxplus", "vanilla_slurm"])
@pytest.mark.parametrize("name", ["a/b", "..", "../escape", "x/../y"])
def test_sample_names_that_are_paths_are_refused_before_anything_is_written(generated, in_tmp, capsys, executor, name):
    analysis = write_analysis(in_tmp / "config", {name: generated["Signal"]})
    code = run_analysis_main(["--json-analysis", str(analysis), "--dump", str(in_tmp / "OUT"), "--executor", executor])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "samples.json" in err and repr(name) in err
    assert not (in_tmp / f".higgs_dna_{executor}").exists() and not (in_tmp / "OUT").exists()


def test_max_materialize_reaches_the_submit_file(generated, in_tmp):
    submit(write_analysis(in_tmp / "config", generated), in_tmp / "OUT", "--max-materialize", "1")
    submission = only_submission(in_tmp)
    description = htcondor2.Submit((submission.jobs_folder / "AN-Background.sub").read_text())
    assert description.expand("max_materialize") == "1" and int(description.getQArgs()) == 2
    assert "--max-materialize" not in submission.jobs[0].command  # a job runs one file: not its option


def test_condor_q_answers_map_to_jobs_by_cluster_and_script_argument(generated, in_tmp):
    from coffea_dispatch.batch.htcondor import HTCondor

    submit(write_analysis(in_tmp / "config", generated), in_tmp / "OUT")
    submission = only_submission(in_tmp)
    for job, cluster in zip(submission.jobs, ["11", "12", "12"], strict=True):
        job.cluster = cluster
    # `condor_q -af ClusterId Args JobStatus`: a resubmitted job's argument is its number in the script
    answer = "11 0 2\n12 1 5\n12 7 1\n99 0 1\n"
    assert HTCondor().parse_queue(submission, answer) == {"Signal-0": "RUNNING", "Background-1": "HELD"}


def test_fetch_logs_says_there_is_nothing_to_fetch_outside_eos(generated, in_tmp, capsys):
    submit(write_analysis(in_tmp / "config", generated), in_tmp / "OUT")
    submission = only_submission(in_tmp)
    assert main(["status", str(submission.folder), "--fetch-logs"]) == 1  # no job has run
    out = " ".join(capsys.readouterr().out.split())
    assert "is not under /eos: the jobs wrote their logs in place, nothing to fetch" in out


@pytest.mark.slow
def test_a_job_held_for_memory_is_removed_and_rerun_with_more_memory(generated, in_tmp, monkeypatch, capsys):
    """The schedd (tests/fake_scheduler.py) holds the job as HTCondor's startd does over request_memory: status
    reads the hold reason, resubmit removes the held proc (never left to be released beside its rerun) and sends
    the job again with request_memory from the measured peak."""
    import fake_scheduler

    for key, value in fake_scheduler.install(in_tmp / "scheduler").items():
        monkeypatch.setenv(key, value)
    analysis = write_analysis(in_tmp / "config", {"Signal": generated["Signal"][:1]})
    with fake_scheduler.held():
        assert submit(analysis, in_tmp / "OUT", "--memory", "2GB") == 0
    fake_scheduler.hold(
        {
            "HoldReason": "Error from slot1_4@b9g47n1234.cern.ch: Job has gone over memory limit of 2000 megabytes. "
            "Peak usage: 2600 megabytes.",
            "HoldReasonCode": 34,
            "HoldReasonSubCode": 0,
            "ResidentSetSize": 2662400,
        }
    )
    submission = only_submission(in_tmp)
    capsys.readouterr()
    assert main(["status", str(submission.folder)]) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert "held job Signal-0 (cause: memory; Error from slot1_4" in out
    assert "resubmit: memory 2000 MB -> 4096 MB, peak 2600 MB" in out
    assert main(["resubmit", str(submission.folder)]) == 0  # the fake schedd runs the new cluster at once
    out = " ".join(capsys.readouterr().out.split())
    assert "removed the old run: condor_rm -constraint 'ClusterId == 100 && (Args == \"0\")'" in out
    assert fake_scheduler._queue() == []  # the held proc is gone
    (sub,) = submission.jobs_folder.glob("AN-Signal.resubmit2.sub")
    description = htcondor2.Submit(sub.read_text())
    assert (description["request_memory"], description["MY.JobFlavour"]) == ("4096", '"espresso"')
    (job,) = Submission.load(submission.folder).jobs
    assert (job.attempts, job.memory_mb, job.cluster) == (2, 4096, "101")
    assert [(d["cause"], d["rerun"], d["peak_mb"]) for d in job.decisions] == [("memory", True, 2600.0)]
    assert main(["status", str(submission.folder)]) == 0


@pytest.mark.slow
def test_a_job_held_for_memory_at_max_memory_is_split(generated, in_tmp, monkeypatch, capsys):
    """With several files per job and no more memory to give (--max-memory), the held job is split: it keeps
    half its files, a new job takes the others, both run from the rewritten script, and the merged rows are the
    iterative ones."""
    import fake_scheduler

    for key, value in fake_scheduler.install(in_tmp / "scheduler").items():
        monkeypatch.setenv(key, value)
    analysis = write_analysis(in_tmp / "config", {"Background": generated["Background"]})
    with fake_scheduler.held():
        limits = ("--memory", "2GB", "--max-memory", "2GB", "--files-per-job", "2")
        assert submit(analysis, in_tmp / "OUT", *limits) == 0
    fake_scheduler.hold({"HoldReason": "Job has gone over memory limit of 2000 megabytes.", "HoldReasonCode": 34})
    submission = only_submission(in_tmp)
    assert [len(job.files) for job in submission.jobs] == [2]
    capsys.readouterr()
    assert main(["resubmit", str(submission.folder)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "split: 2000 MB is already --max-memory; 1 of its 2 files stay, the others go to a new job" in out
    jobs = Submission.load(submission.folder).jobs
    assert [(job.name, job.files, job.attempts) for job in jobs] == [
        ("Background-0", generated["Background"][:1], 2),
        ("Background-1", generated["Background"][1:], 1),
    ]
    assert jobs[0].decisions[0]["new_job"] == "Background-1"
    (sub,) = submission.jobs_folder.glob("AN-Background.resubmit2.sub")
    assert [item["job"] for item in htcondor2.Submit(sub.read_text()).itemdata()] == ["0", "1"]
    assert main(["status", str(submission.folder)]) == 0
    assert main(["merge", str(submission.folder)]) == 0
    run_iteratively(analysis, in_tmp / "iterative")
    table = pq.read_table(in_tmp / "OUT" / "merged" / "Background" / "nominal" / "merged.parquet")
    rows = sort_rows({name: table.column(name).to_numpy() for name in table.column_names})
    assert_same_rows(rows, read_rows(in_tmp / "iterative", "Background"))
