"""Every coffea fileset form through `coffea_dispatch.run` and `coffea-dispatch run`: dataset metadata reaching
events.metadata as coffea's Runner passes it, tree names per dataset and per file, coffea's preprocessed filesets
(steps as the chunks, the uuid checked), on both coffea generations; a resumed dump never returns the numbers of
other metadata."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import uproot
from coffea import processor
from coffea.nanoevents import BaseSchema
from coffea.util import load

import coffea_dispatch
from agc_like import CountingOnly, MetadataWeighted
from coffea_dispatch.cli import main
from coffea_dispatch.errors import DispatchError
from coffea_dispatch.inputs.filesets import RESERVED_METADATA
from conftest import TESTS, write_analysis

pytestmark = pytest.mark.slow
CHUNK = 15_000
OPTIONS = {"schema": "base", "progress": False, "plot": False, "chunksize": CHUNK}


def agc_fileset(generated: dict[str, list[str]]) -> dict:
    """The AGC's fileset form: per dataset its files and its metadata (weights exact in binary)."""
    return {
        "ttbar__nominal": {
            "files": {f: "Events" for f in generated["Signal"]},
            "metadata": {"process": "ttbar", "variation": "nominal", "nevts": 50_000, "xsec": 4.0, "lumi": 25_000},
        },
        "wjets__nominal": {
            "files": generated["Background"],
            "treename": "Events",
            "metadata": {"process": "wjets", "variation": "nominal", "nevts": 70_000, "xsec": 1.75, "lumi": 10_000},
        },
    }


def coffea_runner(fileset: dict, processor_instance=None, treename: str | None = "Events"):
    """coffea's own numbers; a fresh metadata cache, since coffea's default one keeps a file's dataset metadata
    (a second Runner call with another xsec gets the first xsec back)."""
    executor = processor.IterativeExecutor()
    runner = processor.Runner(executor=executor, schema=BaseSchema, chunksize=CHUNK, metadata_cache={})
    return runner(fileset, processor_instance=processor_instance or MetadataWeighted(), treename=treename)


@pytest.mark.parametrize("executor", ["iterative", "futures"])
def test_dataset_metadata_reaches_events_metadata_as_coffeas_runner_passes_it(generated, executor):
    """The AGC's own fileset was refused ("dataset metadata is not passed to events.metadata")."""
    fileset = agc_fileset(generated)
    ours = coffea_dispatch.run(fileset, MetadataWeighted(), executor=executor, **OPTIONS)
    assert ours.accumulator == coffea_runner(fileset)
    assert ours.accumulator["ttbar"]["weighted"] == ours.accumulator["ttbar"]["photons"] * 2.0


def test_a_dump_resumed_with_other_metadata_redoes_its_chunks(generated, tmp_path):
    """Resuming into a dump made with another cross-section must not return the other cross-section's numbers."""
    fileset = agc_fileset(generated)
    first = coffea_dispatch.run(fileset, MetadataWeighted(), executor="iterative", dump=tmp_path / "d", **OPTIONS)
    fileset["ttbar__nominal"]["metadata"]["xsec"] = 8.0
    again = coffea_dispatch.run(fileset, MetadataWeighted(), executor="iterative", dump=tmp_path / "d", **OPTIONS)
    assert again.accumulator == coffea_runner(fileset)
    assert again.accumulator["ttbar"]["weighted"] == 2 * first.accumulator["ttbar"]["weighted"]
    assert again.accumulator["wjets"] == first.accumulator["wjets"]  # unchanged metadata: resumed
    assert main(["check", str(tmp_path / "d")]) == 0  # every chunk once


def write_tree(path, name: str, source: str) -> str:
    """A copy of `source`'s Events under another tree name (a non-NanoAOD ntuple, a friend tree)."""
    with uproot.open(source) as handle:
        arrays = handle["Events"].arrays(["event", "Photon_pt"], library="ak")
    with uproot.recreate(path) as out:
        out[name] = {"event": np.asarray(arrays["event"]), "Photon_pt": arrays["Photon_pt"]}
    return str(path)


def test_tree_names_per_dataset_and_per_file(generated, tmp_path):
    """Trees other than Events were refused ("coffea-dispatch reads NanoAOD's Events")."""
    other = write_tree(tmp_path / "other.root", "Ntuple", generated["Signal"][0])
    fileset = {
        "ttbar__nominal": {**agc_fileset(generated)["ttbar__nominal"], "files": {other: "Ntuple"}},
        "wjets__nominal": agc_fileset(generated)["wjets__nominal"],
    }
    ours = coffea_dispatch.run(fileset, MetadataWeighted(), executor="futures", dump=tmp_path / "d", **OPTIONS)
    per_dataset = {**fileset, "ttbar__nominal": {**fileset["ttbar__nominal"], "files": [other], "treename": "Ntuple"}}
    assert ours.accumulator == coffea_runner(per_dataset)  # coffea 0.7 reads {file: tree} only without a treename
    assert {chunk[3] for chunk in ours.accumulator["ttbar"]["chunks"]} == {"Ntuple"}
    alone = coffea_dispatch.run(per_dataset, MetadataWeighted(), executor="iterative", **OPTIONS)
    assert alone.accumulator == ours.accumulator


def preprocessed(generated: dict[str, list[str]], steps_of=lambda n: [[0, n // 3], [n // 3, n]]) -> dict:
    """coffea's preprocess form: per file its tree, steps, uuid and entry count (as dataset_tools writes it)."""
    fileset = agc_fileset(generated)
    for spec in fileset.values():
        files = spec["files"]
        spec["files"] = {}
        for name in files:
            with uproot.open(name) as handle:
                n, uuid = handle["Events"].num_entries, str(handle.file.uuid)
            spec["files"][name] = {"object_path": "Events", "steps": steps_of(n), "uuid": uuid, "num_entries": n}
        spec.pop("treename", None)
        spec["form"] = None
    return fileset


def test_coffeas_preprocessed_steps_are_the_chunks(generated, tmp_path):
    fileset = preprocessed(generated)
    ours = coffea_dispatch.run(fileset, MetadataWeighted(), executor="futures", dump=tmp_path / "d", **OPTIONS)
    steps = {
        (name, start, stop, "Events")
        for name, spec in fileset["ttbar__nominal"]["files"].items()
        for start, stop in spec["steps"]
    }
    assert ours.accumulator["ttbar"]["chunks"] == steps
    plain = coffea_runner(agc_fileset(generated))
    assert ours.accumulator["ttbar"]["events"] == plain["ttbar"]["events"] == 50_000
    assert ours.accumulator["wjets"]["event_sum"] == plain["wjets"]["event_sum"]
    again = coffea_dispatch.run(fileset, MetadataWeighted(), executor="iterative", dump=tmp_path / "d", **OPTIONS)
    assert again.accumulator == ours.accumulator  # resumed: the steps are this dump's chunking
    assert main(["check", str(tmp_path / "d")]) == 0


def test_a_file_replaced_since_preprocessing_is_refused(generated):
    fileset = preprocessed(generated)
    name = generated["Signal"][0]
    fileset["ttbar__nominal"]["files"][name]["uuid"] = "00000000-0000-0000-0000-000000000000"
    with pytest.raises(DispatchError) as error:
        coffea_dispatch.run(fileset, MetadataWeighted(), executor="iterative", **OPTIONS)
    assert name in error.value.message and "preprocess" in error.value.message and "\n" not in error.value.message
    fileset = preprocessed(generated)
    fileset["ttbar__nominal"]["files"][name]["num_entries"] = 50_001
    with pytest.raises(DispatchError, match="not the 50001 of the fileset.s preprocessing"):
        coffea_dispatch.run(fileset, MetadataWeighted(), executor="iterative", **OPTIONS)


def test_a_sample_json_in_coffeas_forms_runs_from_the_command_line(generated, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    folder = tmp_path / "config"
    analysis = write_analysis(folder, {}, workflow="agc_like:MetadataWeighted")
    (folder / "samples.json").write_text(json.dumps(preprocessed(generated)))
    argv = ["run", "--json-analysis", str(analysis), "--dump", str(tmp_path / "d"), "--executor", "iterative"]
    argv += ["--schema", "base", "--chunk", str(CHUNK), "--no-progress", "--no-plot", "--save", str(tmp_path / "a")]
    assert main(argv) == 0
    assert main(["check", str(tmp_path / "d")]) == 0


@pytest.mark.parametrize(
    ("fileset", "words"),
    [
        ({"ds": {"files": ["f.root"], "metadata": {"dataset": "x"}}}, "'dataset' is a name coffea sets"),
        ({"ds": {"files": ["f.root"], "metadata": ["xsec"]}}, "fileset['ds']['metadata']: expected a dict"),
        ({"ds": {"files": ["f.root"], "metdata": {}}}, "fileset['ds']: unknown key 'metdata'"),
        ({"ds": {"files": {"f.root": 3}}}, "fileset['ds']['files']['f.root']: expected a tree name"),
        ({"ds": {"files": {"f.root": {"object_path": "Events", "steps": [[5, 2]]}}}}, "['steps']: expected"),
        ({"ds": {"files": {"f.root": {"object_path": "E", "steps": [[0, 9]], "num_entries": 5}}}}, "reach entry 9"),
        ({"ds": {"files": ["f.root"], "treename": ""}}, "fileset['ds']['treename']: expected a tree name"),
    ],
)
def test_filesets_coffea_would_refuse_are_refused_in_one_line(fileset, words):
    with pytest.raises(DispatchError) as error:
        coffea_dispatch.run(fileset, MetadataWeighted())
    assert words in error.value.message and "\n" not in error.value.message


def test_the_reserved_metadata_names_are_coffeas():
    from coffea.processor.executor import _PROTECTED_NAMES

    assert set(_PROTECTED_NAMES) <= RESERVED_METADATA <= set(_PROTECTED_NAMES) | {"preload"}


def test_a_job_array_carries_metadata_trees_and_steps_to_its_jobs(generated, on_slurm, monkeypatch):
    """Each job's own sample JSON keeps its dataset's metadata and its files' steps: summed over the jobs, coffea's
    numbers for the fileset."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
    folder = on_slurm / "config"
    analysis = write_analysis(folder, {}, workflow="agc_like:MetadataWeighted")
    fileset = preprocessed(generated)
    (folder / "samples.json").write_text(json.dumps(fileset))
    argv = ["run", "--json-analysis", str(analysis), "--dump", str(on_slurm / "d"), "--executor", "vanilla_slurm"]
    argv += ["--queue", "debug", "--memory", "2GB", "--walltime", "00:10:00", "--wait", "--poll-seconds", "0.5"]
    argv += ["--schema", "base", "--chunk", str(CHUNK), "--no-progress", "--no-plot", "--save", str(on_slurm / "a")]
    assert main(argv) == 0
    here = coffea_dispatch.run(fileset, MetadataWeighted(), executor="iterative", **OPTIONS)
    assert load(str(on_slurm / "a")) == here.accumulator
    assert main(["check", str(on_slurm / "d")]) == 0


@pytest.mark.parametrize("form", ["higgsdna", "coffea"])
def test_what_is_left_keeps_its_datasets_metadata(generated, tmp_path, form):
    """`check --unprocessed` of a run with metadata: run into the same dump, it completes the run with the same
    metadata (the left file had none: the processor's events.metadata["xsec"] raised KeyError)."""
    fileset = agc_fileset(generated)
    dump = tmp_path / "d"
    coffea_dispatch.run(fileset, MetadataWeighted(), executor="iterative", dump=dump, max=1, **OPTIONS)
    assert main(["check", str(dump), "--unprocessed", str(tmp_path / "left.json"), "--format", form]) == 0
    left = json.loads((tmp_path / "left.json").read_text())
    assert left["ttbar__nominal"]["metadata"] == fileset["ttbar__nominal"]["metadata"]
    rest = coffea_dispatch.run(left, MetadataWeighted(), executor="iterative", dump=dump, **OPTIONS)
    assert rest.completeness.complete
    whole = coffea_runner(fileset)
    assert main(["check", str(dump), "--strict"]) == 0
    again = coffea_dispatch.run(fileset, MetadataWeighted(), executor="iterative", dump=dump, **OPTIONS)
    assert again.accumulator == whole  # every chunk resumed: the dump holds the whole fileset, once


def test_dask_casa_reads_what_the_fileset_says_of_each_file_through_its_cache(tmp_path):
    """dask/casa renames root:// inputs to its XCache: their entry ranges, trees and steps went with the old name
    (a file read in part was read whole)."""
    from coffea_dispatch.options import RunOptions
    from coffea_dispatch.pipeline.prepare import prepare

    remote = "root://cmsxrootd.fnal.gov:1094//store/mc/Run3/GluGlu/file.root"
    steps = {"object_path": "Ntuple", "steps": [[0, 10]], "num_entries": 10}
    folder = tmp_path / "config"
    analysis_path = write_analysis(folder, {}, workflow="agc_like:MetadataWeighted")
    (folder / "samples.json").write_text(
        json.dumps({"S": {"files": {remote: steps}}, "T": [{"file": remote + "2", "entries": [[5, 9]]}]})
    )
    analysis, _, _, _ = prepare(RunOptions(json_analysis=str(analysis_path), executor="dask/casa"))
    cached = "root://xcache//store/mc/Run3/GluGlu/file.root"
    assert analysis.samples["S"] == [cached]
    assert analysis.trees == {cached: "Ntuple"} and analysis.steps == {cached: [(0, 10)]}
    assert analysis.entry_ranges == {cached + "2": [(5, 9)]}


def test_one_file_in_two_datasets_carries_each_ones_metadata(generated, tmp_path):
    """A variation listed as another dataset over the same files (the AGC's nominal and scaled samples): each
    dataset's chunks carry its own metadata (both had the last dataset's: twice its events, wrong weights)."""
    signal = generated["Signal"]
    meta = agc_fileset(generated)["ttbar__nominal"]["metadata"]
    fileset = {
        "ttbar__nominal": {"files": signal, "metadata": meta},
        "ttbar__scaleup": {"files": signal, "metadata": {**meta, "process": "ttbar_up", "xsec": 8.0}},
    }
    ours = coffea_dispatch.run(fileset, MetadataWeighted(), executor="futures", dump=tmp_path / "d", **OPTIONS)
    assert ours.accumulator == coffea_runner(fileset)
    assert ours.accumulator["ttbar_up"]["weighted"] == 2 * ours.accumulator["ttbar"]["weighted"]


def test_an_empty_file_as_coffeas_preprocess_writes_it(generated, tmp_path):
    """preprocess gives a file of no entries the one step [0, 0]: it was refused as an invalid range."""
    empty = tmp_path / "empty.root"
    with uproot.recreate(empty) as out:
        out.mktree("Events", {"event": np.int64, "Photon_pt": "var * float32"})
    with uproot.open(empty) as handle:
        uuid = str(handle.file.uuid)
    fileset = preprocessed(generated)
    files = fileset["ttbar__nominal"]["files"]
    files[str(empty)] = {"object_path": "Events", "steps": [[0, 0]], "uuid": uuid, "num_entries": 0}
    ours = coffea_dispatch.run(fileset, MetadataWeighted(), executor="iterative", **OPTIONS)
    plain = agc_fileset(generated)
    plain["ttbar__nominal"]["files"][str(empty)] = "Events"
    reference = coffea_runner(plain)
    for output in (ours.accumulator, reference):  # the steps are not coffea's chunks: the numbers must agree
        for dataset in output.values():
            dataset.pop("chunks")
    assert ours.accumulator == reference


def test_numpy_metadata_is_kept_for_what_is_left(generated, tmp_path):
    """`nevts=np.int64(...)` (a count computed with numpy) was left out of completeness.json: the run of what
    was left raised KeyError: 'nevts'."""
    fileset = agc_fileset(generated)
    fileset["ttbar__nominal"]["metadata"]["nevts"] = np.int64(50_000)
    first = coffea_dispatch.run(
        fileset, MetadataWeighted(), executor="iterative", dump=tmp_path / "d", max=1, **OPTIONS
    )
    left = first.completeness.unprocessed()
    assert left["ttbar__nominal"]["metadata"]["nevts"] == 50_000
    coffea_dispatch.run(left, MetadataWeighted(), executor="iterative", dump=tmp_path / "d", **OPTIONS)
    assert main(["check", str(tmp_path / "d"), "--strict"]) == 0


def test_what_is_left_has_the_latest_runs_metadata(generated, tmp_path):
    """A dataset run again without its metadata: what is left must not bring back the earlier run's."""
    dump = tmp_path / "d"
    coffea_dispatch.run(agc_fileset(generated), CountingOnly(), executor="iterative", dump=dump, max=1, **OPTIONS)
    bare = {"ttbar__nominal": generated["Signal"]}
    second = coffea_dispatch.run(bare, CountingOnly(), executor="iterative", dump=dump, max=1, **OPTIONS)
    assert second.completeness.unprocessed()["ttbar__nominal"] == [
        {"file": generated["Signal"][0], "entries": [[16667, 50000]]}
    ]


def test_a_job_array_run_again_with_other_metadata_is_a_new_submission(generated, on_slurm, monkeypatch):
    """The same command with another xsec continued the earlier submission (same files, same options): its jobs'
    sample JSONs carried the old xsec, and the old numbers came back."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
    folder = on_slurm / "config"
    analysis = write_analysis(folder, {}, workflow="agc_like:MetadataWeighted")
    argv = ["run", "--json-analysis", str(analysis), "--dump", str(on_slurm / "d"), "--executor", "vanilla_slurm"]
    argv += ["--queue", "debug", "--memory", "2GB", "--walltime", "00:10:00", "--wait", "--poll-seconds", "0.5"]
    argv += ["--schema", "base", "--chunk", str(CHUNK), "--no-progress", "--no-plot", "--only", "ttbar__nominal"]
    weighted = []
    for xsec in (4.0, 8.0):
        fileset = agc_fileset(generated)
        fileset["ttbar__nominal"]["metadata"]["xsec"] = xsec
        (folder / "samples.json").write_text(json.dumps(fileset))
        assert main([*argv, "--save", str(on_slurm / f"a{xsec}")]) == 0
        weighted.append(load(str(on_slurm / f"a{xsec}"))["ttbar"]["weighted"])
    assert weighted[1] == 2 * weighted[0]
    assert len(list((on_slurm / ".higgs_dna_vanilla_slurm").iterdir())) == 2


@pytest.mark.parametrize("executor", ["iterative", "futures"])
def test_a_part_run_with_other_metadata_leaves_no_mixture(generated, tmp_path, executor):
    """A whole run with xsec 4, then `max=1` with xsec 8 into the same dump: the other chunks were made with xsec
    4 and `check --strict` called the mixture complete; they are cleared and are what is left now."""
    dump = tmp_path / "d"
    fileset = agc_fileset(generated)
    coffea_dispatch.run(fileset, MetadataWeighted(), executor=executor, dump=dump, **OPTIONS)
    fileset["ttbar__nominal"]["metadata"]["xsec"] = 8.0
    part = coffea_dispatch.run(fileset, MetadataWeighted(), executor=executor, dump=dump, max=1, **OPTIONS)
    assert any("changed since the earlier run" in note for note in part.notes)
    assert main(["check", str(dump), "--strict"]) == 1
    rest = coffea_dispatch.run(
        part.completeness.unprocessed(), MetadataWeighted(), executor=executor, dump=dump, **OPTIONS
    )
    assert rest.completeness.complete and main(["check", str(dump), "--strict"]) == 0
    again = coffea_dispatch.run(fileset, MetadataWeighted(), executor="iterative", dump=dump, **OPTIONS)
    assert again.accumulator == coffea_runner(fileset)


@pytest.mark.parametrize("form", ["higgsdna", "coffea"])
def test_what_is_left_keeps_each_files_tree(generated, tmp_path, form):
    """A dataset read from another tree: what was left named no tree, and its run was refused (no 'Events')."""
    other = write_tree(tmp_path / "other.root", "Ntuple", generated["Signal"][0])
    whole = write_tree(tmp_path / "whole.root", "Ntuple", generated["Signal"][0])
    fileset = {
        "ttbar__nominal": {**agc_fileset(generated)["ttbar__nominal"], "files": {other: "Ntuple", whole: "Ntuple"}}
    }
    dump = tmp_path / "d"
    coffea_dispatch.run(fileset, MetadataWeighted(), executor="iterative", dump=dump, max=1, **OPTIONS)
    assert main(["check", str(dump), "--unprocessed", str(tmp_path / "left.json"), "--format", form]) == 0
    left = json.loads((tmp_path / "left.json").read_text())
    rest = coffea_dispatch.run(left, MetadataWeighted(), executor="iterative", dump=dump, **OPTIONS)
    assert rest.completeness.complete and main(["check", str(dump), "--strict"]) == 0
    again = coffea_dispatch.run(fileset, MetadataWeighted(), executor="iterative", dump=dump, **OPTIONS)
    per_dataset = {"ttbar__nominal": {**fileset["ttbar__nominal"], "files": [other, whole], "treename": "Ntuple"}}
    assert again.accumulator == coffea_runner(per_dataset)


def test_the_reproducer_of_a_chunk_reads_it_as_the_run_did(generated, tmp_path):
    """The single-file analysis written for a chunk that killed its workers named the file alone: no metadata,
    tree, entries or steps, so its command did not rerun that chunk."""
    from coffea.processor.executor import WorkItem

    from coffea_dispatch.api import samples_of
    from coffea_dispatch.inputs.analysis import Analysis, load_samples
    from coffea_dispatch.pipeline.diagnose import write_reproducer

    fileset = preprocessed(generated)
    fileset["ttbar__nominal"]["metadata"]["nevts"] = np.int64(50_000)
    analysis = Analysis.of_fileset(
        tmp_path / "an.json", tmp_path / "s.json", samples_of(fileset), "agc_like:MetadataWeighted"
    )
    name = generated["Signal"][0]
    path, _ = write_reproducer(analysis, WorkItem("ttbar__nominal", name, "Events", 0, 10, b""), CHUNK, None, tmp_path)
    again = load_samples(path.parent / "samples.json")
    assert again.metadata["ttbar__nominal"]["nevts"] == 50_000
    assert again.steps[name] == [tuple(s) for s in fileset["ttbar__nominal"]["files"][name]["steps"]]
