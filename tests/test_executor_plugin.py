"""A new executor is one file: tests/toy_executor.py, registered by entry point as another package would,
runs through the command line, `coffea_dispatch.run` and coffea's own Runner, with the rows and accumulators
of a clean iterative run; its own option reaches all three."""

from __future__ import annotations

import os

import pytest
from coffea import processor
from coffea.nanoevents import BaseSchema

import coffea_dispatch
from coffea_dispatch.cli import main
from coffea_dispatch.errors import DispatchError
from coffea_dispatch.executors import executor_names, registry
from conftest import TESTS, read_rows, write_analysis
from helpers import assert_same_rows, run_iteratively
from runner_processors import CountingProcessor


@pytest.fixture
def toy_executor(tmp_path, monkeypatch):
    """Declare tests/toy_executor.py as an installed package would: a dist-info with an entry point."""
    info = tmp_path / "plugin" / "coffea_dispatch_toy_executor-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: coffea-dispatch-toy-executor\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{registry.ENTRY_POINT_GROUP}]\ntoy = toy_executor:Toy\n")
    monkeypatch.syspath_prepend(str(info.parent))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
    registry.forget()
    yield tmp_path / "toy.log"
    monkeypatch.undo()
    registry.forget()


def test_the_toy_executor_is_found_only_once_declared(toy_executor):
    assert "toy" in executor_names() and executor_names()[-1] == "toy"
    assert type(registry.kind_of("toy")).__module__ == "toy_executor"


def test_the_command_line_runs_it_with_its_own_option_rows_equal_iterative(toy_executor, generated, tmp_path):
    analysis = write_analysis(tmp_path / "config", generated)
    run_iteratively(analysis, tmp_path / "iterative")
    command = ["run", "--json-analysis", str(analysis), "--dump", str(tmp_path / "toy"), "--chunk", "20000"]
    assert main([*command, "--executor", "toy", "--toy-log", str(toy_executor), "--no-progress"]) == 0
    for sample in generated:
        assert_same_rows(read_rows(tmp_path / "toy", sample), read_rows(tmp_path / "iterative", sample))
    assert "Processing" in toy_executor.read_text()  # it ran the chunks, not another executor


def test_the_python_api_runs_it_with_its_own_keyword(toy_executor, generated):
    options = {"chunksize": 20_000, "schema": "base", "progress": False}
    toy = coffea_dispatch.run(generated, CountingProcessor(), executor="toy", toy_log=str(toy_executor), **options)
    iterative = coffea_dispatch.run(generated, CountingProcessor(), executor="iterative", **options)
    assert toy.accumulator == iterative.accumulator and toy.events == 120_000
    assert toy_executor.read_text().count("Processing") >= 3  # a FileTask per file; their chunks follow


def test_coffeas_runner_takes_it_from_coffea_dispatch_executor(toy_executor, generated):
    def run_with(executor):
        runner = processor.Runner(executor=executor, schema=BaseSchema, chunksize=20_000)
        return runner(generated, treename="Events", processor_instance=CountingProcessor())

    ours = run_with(coffea_dispatch.executor("toy", toy_log=str(toy_executor)))
    assert ours == run_with(processor.IterativeExecutor(status=False))
    assert toy_executor.read_text().count("Processing: WorkItem") == 6  # coffea's 6 chunks, each run once


def test_its_keywords_are_its_settings_only(toy_executor):
    takes = r"\(it takes: announce, report, retries, status, toy_log\)"
    with pytest.raises(DispatchError, match=r"unknown option\(s\) workers " + takes):
        coffea_dispatch.executor("toy", workers=2)


def test_without_the_plugin_the_name_is_unknown():
    registry.forget()
    assert "toy" not in executor_names()
    with pytest.raises(DispatchError, match="unknown executor 'toy'"):
        coffea_dispatch.executor("toy")


def test_each_kind_reads_its_own_share_of_the_option_spec():
    """Ours are made of the spec's option groups (so the command line has every one); no two kinds the same."""
    from coffea_dispatch.batch.registry import backends
    from coffea_dispatch.options import RunOptions, SubmitOptions, options_of

    every = {o.dest for o in options_of(RunOptions)}
    arrays = {o.dest for o in options_of(SubmitOptions)} | {o.dest for b in backends() for o in b.options}
    shares = {}
    for kind in registry.kinds():
        for name in kind.names():
            assert registry.kind_of(name) is kind
            assert kind.keywords(name) - arrays - {"folder"} <= every, name
            shares[name] = kind.keywords(name)
    assert "walltime" not in shares["futures"] and "dashboard_port" not in shares["parsl/slurm"]
    assert "scaleout" in shares["dask/local"] and "queue" not in shares["dask/local"]
