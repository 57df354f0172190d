"""One option spec: the parser, the run options, the executor settings and a batch job's arguments all come
from the dataclass fields of coffea_dispatch.options, and batch backends share one declared interface."""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from coffea_dispatch.arguments import add_run_arguments, run_options_from
from coffea_dispatch.batch import registry
from coffea_dispatch.batch.backend import JobState, SubmitError
from coffea_dispatch.batch.htcondor import HTCondor
from coffea_dispatch.batch.registry import backends
from coffea_dispatch.batch.slurm import Slurm
from coffea_dispatch.batch.submission import Job, Submission
from coffea_dispatch.executors import executor_names, settings_for
from coffea_dispatch.executors.dask import DaskSettings
from coffea_dispatch.options import (
    DEFAULT_JOB_MEMORY,
    DEFAULT_JOB_MEMORY_MB,
    PHYSICS_SWITCHES,
    ExecutorOptions,
    ExecutorSettings,
    PhysicsSwitches,
    RunOptions,
    SubmitOptions,
    duration_seconds,
    job_arguments,
    memory_mb,
    options_of,
)

HOSTILE = "a b 'c\" ;$(touch PWNED)"


def parser() -> argparse.ArgumentParser:
    built = argparse.ArgumentParser()
    add_run_arguments(built)
    return built


def parse(*argv: str) -> RunOptions:
    return run_options_from(parser().parse_args(["--json-analysis", "A.json", *argv]))


def test_every_flag_is_defined_once_and_the_parser_defaults_are_the_fields_defaults():
    built = parser()
    flags = [flag for action in built._actions for flag in action.option_strings]
    assert len(flags) == len(set(flags))
    namespace = built.parse_args(["--json-analysis", "A.json"])
    for cls in (RunOptions, SubmitOptions, PhysicsSwitches):
        for spec in options_of(cls):
            if not spec.required:
                assert getattr(namespace, spec.dest) == spec.default, spec.dest
    assert parse() == RunOptions(json_analysis="A.json", physics=PHYSICS_SWITCHES)
    assert {f.name for f in fields(ExecutorOptions)} <= {f.name for f in fields(RunOptions)}
    assert PHYSICS_SWITCHES["use_trigger"] is True and PHYSICS_SWITCHES["trigger_group"] == ".*DoubleEG.*"


def test_a_job_runs_with_the_same_options_without_the_ones_it_sets_itself(tmp_path):
    given = parse(
        "--dump", str(tmp_path / HOSTILE), "--chunk", "1234", "--skipCQR", "--no-trigger", "--triggerGroup",
        HOSTILE, "--executor", "vanilla_slurm", "-o", "acc.coffea", "--walltime", "02:00:00", "--no-plot",
    )  # fmt: skip
    argv = job_arguments(given)
    again = run_options_from(parser().parse_args(["--json-analysis", "A.json", *argv]))
    assert again.dump == str(tmp_path / HOSTILE) and again.physics == given.physics
    assert (again.chunk, again.walltime, again.plot) == (1234, "02:00:00", False)
    assert again.executor == "futures" and again.output is None  # the job's own: set by the submission
    assert "--json-analysis" not in argv and "--chunk" in argv and "--retries" not in argv  # defaults stay out


def test_relative_paths_reach_the_job_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = job_arguments(parse("--dump", "out", "--metadata-cache", "cache"))
    assert argv == ["--dump", str(tmp_path / "out"), "--metadata-cache", str(tmp_path / "cache")]


def test_executor_settings_are_the_run_options_share():
    options = parse("--executor", "dask/slurm", "--walltime", "03:00:00", "-q", "short", "--no-progress")
    settings = settings_for(options)
    assert isinstance(settings, DaskSettings) and settings.name == "dask/slurm"
    assert (settings.walltime, settings.queue, settings.status) == ("03:00:00", "short", False)


def test_backend_options_come_from_their_backend():
    namespace = parser().parse_args(["--json-analysis", "A.json", "--vlxp-max-materialize", "7"])
    assert namespace.max_materialize == 7  # declared by the HTCondor backend, HiggsDNA's spelling too
    assert HTCondor.options[0].dest == "max_materialize" and not HTCondor.options[0].to_jobs


def test_executor_names_are_derived_from_the_backends_and_unique():
    names = executor_names()
    assert len(names) == len(set(names))
    for backend in backends():
        assert set(backend.executors) <= set(names)
        assert all(isinstance(state, JobState) for state in backend.native_states.values())
        assert registry.backend_for(backend.executors[0]) is not None


@pytest.mark.parametrize(
    "backend, answer, job_id",
    [
        (HTCondor(), "Submitting job(s)...\n3 job(s) submitted to cluster 4711.\n", "4711"),
        (HTCondor(), "ERROR: on Line 3 of submit file: ...\n", None),
        (Slurm(), "815\n", "815"),
        (Slurm(), "815;cluster2\n", "815"),
        (Slurm(), "sbatch: warning: something\n", None),
    ],
)
def test_submit_answers_are_read_or_refused(backend, answer, job_id):
    assert backend.parse_submit_output(answer) == job_id


def test_a_failing_scheduler_command_is_one_line_keeping_its_answer():
    with pytest.raises(SubmitError, match=r"sh -c .* failed \(exit code 3\): no such partition") as raised:
        Slurm().run_command(["sh", "-c", "echo partial; echo 'no such  partition' >&2; exit 3"])
    assert raised.value.stdout == "partial\n" and raised.value.returncode == 3


def test_native_states_map_to_one_enum():
    assert HTCondor().state("HELD") is JobState.HELD and not JobState.HELD.active
    assert HTCondor().state("TRANSFERRING") is JobState.RUNNING
    assert Slurm().state("completing") is JobState.RUNNING and JobState.RUNNING.active
    assert Slurm().state("OUT_OF_MEMORY") is JobState.FAILED and Slurm().state("??") is JobState.UNKNOWN


def test_time_limits_live_in_their_backend():
    assert HTCondor().max_job_seconds(3600, "espresso") == 20 * 60  # the JobFlavour decides
    assert HTCondor().max_job_seconds(3600, None) == 8 * 3600  # workday
    assert Slurm().max_job_seconds(26 * 3600, None) == 26 * 3600


def test_cancel_commands_name_exactly_the_jobs(tmp_path):
    submission = Submission(tmp_path, "A", "vanilla_slurm", cluster_per_sample=True)
    jobs = [Job("S", index, [], "", "", [], "", cluster="77") for index in (0, 3)]
    assert Slurm().cancel_commands(submission, jobs) == [["scancel", "77_0", "77_3"]]
    (command,) = HTCondor().cancel_commands(submission, jobs)
    assert command == ["condor_rm", "-constraint", 'ClusterId == 77 && (Args == "0" || Args == "3")']


def test_a_manifest_of_an_older_version_keeps_its_backend_option(tmp_path):
    manifest = {"folder": str(tmp_path), "analysis": "A", "executor": "vanilla_lxplus", "cluster_per_sample": True}
    (tmp_path / "submission.json").write_text(json.dumps({**manifest, "max_materialize": 5, "jobs": []}))
    assert Submission.load(tmp_path).backend_options == {"max_materialize": 5}


def test_a_batch_system_is_named_only_in_its_own_module_and_the_registry():
    """What makes a new backend one file: nothing else in the package knows any backend by name."""
    package = Path(registry.__file__).parents[1]
    for backend in registry.builtin_backends():
        own = Path(sys.modules[type(backend).__module__].__file__)
        words = {own.stem, backend.submit_command, backend.queue_command, backend.cancel_command}
        words |= {name.split("/")[-1].removeprefix("vanilla_") for name in backend.executors}
        pattern = re.compile("|".join(re.escape(w) for w in words if w), re.IGNORECASE)
        for source in package.rglob("*.py"):
            if source not in (own, Path(registry.__file__)):
                found = pattern.search(source.read_text())
                assert found is None, f"{source.relative_to(package)} names {backend.name} ({found.group()!r})"


@pytest.mark.parametrize(
    ("walltime", "seconds", "sbatch"),
    [
        ("60", 3600, "01:00:00"),  # minutes, as SLURM reads a bare number
        ("45:30", 2730, "00:45:30"),
        ("02:30:00", 9000, "02:30:00"),
        ("1-12", 129_600, "1-12:00:00"),  # days-hours
        ("1-02:00:00", 93_600, "1-02:00:00"),
    ],
)
def test_a_walltime_means_what_it_means_to_slurm(walltime, seconds, sbatch):
    """--walltime reached sbatch as written; parsed once into seconds, it must keep its meaning."""
    from coffea_dispatch.batch.submission import Resources

    assert duration_seconds(walltime) == seconds
    assert Slurm().time_limit(Resources(1000, seconds, None)) == f"--time {sbatch}"


def test_the_default_job_memory_in_mb_is_the_default_parsed():
    assert memory_mb(None) == memory_mb(DEFAULT_JOB_MEMORY) == DEFAULT_JOB_MEMORY_MB


def test_a_worker_job_without_a_walltime_gets_the_default_ones_lifetime(monkeypatch):
    from coffea_dispatch.executors.kinds import worker_prologue

    monkeypatch.setenv("X509_USER_PROXY", "/nonexistent")
    lines = worker_prologue(ExecutorSettings(executor="dask/slurm", walltime=None))
    assert any(line.startswith("export PYTHONPATH=") for line in lines)


def test_dask_casa_counts_on_its_scaleout():
    from coffea_dispatch.executors.registry import kind_of

    casa = kind_of("dask/casa")
    assert casa.expected_workers(casa.settings_from("dask/casa", {"scaleout": 4, "workers": 3})) == 12
