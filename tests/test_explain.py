"""Runs that explain themselves (issue 36, item 3): the demo says what it ran and what to try next, a resumed run
tells what it took from the dump from what it processed, and every misspelling (a command-line option, a command,
an executor, an analysis-JSON key, a Python keyword) is one line naming what was meant."""

from __future__ import annotations

import importlib.metadata
import json
import shlex
from pathlib import Path
from types import SimpleNamespace

import hist
import pytest

import coffea_dispatch
from coffea_dispatch.cli import main
from coffea_dispatch.errors import DispatchError
from coffea_dispatch.inputs.analysis import load_analysis
from coffea_dispatch.options import RunOptions
from coffea_dispatch.pipeline.result import RunResult, save_and_plot
from coffea_dispatch.synthetic.generator import SampleSpec, make_sample


def said(capsys) -> tuple[str, str]:
    """stdout and stderr, each with its whitespace (rich's wrapping) made single spaces."""
    captured = capsys.readouterr()
    return " ".join(captured.out.split()), " ".join(captured.err.split())


@pytest.fixture
def demo(tmp_path, monkeypatch, capsys):
    """`coffea-dispatch demo demo` run in a fresh folder (small files, in-process): its output lines."""
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "demo", "--events", "3000", "--executor", "iterative"]) == 0
    return capsys.readouterr().out


def test_the_demo_prints_the_line_that_resumes_it_and_what_to_try_next(demo, capsys):
    ran = [line for line in demo.splitlines() if line.startswith("ran: ")]
    assert len(ran) == 1, demo
    command = shlex.split(ran[0].removeprefix("ran: "))
    assert command[:2] == ["coffea-dispatch", "run"] and "--chunk" in command and "--dump" in command
    text = " ".join(demo.split())
    assert "coffea-dispatch check demo/output" in text
    assert "coffea-dispatch status" in text and "docs/getting-started.md" in text
    assert "the diphoton mass plot: demo/output/diphoton_mass.png" in text
    assert main(command[1:]) == 0  # that exact line resumes: the dump is not refused for its chunking
    out, err = said(capsys)
    assert "resumed: 3 chunk(s)" in out and not err


def write_json(folder: Path, name: str, content: dict) -> Path:
    path = folder / name
    path.write_text(json.dumps(content))
    return path


@pytest.fixture
def small_analysis(tmp_path) -> dict:
    """An analysis JSON's content reading one small generated file."""
    make_sample(tmp_path / "f.root", SampleSpec(events=500, seed=3))
    write_json(tmp_path, "samples.json", {"S": [str(tmp_path / "f.root")]})
    return {"samplejson": "samples.json", "workflow": "base", "metaconditions": "default"}


@pytest.mark.parametrize(
    ("key", "meant"), [("metaconditon", "metaconditions"), ("wokflow", "workflow"), ("samplejsno", "samplejson")]
)
def test_a_misspelt_analysis_key_is_named_with_the_key_meant_when_loaded(tmp_path, small_analysis, key, meant):
    content = dict(small_analysis)
    content[key] = content.pop(meant)
    path = write_json(tmp_path, "an.json", content)
    with pytest.raises(DispatchError, match=rf"an\.json: unknown key '{key}': did you mean '{meant}'\?"):
        load_analysis(path)


def test_validate_names_unknown_analysis_keys_before_its_table(tmp_path, small_analysis, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_json(tmp_path, "an.json", {**small_analysis, "yaer": {"S": "2018"}, "year": {"S": "2018"}})
    assert main(["run", "--json-analysis", str(path), "--validate"]) == 0
    out, _ = said(capsys)
    assert "unknown key 'yaer' ignored (did you mean 'year'?" in out
    assert out.index("unknown key 'yaer'") < out.index("coffea-dispatch --validate")
    misspelt = {k if k != "metaconditions" else "metaconditon": v for k, v in small_analysis.items()}
    assert main(["run", "--json-analysis", str(write_json(tmp_path, "b.json", misspelt)), "--validate"]) == 2
    out, err = said(capsys)
    assert "b.json: unknown key 'metaconditon': did you mean 'metaconditions'?" in err and not out


@pytest.mark.parametrize(
    ("argv", "meant"),
    [
        (
            ["run", "--json-analysis", "a.json", "--exectuor", "futures"],
            "unknown option --exectuor: did you mean --executor?",
        ),
        (["run", "--json-analysis", "a.json", "--no-plto"], "unknown option --no-plto: did you mean --no-plot?"),
        (["check", "out", "--strcit"], "unknown option --strcit: did you mean --strict?"),
        (["rnu", "--json-analysis", "a.json"], "invalid choice: 'rnu': did you mean 'run'?"),
        (["check", "out", "--format", "cofea"], "invalid choice: 'cofea': did you mean 'coffea'?"),
    ],
)
def test_a_misspelt_option_or_command_is_one_line_naming_the_one_meant(argv, meant, capsys):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and meant in captured.err, captured.err
    assert "usage:" not in captured.err


def test_a_misspelt_executor_is_named_with_the_one_meant(tmp_path, small_analysis, capsys):
    path = write_json(tmp_path, "an.json", small_analysis)
    assert main(["run", "--json-analysis", str(path), "--executor", "dask/slrum"]) == 2
    _, err = said(capsys)
    assert "unknown executor 'dask/slrum' (did you mean 'dask/slurm'? choose from: " in err
    with pytest.raises(DispatchError, match=r"unknown executor 'futrues' \(did you mean 'futures'\?"):
        coffea_dispatch.executor("futrues")


def test_python_keywords_name_the_valid_ones_and_the_one_meant(tmp_path, small_analysis):
    path = write_json(tmp_path, "an.json", small_analysis)
    with pytest.raises(DispatchError) as refused:
        coffea_dispatch.run(str(path), no_plot=True)
    message = refused.value.message
    assert "run(): unknown option(s) no_plot: did you mean plot=False?" in message
    assert "(it takes: " in message and " workers" in message and "chunksize" in message and "\n" not in message
    with pytest.raises(DispatchError, match=r"no_metadata_cache: did you mean use_metadata_cache=False\?"):
        coffea_dispatch.run(str(path), no_metadata_cache=True)
    with pytest.raises(DispatchError, match=r"chunk: did you mean chunksize=\?"):
        coffea_dispatch.run(str(path), chunk=1000)
    with pytest.raises(DispatchError, match=r"unknown option\(s\) wokers: did you mean workers=\? \(it takes: "):
        coffea_dispatch.executor("futures", wokers=2)


def test_status_on_a_dump_points_to_check(demo, capsys):
    assert main(["status", "demo/output"]) == 2
    _, err = said(capsys)
    assert "demo/output: a --dump folder, not a job array's submission folder" in err
    assert "`coffea-dispatch check demo/output`" in err


def test_samples_of_a_folder_is_one_sample_of_its_root_files(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "signal"
    for index in range(2):
        make_sample(data / f"f{index}.root", SampleSpec(events=100, seed=index + 1))
    (data / "notes.txt").write_text("not an input")
    assert main(["samples", "-i", "signal"]) == 0
    written = json.loads((tmp_path / "signal.json").read_text())
    assert written == {"signal": [str(data / "f0.root"), str(data / "f1.root")]}


def test_samples_of_a_folder_of_sample_folders_names_them_instead_of_merging(tmp_path, monkeypatch, capsys):
    """Signal and background in subfolders: one sample of all would mix them; say how to list them instead."""
    monkeypatch.chdir(tmp_path)
    for sample in ("sig", "bkg"):
        make_sample(tmp_path / "mc" / sample / "f.root", SampleSpec(events=100, seed=len(sample)))
    assert main(["samples", "-i", "mc"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: mc: no file in it, but 2 folder(s) of files (bkg, sig): write a datasets.txt")
    assert len(err.splitlines()) == 1 and not (tmp_path / "mc.json").exists()
    assert main(["samples", "-i", "mc", "--recursive"]) == 0  # asked for: one sample of all
    assert len(json.loads((tmp_path / "mc.json").read_text())["mc"]) == 2


def mass(values: list[float]) -> hist.Hist:
    histogram = hist.Hist.new.Reg(4, 100, 180, name="mass").Double()
    histogram[...] = values
    return histogram


def drawn(tmp_path: Path, name: str, output: dict, year) -> bytes:
    """The mass plot a run of samples Signal then Background (the sample JSON's order) draws of `output`."""
    analysis = SimpleNamespace(name="an", samples={"Signal": [], "Background": []}, year=year)
    run = RunResult(analysis, "iterative", 1, output, {}, 0.0)
    save_and_plot(run, RunOptions(json_analysis="an.json", dump=str(tmp_path / name)))
    return run.plot.read_bytes()


def test_the_plot_follows_the_samples_order_and_labels_a_year_only_every_sample_has(tmp_path):
    one = {"Signal": {"mass": mass([1, 5, 2, 1])}, "Background": {"mass": mass([4, 3, 2, 1])}}
    other = dict(reversed(one.items()))  # as chunks finishing in another order accumulate them
    plain = drawn(tmp_path, "one", one, None)
    assert drawn(tmp_path, "other", other, None) == plain  # same colours, same legend order
    assert drawn(tmp_path, "year of one", one, {"Signal": ["2022postEE"]}) == plain  # no year label
    both = {"Signal": ["2022postEE"], "Background": ["2022postEE"]}
    assert drawn(tmp_path, "year of both", one, both) != plain  # labelled


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"coffea-dispatch {importlib.metadata.version('coffea-dispatch')}\n"
