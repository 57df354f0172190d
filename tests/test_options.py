"""HiggsDNA's options do what HiggsDNA's do; user processors plug in by import path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from coffea.util import load

from coffea_dispatch.cli import main
from coffea_dispatch.pipeline.run import RunOptions, run_analysis, validate_inputs
from conftest import REPO, TESTS, read_rows, write_analysis


def options(analysis: Path, **extra) -> RunOptions:
    return RunOptions(json_analysis=str(analysis), progress=False, plot=False, **extra)


def test_only_selects_a_sample_a_glob_or_a_file(generated, tmp_path):
    analysis = write_analysis(tmp_path, generated)
    assert set(run_analysis(options(analysis, only="Signal", executor="iterative")).samples) == {"Signal"}
    assert set(run_analysis(options(analysis, only="Back*", executor="iterative")).samples) == {"Background"}
    one_file = generated["Background"][1]
    result = run_analysis(options(analysis, only=os.path.basename(one_file), executor="iterative"))
    assert set(result.samples) == {"Background"} and result.samples["Background"].files == 1
    assert result.samples["Background"].events == 30_000


def test_limit_takes_the_first_files_of_each_sample(generated, tmp_path):
    result = run_analysis(options(write_analysis(tmp_path, generated), limit=1, executor="iterative"))
    assert result.samples["Background"].files == 1
    assert result.samples["Background"].events == 40_000


def test_max_caps_chunks_per_sample_like_coffea_runner(generated, tmp_path):
    dump = tmp_path / "out"
    result = run_analysis(
        options(write_analysis(tmp_path, generated), dump=str(dump), chunk=10_000, max=3, executor="futures", workers=2)
    )
    for sample in generated:
        assert result.samples[sample].chunks == 3
        assert result.samples[sample].events == 30_000
        assert len(list((dump / sample / "nominal").glob("*.parquet"))) == 3


def test_chunk_splits_like_coffea(generated, tmp_path):
    dump = tmp_path / "out"
    run_analysis(
        options(
            write_analysis(tmp_path, {"Signal": generated["Signal"]}),
            dump=str(dump),
            chunk=20_000,
            executor="iterative",
        )
    )
    names = sorted(p.name.rsplit("_", 1)[1] for p in (dump / "Signal" / "nominal").glob("*.parquet"))
    # coffea: n = round(50000 / 20000) = 2 chunks of ceil(50000 / 2) events
    assert names == ["0-25000.parquet", "25000-50000.parquet"]


def test_validate_reports_bad_files_without_processing(generated, tmp_path, shared_nanoaod):
    broken = tmp_path / "broken.root"
    broken.write_bytes(b"not root at all" * 100)
    samples = {"Signal": generated["Signal"], "Bad": [str(broken), str(shared_nanoaod / "nano_tt_v12.root")]}
    analysis = write_analysis(tmp_path, samples)
    result = validate_inputs(options(analysis, dump=str(tmp_path / "out")))
    assert result.plan.events("Signal") == 50_000
    assert set(result.bad_files["Bad"]) == {str(broken), str(shared_nanoaod / "nano_tt_v12.root")}
    assert not (tmp_path / "out").exists()


def test_validate_exit_codes(generated, tmp_path, capsys):
    good = write_analysis(tmp_path / "good", {"Signal": generated["Signal"]})
    assert main(["run", "--json-analysis", str(good), "--validate"]) == 0
    bad = write_analysis(tmp_path / "bad", {"Signal": generated["Signal"] + [str(tmp_path / "missing.root")]})
    assert main(["run", "--json-analysis", str(bad), "--validate"]) == 2
    assert "missing.root: file does not exist" in capsys.readouterr().out.replace("\n", "")


@pytest.mark.parametrize("flag", ["--save", "-o"])
def test_accumulator_saved_with_coffea_save(generated, tmp_path, flag):
    target = tmp_path / "result.coffea"
    analysis = write_analysis(tmp_path, {"Signal": generated["Signal"]})
    assert (
        main(["run", "--json-analysis", str(analysis), flag, str(target), "--executor", "iterative", "--no-progress"])
        == 0
    )
    saved = load(str(target))
    assert saved["Signal"]["events"] == 50_000
    assert saved["Signal"]["candidates"] > 0 and saved["Signal"]["mass"].sum().value > 0
    assert (tmp_path / "diphoton_mass.png").exists()  # no --dump: the plot goes next to the accumulator


@pytest.mark.slow
def test_plot_written_next_to_dump(generated, tmp_path):
    dump = tmp_path / "out"
    result = run_analysis(
        RunOptions(
            json_analysis=str(write_analysis(tmp_path, {"Signal": generated["Signal"]})),
            dump=str(dump),
            executor="iterative",
            progress=False,
        )
    )
    assert result.plot == dump / "diphoton_mass.png"
    assert result.plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image
    import mplhep

    width, height = mplhep.style.CMS["figure.figsize"]
    assert matplotlib.image.imread(result.plot).shape[:2] == (height * 100, width * 100)  # CMS style, 100 dpi


def test_the_plot_is_labelled_with_the_year_only_when_every_sample_has_the_same():
    from coffea_dispatch.higgsdna.plot import _common_year

    assert _common_year({"A": "2022preEE", "B": "2022preEE", "C": "2018"}, ["A", "B"]) == "2022preEE"
    assert _common_year({"A": "2022preEE", "C": "2018"}, ["A", "C"]) is None
    assert _common_year("2017", ["A"]) == "2017" and _common_year(None, ["A"]) is None


def test_the_plot_label_is_the_era_not_a_python_list():
    """HiggsDNA's analysis JSON gives a list of eras per sample: the label read ['2022postEE']."""
    from coffea_dispatch.higgsdna.plot import _common_year

    assert _common_year({"A": ["2022postEE"], "B": ["2022postEE"]}, ["A", "B"]) == "2022postEE"
    assert _common_year({"A": ["2022preEE", "2022postEE"]}, ["A"]) == "2022preEE, 2022postEE"
    assert _common_year({"A": ["2022postEE"], "B": ["2018"]}, ["A", "B"]) is None


def test_physics_switches_accepted_and_reported_unused(generated, tmp_path, capsys):
    analysis = write_analysis(tmp_path, {"Signal": generated["Signal"]})
    code = main(
        [
            "run",
            "--json-analysis",
            str(analysis),
            "--executor",
            "iterative",
            "--no-progress",
            "--skipCQR",
            "--doDeco",
            "--no-trigger",
            "--fiducialCuts",
            "geometric",
            "--nano-version",
            "12",
        ]
    )
    assert code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--doDeco, --fiducialCuts, --nano_version, --skipCQR, --use_trigger accepted but not used" in out


def test_user_processor_with_kwargs_gets_every_option(generated, tmp_path):
    analysis = write_analysis(
        tmp_path,
        {"Signal": generated["Signal"]},
        workflow="user_processors:CountPhotons",
        year={"Signal": ["2022preEE"]},
        taggers=["DummyTagger"],
    )
    result = run_analysis(options(analysis, executor="futures", workers=2, chunk=20_000, physics={"skipCQR": True}))
    assert result.accumulator["Signal"]["events"] == 50_000
    assert result.accumulator["Signal"]["photons"] > 50_000
    assert result.samples["Signal"].candidates is None  # not a diphoton workflow: no candidate count


def test_user_processor_gets_only_the_arguments_it_names(generated, tmp_path):
    analysis = write_analysis(
        tmp_path, {"Signal": generated["Signal"]}, workflow="user_processors:StrictSignature", year="2018"
    )
    result = run_analysis(options(analysis, executor="iterative"))
    assert result.accumulator == {"year": {"2018": 50_000}}


@pytest.mark.slow
def test_higgsdna_command_line_runs_unchanged(generated, tmp_path):
    """HiggsDNA's options after `coffea-dispatch run`, a fresh process; no `run_analysis.py` of ours to clash
    with HiggsDNA's own."""
    from importlib.metadata import distribution

    scripts = {e.name for e in distribution("coffea-dispatch").entry_points if e.group == "console_scripts"}
    assert scripts == {"coffea-dispatch"}
    analysis = write_analysis(tmp_path, {"Signal": generated["Signal"]}, metaconditions="default")
    dump = tmp_path / "OUT"
    script = Path(sys.executable).parent / "coffea-dispatch"
    command = [
        str(script),
        "run",
        "--json-analysis",
        str(analysis),
        "--dump",
        str(dump),
        "--skipCQR",
        "--executor",
        "futures",
        "-j",
        "2",
        "--memory",
        "10GB",
        "--chunk",
        "20000",
        "--nano-version",
        "12",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Signal" in done.stdout and "50,000" in done.stdout
    assert len(read_rows(dump, "Signal")["event"]) > 0
    assert (dump / "diphoton_mass.png").exists()


@pytest.mark.slow
def test_coffea_dispatch_run_has_the_same_options(generated, tmp_path):
    analysis = write_analysis(tmp_path, {"Signal": generated["Signal"]})
    script = Path(sys.executable).parent / "coffea-dispatch"
    done = subprocess.run(
        [
            str(script),
            "run",
            "--json-analysis",
            str(analysis),
            "--executor",
            "iterative",
            "--limit",
            "1",
            "--dump",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr


def test_relative_paths_resolve_against_their_json(generated, tmp_path):
    nested = tmp_path / "config" / "samples"
    nested.mkdir(parents=True)
    (nested / "samples.json").write_text(json.dumps({"Signal": [os.path.relpath(generated["Signal"][0], nested)]}))
    (tmp_path / "config" / "cuts.json").write_text(json.dumps({"preselection": {"mass_min": 120.0}}))
    (tmp_path / "config" / "analysis.json").write_text(
        json.dumps({"samplejson": "samples/samples.json", "workflow": "diphoton", "metaconditions": "cuts.json"})
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    previous = os.getcwd()
    os.chdir(elsewhere)
    try:
        result = run_analysis(options(Path("../config/analysis.json"), dump="out", executor="iterative"))
    finally:
        os.chdir(previous)
    assert result.samples["Signal"].events == 50_000
    assert read_rows(elsewhere / "out", "Signal")["mass"].min() > 120.0


def test_repo_layout_sanity():
    assert (TESTS / "reference.py").exists() and (REPO / "pyproject.toml").exists()


@pytest.mark.parametrize("executor", ["iterative", "futures"])
def test_no_progress_means_no_progress_bar(generated, tmp_path, capfd, executor):
    analysis = write_analysis(tmp_path, {"Signal": generated["Signal"]})
    assert (
        main(
            [
                "run",
                "--json-analysis",
                str(analysis),
                "--executor",
                executor,
                "-j",
                "2",
                "--no-progress",
                "--chunk",
                "20000",
                "--no-plot",
            ]
        )
        == 0
    )
    captured = capfd.readouterr()
    assert "Processing" not in captured.out + captured.err
    assert "Merging" not in captured.out + captured.err
    assert "total (wall)" in captured.out


def test_a_futures_run_draws_one_bar_and_no_merging_bar(generated, tmp_path, capfd):
    """coffea's FuturesExecutor left a "Merging (local) 17% 1/6" bar on screen after every run; ours merges
    results as they arrive and draws only the processing bar."""
    analysis = write_analysis(tmp_path, generated)
    argv = ["run", "--json-analysis", str(analysis), "--executor", "futures", "-j", "2", "--chunk", "20000"]
    assert main([*argv, "--no-plot"]) == 0
    captured = capfd.readouterr()
    shown = captured.out + captured.err
    assert "Processing" in shown and "Merging" not in shown
    assert "total (wall)" in captured.out
