"""The command line's job arrays and coffea's Runner's are one path: the same planner writes both, in HiggsDNA's
layout, and the same routine submits and follows them (the HTCondor stand-in and real SLURM tests run them)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from coffea import processor
from coffea.nanoevents import BaseSchema

import coffea_dispatch
from coffea_dispatch.batch import submission as submission_module
from coffea_dispatch.batch.analysis_jobs import AnalysisJobs
from coffea_dispatch.batch.items import ItemJobs
from coffea_dispatch.batch.submission import MANIFEST, Submission
from coffea_dispatch.batch.submit import NotSubmitted
from coffea_dispatch.cli import main
from conftest import write_analysis
from runner_processors import CountingProcessor


@pytest.fixture
def no_scheduler(monkeypatch):
    """No condor_submit here: both paths write their submission, then stop (exit 3) before submitting."""
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:/usr/bin:/bin")
    assert shutil.which("condor_submit") is None


@pytest.fixture
def planners(monkeypatch) -> list[tuple[str, object]]:
    """(the function that chose the folder, the JobSpec it was planning) for every submission written."""
    calls = []
    choose = submission_module.submission_folder

    def spying(*args, **kwargs):
        caller = sys._getframe(1)
        calls.append((caller.f_code.co_name, caller.f_locals.get("spec")))
        return choose(*args, **kwargs)

    monkeypatch.setattr(submission_module, "submission_folder", spying)
    return calls


def layout(folder: Path) -> dict:
    """What the submission holds, named relative to its folder (the job-array parts both paths share)."""
    submission = Submission.load(folder)
    jobs = {}
    for job in submission.jobs:
        listed = json.loads(Path(job.sample_json).read_text())
        entries = listed[job.sample]
        assert list(listed) == [job.sample] and len(entries) == len(job.files)
        assert [e if isinstance(e, str) else e["file"] for e in entries] == job.files  # each entry names its file
        assert json.loads(Path(job.analysis_json).read_text())["samplejson"] == f"{job.name}.json"
        paths = (job.sample_json, job.analysis_json, job.record)
        jobs[job.name] = tuple(str(Path(p).relative_to(folder)) for p in paths)
    inputs = sorted(p.name for p in (folder / "input").iterdir())
    return {"jobs": jobs, "inputs": inputs, "manifest": sorted(json.loads((folder / MANIFEST).read_text()))}


def test_the_command_line_and_the_runner_write_one_layout_through_one_planner(
    generated, tmp_path, monkeypatch, no_scheduler, planners
):
    monkeypatch.chdir(tmp_path)
    analysis = write_analysis(tmp_path / "config", generated)
    command = ["run", "--json-analysis", str(analysis), "--executor", "vanilla_lxplus", "--dump", "OUT"]
    assert main(command) == 3  # written, not submitted: no condor_submit here
    (from_cli,) = (tmp_path / ".higgs_dna_vanilla_lxplus").iterdir()

    executor = coffea_dispatch.executor("vanilla_lxplus", folder=str(tmp_path / "runner"), status=False)
    runner = processor.Runner(executor=executor, schema=BaseSchema, chunksize=20_000)
    with pytest.raises(NotSubmitted):
        runner(generated, treename="Events", processor_instance=CountingProcessor())
    from_runner = tmp_path / "runner"

    assert [(caller, type(spec)) for caller, spec in planners] == [("plan_jobs", AnalysisJobs), ("plan_jobs", ItemJobs)]
    cli, runner_layout = layout(from_cli), layout(from_runner)
    expected = {f"{sample}-{i}" for sample, files in generated.items() for i in range(len(files))}
    assert set(cli["jobs"]) == expected and cli["jobs"] == runner_layout["jobs"]
    assert cli["manifest"] == runner_layout["manifest"]
    names = [n for job in expected for n in (f"{job}.json", f"AN-{job}.json")]
    assert cli["inputs"] == sorted(names) and runner_layout["inputs"] == sorted([*names, "function.pkl"])


def test_a_job_array_knows_its_dump_from_its_manifest_not_from_a_command_line(
    generated, tmp_path, monkeypatch, no_scheduler
):
    monkeypatch.chdir(tmp_path)
    analysis = write_analysis(tmp_path / "config", generated)
    command = [
        "run",
        "--json-analysis",
        str(analysis),
        "--executor",
        "vanilla_lxplus",
        "--dump",
        "OUT",
        "--chunk",
        "7000",
    ]
    assert main(command) == 3
    (folder,) = (tmp_path / ".higgs_dna_vanilla_lxplus").iterdir()
    submission = Submission.load(folder)
    assert submission.dump == str(tmp_path / "OUT")
    assert submission.arguments == ["--dump", str(tmp_path / "OUT"), "--chunk", "7000"]
    from coffea_dispatch.dump.collect import dump_of

    for job in submission.jobs:  # the command lines no longer decide it
        job.command = [argument for argument in job.command if argument != "--dump"]
    assert dump_of(submission) == tmp_path / "OUT"


def test_memory_and_walltime_are_parsed_once_and_travel_typed(generated, tmp_path, monkeypatch, no_scheduler):
    """--memory 3GB becomes 3000 MB once, before anything is written; the manifest, each job and the submit
    file carry that number (it was parsed again for every job)."""
    import dask.utils

    parsed = []
    parse_bytes = dask.utils.parse_bytes
    monkeypatch.setattr(dask.utils, "parse_bytes", lambda text: parsed.append(text) or parse_bytes(text))
    monkeypatch.chdir(tmp_path)
    analysis = write_analysis(tmp_path / "config", generated)
    command = ["run", "--json-analysis", str(analysis), "--executor", "vanilla_lxplus", "--dump", "OUT"]
    assert main([*command, "--memory", "3GB", "--walltime", "02:30:00", "--no-cluster-per-sample"]) == 3
    assert parsed.count("3GB") == 1
    (folder,) = (tmp_path / ".higgs_dna_vanilla_lxplus").iterdir()
    submission = Submission.load(folder)
    assert (submission.memory_mb, submission.walltime_seconds, submission.max_memory_mb) == (3000, 9000, 32000)
    assert {submission.resources(job).memory_mb for job in submission.jobs} == {3000}
    submit_files = list((folder / "jobs").glob("*.sub"))
    assert len(submit_files) == 3 and all("request_memory = 3000" in f.read_text() for f in submit_files)


def test_a_manifest_of_an_older_version_loads_its_sizes_as_numbers(generated, tmp_path, monkeypatch, no_scheduler):
    monkeypatch.chdir(tmp_path)
    analysis = write_analysis(tmp_path / "config", generated)
    assert main(["run", "--json-analysis", str(analysis), "--executor", "vanilla_lxplus", "--dump", "OUT"]) == 3
    (folder,) = (tmp_path / ".higgs_dna_vanilla_lxplus").iterdir()
    manifest = json.loads((folder / MANIFEST).read_text())
    for typed in ("memory_mb", "walltime_seconds", "max_memory_mb", "dump", "arguments"):
        manifest.pop(typed)
    manifest |= {"memory": "2GB", "walltime": "00:45:00", "max_memory": "8GB"}
    manifest["jobs"][0] |= {"walltime": "01:30:00"}
    del manifest["jobs"][0]["walltime_seconds"]
    (folder / MANIFEST).write_text(json.dumps(manifest))
    submission = Submission.load(folder)
    assert (submission.memory_mb, submission.walltime_seconds, submission.max_memory_mb) == (2000, 2700, 8000)
    assert submission.resources(submission.jobs[0]).walltime_seconds == 5400
    assert submission.dump is None and submission.arguments is None
