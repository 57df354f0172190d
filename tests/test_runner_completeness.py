"""coffea's Runner users know what was read: after `processor.Runner(executor=coffea_dispatch.executor(name))`, the
object the user holds answers per dataset what the call planned and read (`ex.completeness()`: the dump's
`Completeness`, files read, partly read, failed and not run, entries, sums of generator weights), and `report=`
writes it as a dump's completeness.json. coffea's Runner calls copies of the executor: the original must answer."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import uproot
from coffea import processor
from coffea.nanoevents import BaseSchema

import coffea_dispatch
from agc_like import MetadataWeighted
from coffea_dispatch.dump.coffea_form import runner_items
from coffea_dispatch.dump.completeness import FAILED, NOT_RUN, PARTIAL, READ
from coffea_dispatch.errors import DispatchError
from coffea_dispatch.inputs.compat import LEGACY_COFFEA
from conftest import independent_of_coffea
from runner_processors import UNREADABLE_DATASET_VARIABLE, CountingProcessor

CHUNK = 20_000
TESTS = Path(__file__).resolve().parent


def runner(executor, **options):
    return processor.Runner(executor=executor, schema=BaseSchema, chunksize=CHUNK, **options)


def genweight_sum(path: str, start: int = 0, stop: int | None = None) -> float:
    with uproot.open(path) as handle:
        weights = handle["Events"]["genWeight"].array(library="np", entry_start=start, entry_stop=stop)
    return float(np.sum(weights, dtype=np.float64))


@pytest.fixture
def with_a_missing_file(generated, tmp_path) -> dict[str, list[str]]:
    """The generated fileset with a Background file that does not exist (skipbadfiles leaves it out)."""
    return {"Signal": generated["Signal"], "Background": [*generated["Background"], str(tmp_path / "gone.root")]}


def assert_answers_the_run(completeness, fileset, output):
    """Every dataset and file given; the missing file failed with coffea's preprocessing named; the others read
    whole, with the entries the accumulator counted and the sum of generator weights uproot gives."""
    assert set(completeness) == set(fileset)
    for dataset, files in fileset.items():
        sample = completeness[dataset]
        assert list(sample.files) == files or sorted(sample.files) == sorted(files)
        assert sample.entries_read == output[dataset]["events"]
        for path in files:
            reading = sample.files[path]
            if path.endswith("gone.root"):
                assert reading.status == FAILED and "coffea's preprocessing could not read it" in reading.problem
                continue
            assert reading.status == READ and reading.entries == uproot.open(path)["Events"].num_entries
            assert reading.sumw_read == pytest.approx(genweight_sum(path), rel=1e-9)
            assert reading.uuid == uproot.open(path).file.fUUID.hex()
    assert completeness["Signal"].complete and not completeness["Background"].complete


def test_runner_completeness_on_the_iterative_executor_and_its_report(with_a_missing_file, tmp_path):
    """Before: `DispatchExecutor` had no completeness() (AttributeError), and executor() refused report=."""
    report = tmp_path / "report.json"
    ex = coffea_dispatch.executor("iterative", status=False, report=str(report))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # coffea warns of the file it skips
        output = runner(ex, skipbadfiles=True)(
            with_a_missing_file, treename="Events", processor_instance=CountingProcessor()
        )
    completeness = ex.completeness()  # the object the user holds, not the copies coffea called
    assert_answers_the_run(completeness, with_a_missing_file, output)
    assert json.loads(report.read_text()) == json.loads(json.dumps(completeness.to_json()))
    assert "chunks" in output and "coffea_dispatch_read" not in output  # the Runner's output is the processor's


@pytest.mark.slow
@pytest.mark.parametrize("name", ["futures", "dask/local"])
def test_runner_completeness_on_our_pools_and_clusters(name, with_a_missing_file):
    cluster = {"scaleout": 2} if name == "dask/local" else {}
    with coffea_dispatch.executor(name, workers=2, status=False, **cluster) as ex:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            output = runner(ex, skipbadfiles=True)(
                with_a_missing_file, treename="Events", processor_instance=CountingProcessor()
            )
        assert_answers_the_run(ex.completeness(), with_a_missing_file, output)


def test_maxchunks_leaves_files_partly_read_and_not_run_and_the_rest_runs_from_the_coffea_form(generated):
    """maxchunks=1: one chunk of each dataset read; what is left, in coffea's form, run by coffea's own Runner
    (IterativeExecutor) through `runner_items`, gives with the first output every chunk of a full run once.
    coffea 2026 preprocesses only the first maxchunks files of a dataset (`_limit_preprocess_files`): the others
    never reach the executor, which cannot name them; coffea 0.7 hands it every file whose metadata it has not
    cached yet (the rest: not run)."""
    ex = coffea_dispatch.executor("iterative", status=False)
    fresh = {}  # coffea's metadata cache: a file described by an earlier call would not reach the executor again
    first = runner(ex, maxchunks=1, metadata_cache=fresh)(
        generated, treename="Events", processor_instance=CountingProcessor()
    )
    completeness = ex.completeness()
    signal, background = completeness["Signal"], completeness["Background"]
    assert [r.status for r in signal.files.values()] == [PARTIAL]
    expected = [PARTIAL, NOT_RUN] if LEGACY_COFFEA else [PARTIAL]
    assert sorted(r.status for r in background.files.values()) == sorted(expected)
    (partial,) = [r for r in background.files.values() if r.status == PARTIAL]
    assert partial.entries_read == first["Background"]["events"] and partial.entries is not None
    left = completeness.unprocessed(format="coffea", chunksize=CHUNK)
    assert set(left) == {"Signal", "Background"} and len(left["Background"]["files"]) == len(background.files)
    seen = {dataset: list(sample.files) for dataset, sample in completeness.items()}
    iterative = processor.IterativeExecutor(status=False)
    rest = runner(iterative)(runner_items(left), treename="Events", processor_instance=CountingProcessor())
    full = runner(iterative)(seen, treename="Events", processor_instance=CountingProcessor())
    assert processor.accumulate([first, rest]) == full
    assert not first["chunks"] & rest["chunks"]


def test_what_maxchunks_left_keeps_the_datasets_metadata_for_a_processor_reading_it(generated):
    """Before: the completeness had no metadata (the Runner's items carried it, nothing kept it), so coffea's
    Runner on what was left failed in the processor (KeyError 'xsec'). Each dataset's metadata is kept as the
    fileset gave it (numpy scalars as Python's: JSON), and what is left runs to the clean full run's output."""
    lumi = 1000 if LEGACY_COFFEA else np.int64(1000)  # coffea 0.7's NanoEvents JSON-encodes metadata: no numpy int
    meta = {  # weights 4.0: sums of photons times them are exact, whatever order the chunks are added in
        "Signal": {"process": "Signal", "variation": "nominal", "nevts": 500, "xsec": np.float64(2.0), "lumi": 1000},
        "Background": {"process": "Background", "variation": "up", "nevts": 250, "xsec": 1.0, "lumi": lumi},
    }
    fileset = {name: {"files": files, "metadata": meta[name]} for name, files in generated.items()}
    ex = coffea_dispatch.executor("iterative", status=False)
    first = runner(ex, maxchunks=1, metadata_cache={})(
        fileset, treename="Events", processor_instance=MetadataWeighted()
    )
    completeness = ex.completeness()
    plain = {name: {k: v.item() if isinstance(v, np.generic) else v for k, v in m.items()} for name, m in meta.items()}
    left = completeness.unprocessed(format="coffea", chunksize=CHUNK)
    assert {name: spec["metadata"] for name, spec in left.items()} == plain
    assert json.loads(json.dumps(left)) == left  # JSON, as check --unprocessed writes it
    assert {name: spec["metadata"] for name, spec in completeness.unprocessed().items()} == plain
    iterative = processor.IterativeExecutor(status=False)
    rest = runner(iterative)(runner_items(left), treename="Events", processor_instance=MetadataWeighted())
    seen = {name: {"files": list(sample.files), "metadata": meta[name]} for name, sample in completeness.items()}
    full = runner(iterative, metadata_cache={})(seen, treename="Events", processor_instance=MetadataWeighted())
    assert processor.accumulate([first, rest]) == full
    assert full["Signal"]["weighted"] == 4.0 * full["Signal"]["photons"] > 0


def test_a_chunk_given_up_by_skipbadfiles_is_failed_with_why(generated, monkeypatch):
    monkeypatch.setenv(UNREADABLE_DATASET_VARIABLE, "Signal")  # its chunks raise OSError: coffea skips them
    ex = coffea_dispatch.executor("iterative", status=False, retries=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        output = runner(ex, skipbadfiles=True)(generated, treename="Events", processor_instance=CountingProcessor())
    assert "Signal" not in output
    (reading,) = ex.completeness()["Signal"].files.values()
    assert reading.status == FAILED and reading.entries_read == 0
    assert reading.problem == "failed: 2 of its 2 chunk(s) not read (coffea's skipbadfiles gave them up)"
    assert ex.completeness()["Background"].complete


@independent_of_coffea
def test_report_never_replaces_a_file_the_tool_did_not_write(tmp_path):
    mine = tmp_path / "notes.json"
    mine.write_text('{"mine": true}')
    with pytest.raises(DispatchError) as error:
        coffea_dispatch.executor("futures", report=str(mine))
    assert error.value.message.startswith(f"{mine}: exists and is not a completeness report")
    assert "\n" not in error.value.message and mine.read_text() == '{"mine": true}'


@pytest.fixture
def importable_by_jobs(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))


def test_runner_completeness_of_a_job_array_through_the_htcondor_stand_in(
    with_a_missing_file, tmp_path, monkeypatch, importable_by_jobs
):
    from fake_scheduler import install

    for key, value in install(tmp_path / "condor").items():
        monkeypatch.setenv(key, value)
    ex = coffea_dispatch.executor("vanilla_lxplus", folder=str(tmp_path / "sub"), poll_seconds=0.2, status=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        output = runner(ex, skipbadfiles=True)(
            with_a_missing_file, treename="Events", processor_instance=CountingProcessor()
        )
    assert_answers_the_run(ex.completeness(), with_a_missing_file, output)


@pytest.mark.slow
def test_runner_completeness_of_a_vanilla_slurm_job_array(
    slurm, with_a_missing_file, tmp_path, monkeypatch, importable_by_jobs
):
    for key, value in slurm.env.items():
        monkeypatch.setenv(key, value)
    options = {"folder": str(tmp_path / "sub"), "poll_seconds": 0.5, "status": False, "walltime": "00:20:00"}
    ex = coffea_dispatch.executor("vanilla_slurm", report=str(tmp_path / "report.json"), **options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        output = runner(ex, skipbadfiles=True)(
            with_a_missing_file, treename="Events", processor_instance=CountingProcessor()
        )
    assert_answers_the_run(ex.completeness(), with_a_missing_file, output)
    assert json.loads((tmp_path / "report.json").read_text())["samples"]["Signal"]["complete"]
