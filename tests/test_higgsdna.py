"""HiggsDNA users run HiggsDNA's own workflows unchanged: its registries, its keyword arguments, its output
names, and the guarantees of our own outputs (atomic, recorded, resumable, checked).

`tests/higgsdna_like` stands in for HiggsDNA (its public interface only). Its `base` processor assigns
attributes on events and names outputs by the partition key, like HiggsDNA's, on coffea 0.7 (the `make test`
pass in .venv-coffea07); on coffea 2025+ it assigns items and takes the key from the metadata instead.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coffea_dispatch.cli import main
from coffea_dispatch.dump.check import check_dump
from coffea_dispatch.dump.ledger import LEDGER
from coffea_dispatch.higgsdna.registries import PROCESSOR_KEYWORDS
from conftest import HIGGSDNA_LIKE, forget_higgsdna, write_analysis
from helpers import NANO, higgsdna_analysis, outputs

CHUNK = 10_000  # 12 chunks over the 120k generated events
TOTAL_CHUNKS = 12


def one_line(text: str) -> str:
    """Printed text with rich's line wrapping undone (long notes and paths wrap in the terminal width)."""
    return " ".join(text.split())


def run_cli(analysis: Path, dump: Path | None, *options: str) -> int:
    dump_option = ["--dump", str(dump)] if dump else []
    return main(["run", "--json-analysis", str(analysis), *dump_option, "--no-progress", "--no-plot", *options])


def test_higgsdna_workflow_gets_exactly_its_keyword_arguments(higgsdna, generated, tmp_path):
    analysis = higgsdna_analysis(
        tmp_path, {"Signal": generated["Signal"]}, workflow="kwargs_recorder", bTagEffFileName="btag_eff.json.gz"
    )
    options = ["--triggerGroup", ".*EGamma.*", "--Smear_sigma_m", "--doFlow_corrections", "--output_format", "root"]
    assert run_cli(analysis, tmp_path / "out", "--executor", "iterative", "--nano_version", "12", *options) == 0
    from higgs_dna.workflows.base import KeywordRecorder
    from higgs_dna.workflows.taggers import DummyTagger1, DummyTagger2

    built = KeywordRecorder.built_with
    assert tuple(sorted(built)) == tuple(sorted(PROCESSOR_KEYWORDS))
    assert built["metaconditions"] == {"photon_pt_min": 20.0, "mvaid_min": -0.9, "lead_pt_min": 30.0}
    assert [type(t) for t in built["taggers"]] == [DummyTagger2, DummyTagger1]  # instances, in the JSON's order
    assert built["bTagEffFileName"] == "btag_eff.json.gz"
    assert built["trigger_group"] == ".*EGamma.*"
    assert built["nano_version"] == 12
    assert built["Smear_sigma_m"] is True and built["doFlow_corrections"] is True
    assert built["output_format"] == "root"
    assert built["output_location"] == str(tmp_path / "out")
    assert built["apply_trigger"] is True and built["year"] == {"Signal": ["2022preEE"]}


def test_missing_nano_version_is_one_line(higgsdna, generated, tmp_path, capsys):
    analysis = higgsdna_analysis(tmp_path, {"Signal": generated["Signal"]})
    assert run_cli(analysis, None, "--executor", "iterative") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "needs --nano-version" in err


def test_unknown_tagger_and_renamed_workflow_are_one_line(higgsdna, generated, tmp_path, capsys):
    analysis = write_analysis(
        tmp_path, {"Signal": generated["Signal"]}, metaconditions="Era2022_v1", taggers=["NoSuchTagger"]
    )
    assert run_cli(analysis, None, "--executor", "iterative", *NANO) == 2
    err = capsys.readouterr().err.strip()
    assert "tagger 'NoSuchTagger' is not in higgs_dna.workflows.taggers (known: DummyTagger1, DummyTagger2)" in err
    renamed = write_analysis(tmp_path / "renamed", {"Signal": generated["Signal"]}, workflow="dystudies")
    assert run_cli(renamed, None, *NANO) == 2
    assert "has been renamed to base" in capsys.readouterr().err


def test_unknown_higgsdna_metaconditions_without_higgsdna_says_why(generated, tmp_path, capsys):
    analysis = write_analysis(tmp_path, {"Signal": generated["Signal"]}, metaconditions="Era2022_v1")
    assert run_cli(analysis, None) == 2
    err = capsys.readouterr().err
    assert "unknown metaconditions 'Era2022_v1'" in err and "need HiggsDNA installed" in err


def test_base_is_ours_without_higgsdna_and_the_summary_names_the_class(generated, tmp_path, capsys):
    analysis = write_analysis(tmp_path, {"Signal": generated["Signal"]})
    assert run_cli(analysis, None, "--executor", "iterative") == 0
    out = one_line(capsys.readouterr().out)
    assert "workflow 'base' runs coffea_dispatch.higgsdna.diphoton:DiphotonProcessor" in out


def test_with_higgsdna_base_is_higgsdnas_and_diphoton_is_ours(higgsdna, generated, tmp_path, capsys):
    from coffea_dispatch.higgsdna.workflows import resolve_workflow

    assert resolve_workflow("base").class_path == "higgs_dna.workflows.base:HggBaseProcessor"
    assert resolve_workflow("base").from_higgsdna
    assert resolve_workflow("diphoton").class_path == "coffea_dispatch.higgsdna.diphoton:DiphotonProcessor"
    assert resolve_workflow("coffea_dispatch.diphoton").class_path.endswith("DiphotonProcessor")


def test_samples_without_year_are_left_out_as_in_higgsdna(higgsdna, generated, tmp_path, capsys):
    analysis = write_analysis(
        tmp_path, generated, workflow="kwargs_recorder", metaconditions="Era2022_v1", year={"Signal": ["2022"]}
    )
    assert run_cli(analysis, None, "--executor", "iterative", *NANO) == 0
    out = one_line(capsys.readouterr().out)
    assert "sample(s) Background have no 'year' entry and are not processed" in out
    assert "│ Signal │" in out and "│ Background │" not in out


def test_relative_samplejson_is_read_from_the_current_folder_first(generated, tmp_path, monkeypatch, capsys):
    analysis = write_analysis(tmp_path / "analysis", {"Beside": generated["Signal"]})
    here = tmp_path / "here"
    here.mkdir()
    (here / "samples.json").write_text(json.dumps({"FromHere": generated["Background"][:1]}))
    monkeypatch.chdir(here)
    assert run_cli(analysis, None, "--executor", "iterative") == 0
    out = one_line(capsys.readouterr().out)
    assert "│ FromHere │" in out and "│ Beside │" not in out
    assert f"samplejson 'samples.json': read {here / 'samples.json'} (the current folder, as HiggsDNA does)" in out


def runner_outputs(samples: dict, dump: Path) -> dict[str, dict]:
    """What coffea's own Runner writes with the same HiggsDNA processor (built as HiggsDNA builds it)."""
    import higgs_dna.metaconditions as registered
    from coffea import processor
    from coffea.nanoevents import NanoAODSchema
    from higgs_dna.workflows import taggers, workflows

    meta_file = Path(registered.__file__).parent / registered.metaconditions["Era2022_v1"]
    instance = workflows["base"](
        metaconditions=json.loads(meta_file.read_text()),
        nano_version=12,
        apply_trigger=True,
        trigger_group=".*Diphoton30.*",
        output_location=str(dump),
        taggers=[taggers["DummyTagger2"](), taggers["DummyTagger1"]()],
        year={name: ["2022preEE"] for name in samples},
    )
    runner = processor.Runner(executor=processor.IterativeExecutor(), schema=NanoAODSchema, chunksize=CHUNK)
    accumulator = runner(samples, treename="Events", processor_instance=instance)
    return outputs(dump), accumulator


@pytest.fixture(scope="module")
def coffea_runner(generated, tmp_path_factory) -> tuple[dict, dict]:
    """coffea's Runner on the stand-in's base workflow: (its files as read by `outputs`, its accumulator)."""
    sys.path.insert(0, str(HIGGSDNA_LIKE))
    try:
        return runner_outputs(generated, tmp_path_factory.mktemp("runner") / "out")
    finally:
        sys.path.pop(0)
        forget_higgsdna()


@pytest.fixture(scope="module")
def coffea_runner_outputs(coffea_runner) -> dict[str, dict]:
    return coffea_runner[0]


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["iterative", "futures", "dask/local"])
def test_higgsdna_outputs_equal_coffea_runner_file_by_file(higgsdna, generated, coffea_runner, tmp_path, executor):
    from coffea.util import load

    coffea_runner_outputs, runner_accumulator = coffea_runner
    analysis = higgsdna_analysis(tmp_path, generated)
    dump = tmp_path / "out"
    extra = ["--scaleout", "2", "-j", "1"] if executor == "dask/local" else ["-j", "2"]
    extra += ["--save", str(tmp_path / "accumulator.coffea")]
    assert run_cli(analysis, dump, "--executor", executor, "--chunk", str(CHUNK), *NANO, *extra) == 0
    # every chunk's events.metadata (dataset, file, tree, entry range, file UUID) as under coffea's Runner
    assert len(runner_accumulator["Signal"]["metadata"]) == 5  # one per chunk
    assert load(tmp_path / "accumulator.coffea") == runner_accumulator
    ours = outputs(dump)
    assert len(ours) == TOTAL_CHUNKS
    assert sum(len(t["mass"]) for t in ours.values()) > 1000  # the trigger and cuts keep real rows
    assert sorted(ours) == sorted(coffea_runner_outputs)  # the same names: HiggsDNA's partition keys
    for name, table in ours.items():
        assert table == coffea_runner_outputs[name], name
    assert all(c.ok and c.complete == c.planned for c in check_dump(dump).values())
    assert not list((dump / LEDGER / "staging").rglob("*.parquet"))  # nothing left behind


def resumed_chunks(capsys) -> int:
    out = capsys.readouterr().out
    marker = "resumed: "
    return int(out.split(marker)[1].split()[0]) if marker in out else 0


@pytest.mark.slow
def test_deleted_and_corrupted_outputs_are_redone_exactly(higgsdna, generated, coffea_runner_outputs, tmp_path, capsys):
    analysis = higgsdna_analysis(tmp_path, generated)
    dump = tmp_path / "out"
    command = ["--executor", "iterative", "--chunk", str(CHUNK), *NANO]
    assert run_cli(analysis, dump, *command) == 0
    capsys.readouterr()
    deleted, corrupted = sorted(dump.rglob("*.parquet"))[2:4]
    deleted.unlink()
    corrupted.write_bytes(corrupted.read_bytes()[:100])  # damaged in place
    assert main(["check", str(dump)]) == 1
    check_out = one_line(capsys.readouterr().out)
    assert "output deleted" in check_out and "unreadable (Background)" in check_out, check_out
    assert run_cli(analysis, dump, *command) == 0
    assert resumed_chunks(capsys) == TOTAL_CHUNKS - 2  # exactly the two affected chunks were redone
    assert outputs(dump) == coffea_runner_outputs
    assert main(["check", str(dump)]) == 0


@pytest.mark.slow
def test_killed_mid_run_leaves_no_partial_file_and_the_rerun_completes(
    higgsdna, generated, coffea_runner_outputs, tmp_path, capsys
):
    analysis = higgsdna_analysis(tmp_path, generated)
    dump = tmp_path / "out"
    command = [sys.executable, "-m", "coffea_dispatch.cli", "run", "--json-analysis", str(analysis)]
    command += ["--dump", str(dump), "--executor", "futures", "-j", "2", "--chunk", str(CHUNK), *NANO]
    process = subprocess.Popen(
        [*command, "--no-progress", "--no-plot"],
        env={**os.environ, "HIGGSDNA_LIKE_SECONDS_PER_CHUNK": "0.4"},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while len(list((dump / LEDGER).glob("chunks/*/*.done"))) < 3:
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    done = len(list((dump / LEDGER).glob("chunks/*/*.done")))
    finals = outputs(dump)  # every file under a final name reads completely
    assert 3 <= len(finals) < TOTAL_CHUNKS and all(finals[n] == coffea_runner_outputs[n] for n in finals)
    assert run_cli(analysis, dump, "--executor", "futures", "-j", "2", "--chunk", str(CHUNK), *NANO) == 0
    assert resumed_chunks(capsys) == done
    assert outputs(dump) == coffea_runner_outputs
    assert main(["check", str(dump)]) == 0


@pytest.mark.parametrize(
    ("executor", "expected"),
    [
        ("dask/lpc", "dask/lpc needs lpcjobqueue"),
        ("dask/casa", "scheduler tls://localhost:8786: cannot connect"),
    ],
)
def test_higgsdna_executor_names_answer_in_one_line(generated, tmp_path, capsys, executor, expected):
    analysis = write_analysis(tmp_path, {"Signal": generated["Signal"]})
    assert run_cli(analysis, None, "--executor", executor) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err


ON_SLURM = {
    "vanilla_slurm": ["--executor", "vanilla_slurm", "--wait", "--poll-seconds", "1"],
    "parsl/slurm": ["--executor", "parsl/slurm", "--scaleout", "1", "-j", "2", "--walltime", "00:20:00"],
}


@pytest.mark.slow
@pytest.mark.parametrize("executor", sorted(ON_SLURM))
def test_higgsdna_on_real_slurm_equals_coffea_runner(
    higgsdna, slurm, generated, coffea_runner_outputs, tmp_path, monkeypatch, executor
):
    """Batch jobs (vanilla_slurm --wait) and parsl's SLURM worker jobs run HiggsDNA's workflow (found through
    the exported PYTHONPATH): the dump holds exactly coffea's Runner files, checked clean."""
    for key, value in slurm.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    analysis = higgsdna_analysis(tmp_path, generated)
    dump = tmp_path / "out"
    command = [*ON_SLURM[executor], "--queue", "debug", "--log-directory", str(tmp_path / "logs")]
    assert run_cli(analysis, dump, *command, "--memory", "2GB", "--chunk", str(CHUNK), *NANO) == 0
    ours = {name: table for name, table in outputs(dump).items() if not name.startswith("merged/")}
    assert ours == coffea_runner_outputs
    assert all(c.ok and c.complete == c.planned for c in check_dump(dump).values())


def test_copies_of_one_file_in_a_sample_are_refused_before_any_output(higgsdna, generated, tmp_path, capsys):
    """HiggsDNA names outputs by file UUID: two copies of one file would share their output files (and count
    their events twice). Before any chunk runs, one line names both."""
    import shutil

    copy = tmp_path / "copy_of_signal.root"
    shutil.copyfile(generated["Signal"][0], copy)
    analysis = higgsdna_analysis(tmp_path, {"Signal": [generated["Signal"][0], str(copy)]})
    dump = tmp_path / "out"
    assert run_cli(analysis, dump, "--executor", "iterative", "--chunk", str(CHUNK), *NANO) == 2
    err = one_line(capsys.readouterr().err)
    assert "copies of one file (ROOT UUID" in err and str(copy) in err
    assert not list(dump.rglob("*.parquet"))


def test_dask_casa_reads_remote_inputs_through_the_casa_cache(generated, tmp_path):
    """As HiggsDNA's dask/casa: root://<any host>//path becomes root://xcache//path; local paths stay."""
    from coffea_dispatch.options import RunOptions
    from coffea_dispatch.pipeline.prepare import prepare

    remote = "root://cmsxrootd.fnal.gov:1094//store/mc/Run3/GluGlu/file.root"
    analysis_path = write_analysis(tmp_path, {"Signal": [remote, generated["Signal"][0]]})
    analysis, _, _, notes = prepare(RunOptions(json_analysis=str(analysis_path), executor="dask/casa"))
    assert analysis.samples["Signal"] == ["root://xcache//store/mc/Run3/GluGlu/file.root", generated["Signal"][0]]
    assert any("coffea-casa's cache" in note for note in notes)
