"""coffea_dispatch.run(...) for notebooks and scripts, and the example notebook run end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
from coffea import processor
from coffea.nanoevents import BaseSchema

import coffea_dispatch
from coffea_dispatch.errors import DispatchError
from conftest import independent_of_coffea
from runner_processors import CountingProcessor

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "python_api.ipynb"


def test_run_on_a_coffea_fileset_equals_coffeas_runner(generated):
    fileset = {"Signal": {"files": {generated["Signal"][0]: "Events"}}, "Background": generated["Background"]}
    result = coffea_dispatch.run(
        fileset, CountingProcessor(), executor="futures", workers=2, chunksize=20_000, schema="base", progress=False
    )
    runner = processor.Runner(executor=processor.IterativeExecutor(status=False), schema=BaseSchema, chunksize=20_000)
    expected = runner(generated, treename="Events", processor_instance=CountingProcessor())
    for sample in generated:
        assert result.accumulator[sample] == expected[sample]
        assert result.samples[sample].events == expected[sample]["events"]
    assert "<table>" in result._repr_html_() and "Background" in result._repr_html_()


def test_run_takes_a_coffea_executor_object_and_our_own(generated):
    fileset = {"Signal": generated["Signal"]}
    options = {"chunksize": 25_000, "schema": "base", "progress": False}
    theirs = coffea_dispatch.run(
        fileset, CountingProcessor(), executor=processor.IterativeExecutor(status=False), **options
    )
    ours = coffea_dispatch.run(
        fileset, CountingProcessor(), executor=coffea_dispatch.executor("futures", workers=2), **options
    )
    assert theirs.accumulator == ours.accumulator and ours.executor == "futures"
    assert theirs.workers == 1  # coffea's iterative executor does not say: -j, at most the chunks, is counted


@independent_of_coffea
def test_run_refuses_a_job_arrays_own_options_it_would_not_pass_on(tmp_path):
    """A job array from run() reads an analysis JSON; its `folder` and its backend's options are the Runner
    executor's (coffea_dispatch.executor): taken silently, they were dropped."""
    with pytest.raises(DispatchError, match=r"unknown option\(s\) folder, max_materialize"):
        coffea_dispatch.run(str(tmp_path / "an.json"), executor="vanilla_lxplus", max_materialize=3, folder="x")


@independent_of_coffea
@pytest.mark.parametrize(
    ("fileset", "words"),
    [
        ({"../up": ["x.root"]}, "not allowed as a folder name"),
        ({}, "non-empty dict"),
    ],
)
def test_filesets_it_cannot_honour_are_one_line(fileset, words):
    with pytest.raises(DispatchError) as error:
        coffea_dispatch.run(fileset, CountingProcessor())
    assert words in error.value.message


@independent_of_coffea
def test_a_job_array_with_a_processor_object_points_to_the_runner(generated):
    with pytest.raises(DispatchError) as error:
        coffea_dispatch.run(generated, CountingProcessor(), executor="vanilla_slurm")
    assert "coffea_dispatch.executor('vanilla_slurm') to coffea's processor.Runner" in error.value.message


@pytest.mark.slow
@independent_of_coffea
def test_the_example_notebook_runs_and_shows_the_table_and_the_plot(tmp_path):
    nbclient = pytest.importorskip("nbclient")
    nbformat = pytest.importorskip("nbformat")
    notebook = nbformat.read(EXAMPLE, as_version=4)
    nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    ).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    tables = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert any("GluGluHToGG" in table and "<table>" in table for table in tables)
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert not [o for o in outputs if o.get("output_type") == "error"]


@independent_of_coffea
def test_every_public_name_imports():
    """`coffea_dispatch.RunResult` named a module that no longer existed: each of `__all__` must resolve."""
    for name in coffea_dispatch.__all__:
        assert getattr(coffea_dispatch, name) is not None, name
    assert coffea_dispatch.RunResult.__name__ == "RunResult" and callable(coffea_dispatch.run)


def test_run_reads_what_is_left_of_its_own_result(generated, tmp_path):
    """`run(result.completeness.unprocessed(), ...)` failed: `BadInputFile {'file': ..., 'entries': [[...]]}`; a
    file read in part is read over the entries left, as the command line reads `check --unprocessed`'s JSON."""
    fileset = {"Signal": generated["Signal"]}
    options = {"executor": "iterative", "schema": "base", "progress": False, "plot": False}
    whole = coffea_dispatch.run(fileset, CountingProcessor(), chunksize=10_000, **options)
    first = coffea_dispatch.run(fileset, CountingProcessor(), chunksize=10_000, max=2, dump=tmp_path / "d", **options)
    left = first.completeness.unprocessed()
    assert left == {"Signal": [{"file": generated["Signal"][0], "entries": [[first.events, whole.events]]}]}
    rest = coffea_dispatch.run(left, CountingProcessor(), chunksize=10_000, dump=tmp_path / "d", **options)
    assert first.events + rest.events == whole.events
    both = first.accumulator["Signal"]["event_sum"] + rest.accumulator["Signal"]["event_sum"]
    assert both == whole.accumulator["Signal"]["event_sum"]


@independent_of_coffea
@pytest.mark.parametrize(
    ("fileset", "words"),
    [
        ({"ds": []}, "fileset['ds']: no file (a sample must be a non-empty list of files)"),
        ({"ds": {"files": []}}, "fileset['ds']: no file"),
        ({"ds": "f0.root"}, "fileset['ds']: expected a list of files or {'files': [...]}, got str 'f0.root'"),
        ({"ds": {"files": "f0.root"}}, "fileset['ds']['files']: expected a list of files or {file: treename}, got str"),
        ({"ds": {"files": 5}}, "fileset['ds']['files']: expected a list of files"),
        ({"ds": [5]}, "fileset['ds']: invalid file entry int 5"),
        ({"ds": [{"file": "f.root", "entries": [[5, 2]]}]}, "fileset['ds']: invalid file entry dict"),
        ({"ds": [{"file": "f.root", "entries": [[0, 10], [5, 15]]}]}, "not overlapping"),  # 5-10 read twice
        ({"ds": ["f.root", "f.root"]}, "fileset['ds']: lists f.root more than once"),
    ],
)
def test_empty_or_wrongly_typed_filesets_are_refused_in_one_line(fileset, words):
    """`{"ds": []}` ran nothing and said nothing; `{"ds": {"files": "f0.root"}}` was read a character at a time."""
    with pytest.raises(DispatchError) as error:
        coffea_dispatch.run(fileset, CountingProcessor())
    assert words in error.value.message and "\n" not in error.value.message


def test_numpy_integers_are_taken_as_integers(generated, tmp_path):
    """A chunk size computed with numpy (an int64) passed the checks, then failed writing the dump's JSON."""
    import numpy as np

    fileset = {"Signal": generated["Signal"]}
    options = {"executor": "iterative", "schema": "base", "progress": False, "dump": tmp_path / "d"}
    result = coffea_dispatch.run(fileset, CountingProcessor(), chunksize=np.int64(25_000), **options)
    assert result.accumulator["Signal"]["events"] == 50_000
    assert coffea_dispatch.executor("futures", workers=np.int32(2)).settings.workers == 2
