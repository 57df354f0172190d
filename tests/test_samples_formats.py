"""`coffea-dispatch samples --format coffea|pocketcoffea`: what coffea's preprocess, apply_to_fileset and Runner and
PocketCoffea's dataset reader take as written, with each sample's metadata (events, sum of generator weights, data or
simulation, year and era, DAS names, cross-section, sites); the sums checked against uproot's, the files real (the
`generated` fixture, the real NanoAOD in /work/shared), DAS through the recorded dasgoclient stand-in."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import uproot
from coffea import processor
from coffea.nanoevents import BaseSchema

from coffea_dispatch.datasets import SamplesOptions, build_samples
from coffea_dispatch.datasets.metadata import year_and_era
from conftest import LOOSE_CUTS, read_rows, write_analysis
from helpers import assert_same_rows, run_analysis_with
from test_datasets import (  # noqa: F401 (dasgoclient: a fixture)
    DAS_ANSWERS,
    DATA,
    DATASET,
    PRIVATE,
    das_file,
    dasgoclient,
    datasets_txt,
    run_samples,
)


class EchoMetadata(processor.ProcessorABC):
    """A coffea user's processor reading what the fileset's metadata put in `events.metadata`."""

    def process(self, events):
        meta = events.metadata
        return {
            meta["dataset"]: {
                "events": len(events),
                "said": {(meta["isMC"], meta.get("xsec"), meta["nevents"], round(meta.get("sumw", 0.0), 3))},
            }
        }

    def postprocess(self, accumulator):
        return accumulator


def _coffea_2026() -> bool:
    import coffea

    return not coffea.__version__.startswith("0.")


@pytest.fixture
def local_listing(generated, tmp_path) -> Path:
    folder = Path(generated["Background"][0]).parent
    (tmp_path / "xsec.txt").write_text("# sample  cross-section [pb]\nSignal 0.25\nBackground 12.5\n")
    return datasets_txt(tmp_path, f"Signal {folder}/Signal_*.root\nBackground {folder}/Background_*.root\n")


def _uproot_sums(files: list[str]) -> tuple[int, float]:
    """Events, and the sum of generator weights as NanoAOD keeps it: the Runs tree's genEventSumw (or, older,
    genEventSumw_), else the events' genWeight."""
    events, sumw = 0, 0.0
    for name in files:
        with uproot.open(name) as opened:
            events += opened["Events"].num_entries
            runs = set(opened["Runs"].keys()) if "Runs" in opened else set()
            key = next((k for k in ("genEventSumw", "genEventSumw_") if k in runs), None)
            if key is not None:
                sumw += float(np.sum(opened["Runs"][key].array(library="np"), dtype=np.float64))
            else:
                sumw += float(np.sum(opened["Events"]["genWeight"].array(library="np"), dtype=np.float64))
    return events, sumw


@pytest.mark.parametrize(
    ("dataset", "expected"),
    [
        (DATASET, ("2022", None)),
        (DATA, ("2022", "C")),
        (PRIVATE, ("2022", None)),
        ("/DY/RunIISummer20UL16NanoAODAPVv9-106X_mcRun2_asymptotic_preVFP_v11-v1/NANOAODSIM", ("2016", None)),
        ("/TT/RunIIAutumn18NanoAODv7-Nano02Apr2020_102X_upgrade2018_realistic_v21-v1/NANOAODSIM", ("2018", None)),
        ("/TT/Run3Summer23BPixNanoAODv12-130X_mcRun3_2023_realistic_postBPix_v2-v3/NANOAODSIM", ("2023", None)),
        ("/EGamma/Run2018D-UL2018_MiniAODv2_NanoAODv9-v3/NANOAOD", ("2018", "D")),
        ("/X/someone-private-v1/USER", (None, None)),  # not guessed
    ],
)
def test_year_and_era_from_the_das_name(dataset, expected):
    assert year_and_era(dataset) == expected


def test_metadata_sums_equal_uproots(generated, shared_nanoaod, tmp_path):
    """Events and sums of generator weights in the metadata are the files' own, as uproot reads them (the Runs
    tree's genEventSumw_ for the real NanoAOD, the events' genWeight for generated files without one); data (run
    and luminosity blocks, no genWeight) is told from simulation by the files when no DAS name says it."""
    listing = datasets_txt(tmp_path, f"""\
        Background {Path(generated["Background"][0]).parent}/Background_*.root
        DY {shared_nanoaod}/nano_dy.root
        Dimuon {shared_nanoaod}/nano_dimuon.root
    """)  # fmt: skip
    options = SamplesOptions(mode="local", sum_weights=True, metadata_cache=str(tmp_path / "cache"), format="coffea")
    result = build_samples(listing, tmp_path / "fileset.json", options=options)
    written = json.loads((tmp_path / "fileset.json").read_text())
    for name, files in (("Background", generated["Background"]), ("DY", [f"{shared_nanoaod}/nano_dy.root"])):
        events, sumw = _uproot_sums(files)
        metadata = written[name]["metadata"]
        assert metadata == result.metadata[name]
        assert metadata["nevents"] == events and metadata["sumw"] == pytest.approx(sumw, rel=1e-12), (name, metadata)
        assert metadata["isMC"] is True and metadata["sites"] == ["local"]
    assert written["Dimuon"]["metadata"]["isMC"] is False and "sumw" not in written["Dimuon"]["metadata"]
    assert written["Dimuon"]["metadata"]["nevents"] == 40
    again = build_samples(listing, dry_run=True, options=options)  # from the metadata cache: the same numbers
    assert again.metadata == result.metadata


def test_coffea_format_runs_unchanged_through_coffeas_runner(local_listing, generated, tmp_path):
    """Before: `{name: [files]}` only; coffea's preprocess refused it (ValidationError ... object_path), and no
    metadata reached events.metadata."""
    output = tmp_path / "fileset.json"
    common = ["-i", str(local_listing), "--mode", "local", "--metadata-cache", str(tmp_path / "cache")]
    assert run_samples(*common, "--format", "coffea", "--sum-weights", "--xsec", str(tmp_path / "xsec.txt"),
                       "-o", str(output)) == 0  # fmt: skip
    fileset = json.loads(output.read_text())
    assert fileset["Signal"]["files"] == dict.fromkeys(generated["Signal"], "Events")
    assert list(fileset["Background"]["files"]) == generated["Background"]
    # a fresh metadata cache: coffea's default one keeps an earlier test's metadata of these files
    runner = processor.Runner(processor.IterativeExecutor(), schema=BaseSchema, chunksize=20_000, metadata_cache={})
    # coffea 2026 reads the tree names in the fileset; coffea 0.7's Runner wants treename all the same
    out = runner(fileset, processor_instance=EchoMetadata(), treename=None if _coffea_2026() else "Events")
    for name, xsec in (("Signal", 0.25), ("Background", 12.5)):
        events, sumw = _uproot_sums(generated[name])
        assert out[name]["events"] == events
        assert out[name]["said"] == {(True, xsec, events, round(sumw, 3))}
    if _coffea_2026():
        from coffea.dataset_tools.filespec import DataGroupSpec

        spec = DataGroupSpec.model_validate(fileset)  # what preprocess and apply_to_fileset validate first
        assert {f.object_path for d in spec.values() for f in d.files.values()} == {"Events"}
        assert spec["Signal"].metadata["xsec"] == 0.25


def test_coffea_format_through_preprocess_and_apply_to_fileset(local_listing, generated, tmp_path):
    """coffea 2026's dask-awkward path on the file as written: preprocess (steps, uuids) and apply_to_fileset +
    dask.compute count every event once; metadata reaches events.metadata there too."""
    dak = pytest.importorskip("dask_awkward")
    import dask
    from coffea.dataset_tools import apply_to_fileset, preprocess

    output = tmp_path / "fileset.json"
    options = SamplesOptions(mode="local", format="coffea", xsec=str(tmp_path / "xsec.txt"))
    build_samples(local_listing, output, options=options)
    fileset = json.loads(output.read_text())
    available, _ = preprocess(fileset, step_size=20_000, scheduler="sync")
    for name, files in generated.items():
        entries = sum(stop - start for f in available[name]["files"].values() for start, stop in f["steps"])
        assert entries == _uproot_sums(files)[0]
        assert available[name]["metadata"]["xsec"] == fileset[name]["metadata"]["xsec"]

    class Counting(processor.ProcessorABC):
        def process(self, events):
            return {"events": dak.num(events, axis=0), "xsec": events.metadata["xsec"]}

        def postprocess(self, accumulator):
            return accumulator

    (computed,) = dask.compute(apply_to_fileset(Counting(), available, schemaclass=BaseSchema), scheduler="sync")
    for name, files in generated.items():
        assert computed[name]["events"] == _uproot_sums(files)[0]
        assert computed[name]["xsec"] == fileset[name]["metadata"]["xsec"]


def test_pocketcoffea_format_has_its_documented_keys(request, tmp_path, capsys):
    """PocketCoffea's build_datasets output (docs/datasets.md, 'Datasets building output'): per dataset
    {"metadata": {...}, "files": [...]}, every metadata value a string (`str(v)`): das_names, sample, year, isMC,
    xsec, nevents, size; `era` for data. Its processors read isMC as "True"/"False", float(xsec), and era for data."""
    request.getfixturevalue("dasgoclient")  # the recorded DAS answers (test_datasets.py)
    listing = datasets_txt(tmp_path, f"GluGluHToGG /GluGluHToGG*/Run3Summer22NanoAODv12*/NANOAODSIM\nMuon {DATA}\n")
    xsec = tmp_path / "xsec.json"
    xsec.write_text(json.dumps({"GluGluHToGG": 0.1}))
    assert run_samples("-i", str(listing), "--format", "pocketcoffea", "--xsec", str(xsec)) == 0
    datasets = json.loads((tmp_path / "datasets.json").read_text())
    for dataset in datasets.values():
        assert set(dataset) == {"metadata", "files"} and all(isinstance(f, str) for f in dataset["files"])
        assert all(isinstance(v, str) for v in dataset["metadata"].values()), dataset["metadata"]
        assert {"das_names", "sample", "year", "isMC", "nevents", "size"} <= set(dataset["metadata"])
    signal, muon = datasets["GluGluHToGG"]["metadata"], datasets["Muon"]["metadata"]
    assert signal["das_names"] == str([DATASET]) and signal["sample"] == "GluGluHToGG" and signal["year"] == "2022"
    assert signal["isMC"] in ["True", "true"] and float(signal["xsec"]) == 0.1  # as its processors read them
    assert signal["nevents"] == "50000" and signal["size"] == "1000"
    assert datasets["GluGluHToGG"]["files"] == ["root://cmsxrootd.fnal.gov//store/data/Signal_0.root"]
    assert muon["isMC"] == "False" and muon["era"] == "C" and muon["year"] == "2022" and "xsec" not in muon
    assert muon["nevents"] == "3000"
    # simulation without a cross-section: PocketCoffea would fail in its processor; here, one line before writing
    assert run_samples("-i", str(listing), "--format", "pocketcoffea", "-o", str(tmp_path / "no.json")) == 2
    assert capsys.readouterr().err.strip() == "error: --format pocketcoffea: sample 'GluGluHToGG' has no 'xsec' " \
        "(simulation: give its cross-section in --xsec FILE)"  # fmt: skip
    assert not (tmp_path / "no.json").exists()


def test_xsec_and_eras_tables(local_listing, tmp_path, capsys):
    """--eras sets year and era where no DAS name says them; a bad line in either file is one error naming the
    file and line; a name that matches nothing is noted (a typo would leave a sample without its number)."""
    eras = tmp_path / "eras.txt"
    eras.write_text("Signal 2018 B\nBackground 2018\nSignl 2017\n")
    options = SamplesOptions(mode="local", xsec=str(tmp_path / "xsec.txt"), eras=str(eras), format="coffea")
    result = build_samples(local_listing, dry_run=True, options=options)
    assert (result.metadata["Signal"]["year"], result.metadata["Signal"]["era"]) == ("2018", "B")
    assert result.metadata["Background"]["year"] == "2018" and "era" not in result.metadata["Background"]
    assert result.metadata["Signal"]["xsec"] == 0.25
    assert result.notes == ["--eras: Signl is no sample or dataset listed here"]
    bad = tmp_path / "bad.txt"
    bad.write_text("# name xsec\nSignal 0.25\nBackground twelve\n")
    assert run_samples("-i", str(local_listing), "--mode", "local", "--xsec", str(bad), "--dry-run") == 2
    assert capsys.readouterr().err.strip() == f"error: {bad}:3: expected '<sample or DAS name> <cross-section in " \
        "pb>' with a positive number, got 'Background twelve'"  # fmt: skip
    bad.write_text('{"Signal": 0.25,\n "Background": }\n')
    assert run_samples("-i", str(local_listing), "--mode", "local", "--xsec", str(bad), "--dry-run") == 2
    assert capsys.readouterr().err.strip().startswith(f"error: {bad}:2: not valid JSON (")
    bad.write_text("Signal\n")
    assert run_samples("-i", str(local_listing), "--mode", "local", "--eras", str(bad), "--dry-run") == 2
    assert capsys.readouterr().err.strip().startswith(f"error: {bad}:1: expected '<sample or DAS name> <year> [era]'")
    assert run_samples("-i", str(local_listing), "--mode", "local", "--xsec", str(tmp_path / "none.txt")) == 2
    assert "none.txt: cannot read the cross-section file (No such file or directory)" in capsys.readouterr().err


@pytest.mark.parametrize("form", ["coffea", "pocketcoffea"])
def test_our_run_reads_every_form_samples_writes(form, local_listing, generated, tmp_path):
    """`coffea-dispatch run` over the sample JSON in each form gives the rows of a run over the HiggsDNA form."""
    (tmp_path / "eras.txt").write_text("Signal 2022\nBackground 2022\n")  # PocketCoffea's forms need a year
    options = ["--mode", "local", "--xsec", str(tmp_path / "xsec.txt"), "--eras", str(tmp_path / "eras.txt")]
    options += ["--count-events", "--metadata-cache", str(tmp_path / "cache")]
    for written in (form, "higgsdna"):
        assert (
            run_samples("-i", str(local_listing), *options, "--format", written, "-o", f"{tmp_path}/{written}.json")
            == 0
        )
        analysis = write_analysis(tmp_path / written, {}, metaconditions={"preselection": LOOSE_CUTS})
        content = json.loads(analysis.read_text())
        content["samplejson"] = f"{tmp_path}/{written}.json"
        analysis.write_text(json.dumps(content))
        run_analysis_with(analysis, tmp_path / f"out_{written}", "iterative", chunk=20_000)
    for sample in generated:
        assert_same_rows(read_rows(tmp_path / f"out_{form}", sample), read_rows(tmp_path / "out_higgsdna", sample))


DATA_2023 = "/Muon/Run2023C-22Sep2023_v1-v1/NANOAOD"


def test_a_name_listed_for_two_years_collects_both_unless_pocketcoffea(request, tmp_path, capsys):
    """HiggsDNA lets a name given twice collect both lists. Before: every format (the default higgsdna, which
    writes no metadata, too) refused "sample 'Data' mixes years 2022, 2023". Now the HiggsDNA form collects both,
    coffea's writes the metadata without year and era with a note, PocketCoffea's (one year per sample) refuses."""
    answers = request.getfixturevalue("dasgoclient") / "answers.json"  # the recorded DAS answers, and a 2023 one
    answers.write_text(json.dumps({**DAS_ANSWERS, f"file dataset={DATA_2023} instance=prod/global": [
        das_file("/store/data/Run2023C/Muon_0.root", 6000, 4000)]}))  # fmt: skip
    listing = datasets_txt(tmp_path, f"Data {DATA}\nData {DATA_2023}\n")
    assert run_samples("-i", str(listing), "-o", str(tmp_path / "higgsdna.json")) == 0
    assert json.loads((tmp_path / "higgsdna.json").read_text()) == {"Data": [
        f"root://cmsxrootd.fnal.gov//store/data/Run2022C/Muon_{i}.root" for i in (0, 1)] + [
        "root://cmsxrootd.fnal.gov//store/data/Run2023C/Muon_0.root"]}  # fmt: skip
    capsys.readouterr()
    assert run_samples("-i", str(listing), "--format", "coffea", "-o", str(tmp_path / "coffea.json")) == 0
    metadata = json.loads((tmp_path / "coffea.json").read_text())["Data"]["metadata"]
    assert metadata["isMC"] is False and metadata["nevents"] == 7000 and metadata["das_names"] == [DATA, DATA_2023]
    assert "year" not in metadata and "era" not in metadata
    said = " ".join(capsys.readouterr().out.split())
    assert "note: sample 'Data' mixes years 2022, 2023: left out of its metadata" in said, said
    assert run_samples("-i", str(listing), "--format", "pocketcoffea", "-o", str(tmp_path / "pocket.json")) == 2
    assert capsys.readouterr().err.strip() == "error: --format pocketcoffea: sample 'Data' mixes years 2022, 2023, " \
        "and PocketCoffea reads one per sample: give each its own sample name, or set one with --eras FILE"  # fmt: skip
    assert not (tmp_path / "pocket.json").exists()
