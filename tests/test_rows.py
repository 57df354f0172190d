"""The invariant: every executor writes exactly the rows of the iterative run, and those rows are right."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

import reference
from coffea_dispatch.errors import DispatchError
from coffea_dispatch.inputs.compat import LEGACY_COFFEA
from coffea_dispatch.output import chunk_output_name, read_parquet_metadata
from conftest import LOOSE_CUTS, read_rows, sort_rows, write_analysis
from helpers import assert_same_rows
from helpers import run_analysis_with as run

CHUNK = 30_000  # several chunks per generated file


def expected_rows(files: list[str], cuts: dict | None = None) -> dict[str, np.ndarray]:
    parts = [reference.select(f, cuts)[0] for f in files]
    return sort_rows({k: np.concatenate([p[k] for p in parts]) for k in parts[0]})


@pytest.fixture(scope="module")
def generated_runs(generated, tmp_path_factory):
    folder = tmp_path_factory.mktemp("rows")
    analysis = write_analysis(folder, generated)
    results = {}
    for executor, workers in (("iterative", None), ("futures", 2)):
        dump = folder / f"out_{executor}"
        results[executor] = (dump, run(analysis, dump, executor, workers=workers, chunk=CHUNK))
    return results


@pytest.mark.slow
def test_iterative_and_futures_write_identical_rows(generated, generated_runs):
    for sample in generated:
        iterative = read_rows(generated_runs["iterative"][0], sample)
        futures = read_rows(generated_runs["futures"][0], sample)
        assert len(iterative["event"]) > 1000
        assert_same_rows(futures, iterative)


def test_rows_equal_independent_uproot_awkward_computation(generated, generated_runs):
    for sample, files in generated.items():
        assert_same_rows(read_rows(generated_runs["futures"][0], sample), expected_rows(files))


def test_one_output_file_per_chunk_with_normalisation_metadata(generated, generated_runs):
    dump, result = generated_runs["futures"]
    for sample in generated:
        outputs = sorted((dump / sample / "nominal").glob("*.parquet"))
        assert len(outputs) == result.samples[sample].chunks
        assert not list((dump / sample / "nominal").glob(".*"))  # no temporary files left behind
        total_genw = 0.0
        for output in outputs:
            meta = read_parquet_metadata(output)
            start, stop = int(meta["coffea_dispatch.entrystart"]), int(meta["coffea_dispatch.entrystop"])
            assert output.name == chunk_output_name(meta["coffea_dispatch.input"], start, stop)
            _, events, sum_genw = reference.select(meta["coffea_dispatch.input"], entry_start=start, entry_stop=stop)
            assert events == stop - start
            assert float(meta["sum_genw_presel"]) == pytest.approx(sum_genw, rel=1e-12)
            total_genw += float(meta["sum_genw_presel"])
        assert total_genw == pytest.approx(result.accumulator[sample]["sum_genw"], rel=1e-12)


@pytest.mark.slow
def test_summary_counts_every_event_and_candidate(generated, generated_runs):
    for executor in ("iterative", "futures"):
        dump, result = generated_runs[executor]
        for sample, files in generated.items():
            summary = result.samples[sample]
            assert summary.events == sum(reference.select(f)[1] for f in files)
            assert summary.files == len(files)
            assert summary.candidates == len(read_rows(dump, sample)["event"])
            assert result.accumulator[sample]["mass"].sum().value == pytest.approx(
                read_rows(dump, sample)["weight"].sum()
            )


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["iterative", "futures"])
def test_real_nanoaod_files_with_loosened_cuts(shared_nanoaod, tmp_path, executor):
    samples = {
        "DY": [str(shared_nanoaod / "nano_dy.root")],
        "Dimuon": [str(shared_nanoaod / "nano_dimuon.root")],
        "Empty": [str(shared_nanoaod / "nano_dy_empty.root")],
    }
    analysis = write_analysis(tmp_path, samples, metaconditions={"preselection": LOOSE_CUTS})
    result = run(analysis, tmp_path / "out", executor, workers=2)
    for sample in ("DY", "Dimuon"):
        rows = read_rows(tmp_path / "out", sample)
        assert len(rows["event"]) > 0
        assert_same_rows(rows, expected_rows(samples[sample], LOOSE_CUTS))
        assert result.samples[sample].events == 40
    # the empty file is processed, counted with 0 events, and leaves an (empty) output: not lost
    empty = result.samples["Empty"]
    assert (empty.files, empty.chunks, empty.events, empty.candidates) == (1, 1, 0, 0)
    outputs = list((tmp_path / "out" / "Empty" / "nominal").glob("*.parquet"))
    assert len(outputs) == 1 and pq.read_table(outputs[0]).num_rows == 0
    assert float(read_parquet_metadata(outputs[0])["sum_genw_presel"]) == 0.0


@pytest.mark.slow
def test_real_files_default_cuts_keep_dy_diphotons(shared_nanoaod, tmp_path):
    """nano_dy.root has 2 events with two photons above 25 GeV: default cuts can only keep a subset of those."""
    files = [str(shared_nanoaod / "nano_dy.root")]
    result = run(write_analysis(tmp_path, {"DY": files}), tmp_path / "out", "iterative")
    assert result.samples["DY"].candidates == len(expected_rows(files)["event"]) <= 2


@pytest.mark.slow
def test_rntuple_file_runs(shared_nanoaod, tmp_path):
    files = [str(shared_nanoaod / "nano_dy_rntuple.root")]
    analysis = write_analysis(tmp_path, {"DY_rntuple": files}, metaconditions={"preselection": LOOSE_CUTS})
    if LEGACY_COFFEA:  # uproot 4 cannot read RNTuple: one clear line instead
        with pytest.raises(DispatchError, match="is an RNTuple, which uproot 4.* cannot read"):
            run(analysis, tmp_path / "out", "iterative")
        return
    result = run(analysis, tmp_path / "out", "iterative")
    assert result.samples["DY_rntuple"].events == 40
    # the same events as the TTree version of the file
    ttree_rows = expected_rows([str(shared_nanoaod / "nano_dy.root")], LOOSE_CUTS)
    assert_same_rows(read_rows(tmp_path / "out", "DY_rntuple"), ttree_rows, exact=False)


def test_metaconditions_override_every_threshold(generated, tmp_path):
    cuts = {
        "photon_pt_min": 30.0,
        "photon_abs_eta_max": 2.0,
        "eb_ee_gap": [1.3, 1.7],
        "photon_mvaid_min": -0.5,
        "photon_hoe_max": 0.05,
        "require_electron_veto": False,
        "lead_pt_min": 40.0,
        "sublead_pt_min": 30.0,
        "lead_pt_over_mass_min": 0.3,
        "sublead_pt_over_mass_min": 0.2,
        "mass_min": 110.0,
        "mass_max": 150.0,
    }
    files = generated["Signal"]
    analysis = write_analysis(tmp_path, {"Signal": files}, metaconditions={"preselection": cuts})
    run(analysis, tmp_path / "out", "futures", workers=2, chunk=CHUNK)
    rows = read_rows(tmp_path / "out", "Signal")
    assert_same_rows(rows, expected_rows(files, cuts))
    assert len(rows["event"]) < len(expected_rows(files)["event"])


def test_photon_without_mass_branch_is_massless(tmp_path):
    """Run-3 NanoAOD v15 has no Photon_mass: candidates are built from massless photons."""
    import uproot

    from coffea_dispatch.synthetic.generator import SampleSpec, make_sample, write_ttree

    source = make_sample(tmp_path / "with_mass.root", SampleSpec(events=5000, seed=3, signal_fraction=0.5))
    arrays = uproot.open(source)["Events"].arrays(how=dict)
    photon = {k.removeprefix("Photon_"): v for k, v in arrays.items() if k.startswith("Photon_") and k != "Photon_mass"}
    import awkward as ak

    with uproot.recreate(tmp_path / "no_mass.root") as out:
        write_ttree(
            out,
            "Events",
            {
                "run": arrays["run"],
                "luminosityBlock": arrays["luminosityBlock"],
                "event": arrays["event"],
                "genWeight": arrays["genWeight"],
                "Photon": ak.zip(photon),
            },
        )
    files = [str(tmp_path / "no_mass.root")]
    run(write_analysis(tmp_path, {"NoMass": files}), tmp_path / "out", "iterative")
    rows = read_rows(tmp_path / "out", "NoMass")
    assert len(rows["event"]) > 100
    assert_same_rows(rows, expected_rows(files))


@pytest.mark.slow
def test_file_replaced_at_same_path_is_reread(tmp_path):
    """Open files are cached per process: a regenerated file at the same path must not be read stale."""
    from coffea_dispatch.synthetic.generator import SampleSpec, make_sample

    path = tmp_path / "sample.root"
    analysis = write_analysis(tmp_path, {"S": [str(path)]})
    results = []
    for seed in (1, 2):
        make_sample(path, SampleSpec(events=20_000, seed=seed, signal_fraction=0.5))
        run(analysis, tmp_path / f"out{seed}", "iterative")
        results.append(read_rows(tmp_path / f"out{seed}", "S"))
        assert_same_rows(results[-1], expected_rows([str(path)]))
    assert len(results[0]["event"]) != len(results[1]["event"]) or not np.array_equal(
        results[0]["mass"], results[1]["mass"]
    )
