"""Every bad input: one clear line naming the file or key, exit code 2, existing output untouched."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
from pathlib import Path

import pytest
import uproot

from coffea_dispatch.cli import main
from conftest import independent_of_coffea, snapshot, write_analysis
from helpers import truncate_inside_photon_pt


@pytest.fixture
def workspace(tmp_path, generated):
    """An analysis folder and a --dump that already holds the results of an earlier run."""
    dump = tmp_path / "dump"
    (dump / "Signal" / "nominal").mkdir(parents=True)
    (dump / "Signal" / "nominal" / "earlier-run.parquet").write_bytes(b"earlier results")
    (dump / "notes.txt").write_text("keep me")
    return tmp_path, dump, generated


def run_cli(capsys, analysis: Path, dump: Path, *extra: str) -> tuple[int, str]:
    code = main(["run", "--json-analysis", str(analysis), "--dump", str(dump), "--no-progress", *extra])
    captured = capsys.readouterr()
    return code, captured.err.strip()


def assert_clean_failure(code: int, err: str, *needles: str):
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line, got:\n{err}"
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


def check(capsys, workspace, analysis: Path, *needles: str, extra: tuple = (), nothing_new: bool = True):
    """The run fails cleanly and every file already in --dump is unchanged.

    `nothing_new`: the error is found by the main process before processing (a missing path, a bad JSON),
    so no output at all is written. An input that turns out unreadable on a worker (it cannot be opened, it
    lacks a branch, a basket is damaged) stops the run there, but good chunks may have written new outputs.
    """
    _, dump, _ = workspace
    before = snapshot(dump)
    code, err = run_cli(capsys, analysis, dump, *extra)
    assert_clean_failure(code, err, *needles)
    after = snapshot(dump)
    assert {name: after.get(name) for name in before} == before
    if nothing_new:
        assert after == before


def test_missing_analysis_json(capsys, workspace):
    folder, _, _ = workspace
    check(capsys, workspace, folder / "nope.json", "nope.json", "not found")


def test_invalid_analysis_json(capsys, workspace):
    folder, _, _ = workspace
    bad = folder / "broken.json"
    bad.write_text('{"samplejson": "s.json",\n "workflow": }')
    check(capsys, workspace, bad, "broken.json", "not valid JSON", "line 2")


@pytest.mark.parametrize(
    "content, needle",
    [
        ({"workflow": "base"}, "'samplejson' is missing"),
        ({"samplejson": "s.json"}, "'workflow' is missing"),
        ({"samplejson": 3, "workflow": "base"}, "'samplejson' must be"),
        ([1, 2], "must be an object"),
    ],
)
def test_analysis_json_with_wrong_keys(capsys, workspace, content, needle):
    folder, _, _ = workspace
    path = folder / "analysis.json"
    path.write_text(json.dumps(content))
    check(capsys, workspace, path, "analysis.json", needle)


def test_missing_sample_json(capsys, workspace):
    folder, _, _ = workspace
    path = folder / "analysis.json"
    path.write_text(json.dumps({"samplejson": "missing_samples.json", "workflow": "base"}))
    check(capsys, workspace, path, "missing_samples.json", "sample JSON not found")


@pytest.mark.parametrize(
    "content, needle",
    [
        ("{not json", "not valid JSON"),
        ('["a.root"]', "must be an object"),
        ("{}", "no samples"),
        ('{"S": []}', "'S' must be a non-empty list"),
        ('{"S": [3]}', "invalid file entry"),
        ('{"../escape": ["a.root"]}', "not allowed as a folder name"),
        ('{"a/b": ["a.root"]}', "not allowed as a folder name"),
        ('{"S": ["a.root", "a.root"]}', "more than once"),
    ],
)
def test_invalid_sample_json(capsys, workspace, content, needle):
    folder, _, _ = workspace
    (folder / "samples.json").write_text(content)
    path = folder / "analysis.json"
    path.write_text(json.dumps({"samplejson": "samples.json", "workflow": "base"}))
    check(capsys, workspace, path, "samples.json", needle)


def test_unknown_workflow_lists_known_ones(capsys, workspace):
    folder, _, generated = workspace
    analysis = write_analysis(folder, generated, workflow="HHbbgg")
    check(capsys, workspace, analysis, "unknown workflow 'HHbbgg'", "base", "diphoton")


def test_a_misspelt_workflow_gets_a_did_you_mean(capsys, workspace):
    folder, _, generated = workspace
    analysis = write_analysis(folder, generated, workflow="diphtoon")
    check(capsys, workspace, analysis, "unknown workflow 'diphtoon' (did you mean 'diphoton'? registered: ")


@pytest.mark.parametrize(
    "workflow, needle",
    [
        ("no_such_module_xyz:Proc", "cannot import module 'no_such_module_xyz'"),
        ("user_processors:DoesNotExist", "has no class 'DoesNotExist'"),
        ("user_processors:NotAProcessor", "not a coffea processor.ProcessorABC"),
        ("user_processors:NeedsUnknownArgument", "needs argument(s) calibration_file"),
    ],
)
def test_bad_user_workflow(capsys, workspace, workflow, needle):
    folder, _, generated = workspace
    check(capsys, workspace, write_analysis(folder, generated, workflow=workflow), needle)


def test_unknown_executor(capsys, workspace):
    folder, _, generated = workspace
    check(
        capsys,
        workspace,
        write_analysis(folder, generated),
        "unknown executor 'dask/mars'",
        "futures",
        extra=("--executor", "dask/mars"),
    )


@pytest.mark.parametrize(
    "executor, command", [("dask/condor", "condor_submit"), ("dask/lxplus", "condor_submit"), ("dask/slurm", "sbatch")]
)
def test_batch_dask_executor_without_submit_command(capsys, workspace, monkeypatch, executor, command):
    folder, _, generated = workspace
    monkeypatch.setenv("PATH", "/nonexistent")  # no batch system here: one clear line, never a hang
    check(
        capsys,
        workspace,
        write_analysis(folder, generated),
        f"submits worker jobs with {command}",
        extra=("--executor", executor),
    )


def test_missing_root_file(capsys, workspace):
    folder, _, generated = workspace
    missing = str(folder / "gone.root")
    analysis = write_analysis(folder, {"Signal": generated["Signal"] + [missing]})
    check(capsys, workspace, analysis, missing, "does not exist")


def _second_name(folder: Path, original: str, how: str) -> str:
    """Another path to the same file, as a careless sample JSON might list it."""
    if how == "symbolic link":
        (folder / "link.root").symlink_to(original)
        return str(folder / "link.root")
    if how == "hard link":
        os.link(original, folder / "hard.root")
        return str(folder / "hard.root")
    if how == "linked folder":
        (folder / "mirror").symlink_to(Path(original).parent)
        return str(folder / "mirror" / Path(original).name)
    shutil.copy(original, folder / "copy.root")  # a copy keeps the ROOT UUID: the same events
    return str(folder / "copy.root")


@pytest.mark.parametrize("how", ["symbolic link", "hard link", "linked folder", "copy"])
def test_one_file_under_two_names_in_a_sample_is_refused(capsys, workspace, how):
    """Before, each name was processed: every event counted twice, and `check` said complete."""
    folder, _, generated = workspace
    original = generated["Background"][0]
    other = _second_name(folder, original, how)
    analysis = write_analysis(folder, {"Signal": generated["Signal"], "Background": [original, other]})
    check(capsys, workspace, analysis, original, other, "counted twice")


@independent_of_coffea
def test_a_batch_submission_refuses_one_file_under_two_names_before_writing_jobs(capsys, workspace, monkeypatch):
    """One file per job: no job would ever see that two of them are the same file."""
    folder, _, generated = workspace
    monkeypatch.chdir(folder)
    original = generated["Background"][0]
    other = _second_name(folder, original, "symbolic link")
    analysis = write_analysis(folder, {"Background": [original, other]})
    code = main(["run", "--json-analysis", str(analysis), "--executor", "vanilla_lxplus", "--skipCQR"])
    assert_clean_failure(code, capsys.readouterr().err.strip(), original, other, "counted twice")
    assert not (folder / ".higgs_dna_vanilla_lxplus").exists()


def test_one_store_file_on_two_servers_is_refused_before_anything_is_opened():
    from coffea_dispatch.errors import DispatchError
    from coffea_dispatch.inputs.planning import plan_chunks

    urls = ["root://site-a.invalid//store/mc/x/nano_1.root", "root://site-b.invalid:1094//store/mc/x/nano_1.root"]
    with pytest.raises(DispatchError, match="the same file /store/mc/x/nano_1.root on two servers"):
        plan_chunks({"DY": urls}, chunksize=1000)


@pytest.mark.parametrize("damage", ["random_bytes", "truncated"])
def test_corrupted_root_file(capsys, workspace, damage):
    folder, _, generated = workspace
    broken = folder / f"{damage}.root"
    if damage == "random_bytes":
        broken.write_bytes(bytes(range(256)) * 400)
    else:
        truncate_inside_photon_pt(generated["Background"][1], broken)
    analysis = write_analysis(folder, {"Signal": generated["Signal"], "Broken": [str(broken)]})
    check(capsys, workspace, analysis, str(broken), nothing_new=False)


def test_file_without_photon_branches_names_the_branch(capsys, workspace, shared_nanoaod):
    folder, _, generated = workspace
    reduced = str(shared_nanoaod / "nano_tt_v12.root")
    analysis = write_analysis(folder, {"Signal": generated["Signal"], "TT": [reduced]})
    check(capsys, workspace, analysis, reduced, "no branch 'Photon_pt'", "--skipbadfiles", nothing_new=False)


def test_skipbadfiles_skips_and_lists_bad_files(capsys, workspace, shared_nanoaod):
    folder, dump, generated = workspace
    missing = str(folder / "gone.root")
    broken = folder / "broken.root"
    broken.write_bytes(b"\x00" * 5000)
    reduced = str(shared_nanoaod / "nano_tt_v12.root")
    analysis = write_analysis(folder, {"Signal": generated["Signal"] + [missing], "Bad": [str(broken), reduced]})
    before = snapshot(dump)
    code = main(
        [
            "run",
            "--json-analysis",
            str(analysis),
            "--dump",
            str(dump),
            "--no-progress",
            "--skipbadfiles",
            "--executor",
            "iterative",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    for name in (missing, str(broken), reduced):
        assert f"{name}:" in out.replace("\n", "")
    # the earlier results survive, the good file was processed
    after = snapshot(dump)
    assert all(after[k] == v for k, v in before.items())
    assert any(k.startswith("Signal/nominal/Signal_0-") for k in after)


def test_dump_that_is_a_file(capsys, tmp_path, generated):
    target = tmp_path / "results"
    target.write_text("not a folder")
    code, err = run_cli(capsys, write_analysis(tmp_path, generated), target)
    assert_clean_failure(code, err, "exists and is not a directory")
    assert target.read_text() == "not a folder"


def test_processor_exception_shows_real_traceback(capsys, tmp_path, generated):
    analysis = write_analysis(tmp_path, {"Signal": generated["Signal"]}, workflow="user_processors:Explodes")
    code = main(["run", "--json-analysis", str(analysis), "--no-progress", "--executor", "iterative"])
    err = capsys.readouterr().err
    assert code == 1
    assert "ZeroDivisionError" in err and "user_processors.py" in err
    assert err.strip().splitlines()[-1].startswith("error: the workflow raised ZeroDivisionError")


def test_generated_inputs_untouched(generated):
    """Sanity: the shared session fixture was not modified by the damage tests (they copy what they break)."""
    for files in generated.values():
        for f in files:
            assert shutil.disk_usage(f) and Path(f).stat().st_size > 100_000


@pytest.mark.parametrize("skipbadfiles", [False, True])
def test_output_write_failure_is_fatal_never_a_skipped_input(capsys, tmp_path, generated, skipbadfiles):
    """A file where the output folder should be: the run fails naming it, even with --skipbadfiles."""
    dump = tmp_path / "dump"
    (dump / "Signal").mkdir(parents=True)
    (dump / "Signal" / "nominal").write_text("I am a file, not a folder")
    analysis = write_analysis(tmp_path, {"Signal": generated["Signal"]})
    extra = ("--skipbadfiles",) if skipbadfiles else ()
    code, err = run_cli(capsys, analysis, dump, "--executor", "futures", "-j", "2", *extra)
    assert_clean_failure(code, err, "cannot write", str(dump / "Signal" / "nominal"))
    assert (dump / "Signal" / "nominal").read_text() == "I am a file, not a folder"


def test_processor_exception_under_futures_fails_fast_with_one_traceback(capsys, tmp_path, generated):
    analysis = write_analysis(tmp_path, {"Signal": generated["Signal"]}, workflow="user_processors:Explodes")
    code = main(
        [
            "run",
            "--json-analysis",
            str(analysis),
            "--no-progress",
            "--executor",
            "futures",
            "-j",
            "2",
            "--chunk",
            "5000",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "_RemoteTraceback" not in err  # coffea's raw re-raise print is gone
    assert err.count("Traceback (most recent call last)") == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: the workflow raised ZeroDivisionError")
    # 10 chunks, 2 workers: once one failed, the chunks not yet started are not run
    not_started = int(re.search(r"\((\d+) other chunk\(s\) were not started", last).group(1))
    assert 1 <= not_started <= 8


@pytest.mark.skipif(not uproot.__version__.startswith("4."), reason="uproot 5 opens such names (tested elsewhere)")
def test_semicolon_in_a_file_name_under_uproot_4_is_one_clear_line(generated, tmp_path, capsys):
    odd = tmp_path / "run;2.root"
    shutil.copyfile(generated["Signal"][0], odd)
    analysis = write_analysis(tmp_path, {"Signal": [str(odd)]})
    code, err = run_cli(capsys, analysis, tmp_path / "out")
    assert_clean_failure(code, err, str(odd), "uproot 4", "rename the file")


def _special_input(kind: str, folder: Path) -> tuple[str, str]:
    """An input path that is not a readable regular file, and the words the error must use."""
    if kind == "fifo":
        os.mkfifo(folder / "pipe.root")
        return str(folder / "pipe.root"), "FIFO"
    if kind == "directory":
        (folder / "folder.root").mkdir()
        return str(folder / "folder.root"), "directory"
    if kind == "device":
        return "/dev/null", "character device"
    if kind == "symlink_loop":
        os.symlink(folder / "loop_b.root", folder / "loop_a.root")
        os.symlink(folder / "loop_a.root", folder / "loop_b.root")
        return str(folder / "loop_a.root"), "loop of symbolic links"
    if kind == "through_a_file":
        (folder / "plain.txt").write_text("not a folder")
        return str(folder / "plain.txt" / "x.root"), "through a file"
    return str(folder / ("x" * 300 + ".root")), "name too long"


SPECIAL_INPUTS = ["fifo", "directory", "device", "symlink_loop", "through_a_file", "too_long"]


@pytest.fixture
def no_hang():
    """A test that would wait forever (a FIFO opened for reading) fails after 60 s instead."""

    def give_up(signum, frame):
        raise TimeoutError("hung")

    previous = signal.signal(signal.SIGALRM, give_up)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("kind", SPECIAL_INPUTS)
def test_input_path_that_is_not_a_regular_file_is_one_line(capsys, workspace, no_hang, kind):
    folder, _, generated = workspace
    path, words = _special_input(kind, folder)
    analysis = write_analysis(folder, {"Odd": [path], **generated})
    check(capsys, workspace, analysis, path if kind != "too_long" else "x" * 50, words, "--skipbadfiles")


@pytest.mark.parametrize("kind", ["fifo", "symlink_loop", "too_long"])
@pytest.mark.parametrize("mode", ["--skipbadfiles", "--validate"])
def test_skipbadfiles_and_validate_list_special_paths_without_hanging(capsys, workspace, no_hang, kind, mode):
    folder, dump, generated = workspace
    path, words = _special_input(kind, folder)
    analysis = write_analysis(folder, {"Odd": [path], "Signal": generated["Signal"]})
    code = main(["run", "--json-analysis", str(analysis), "--dump", str(dump), "--no-progress", "--no-plot", mode])
    captured = capsys.readouterr()
    assert code == (2 if mode == "--validate" else 0), captured.err  # --validate exits 2 when it lists bad files
    assert "Traceback" not in captured.err
    assert words in " ".join(captured.out.split())


@pytest.mark.parametrize("value", ["NaN", "Infinity", "1e400", "1e308", "-1e308"])
def test_cut_value_that_cannot_select_anything_is_refused(capsys, workspace, value):
    folder, _, generated = workspace
    analysis = write_analysis(folder, generated)
    conditions = folder / "cuts.json"
    conditions.write_text('{"preselection": {"lead_pt_min": ' + value + "}}")  # JSON as a user would write it
    content = json.loads(analysis.read_text())
    analysis.write_text(json.dumps({**content, "metaconditions": str(conditions)}))
    check(capsys, workspace, analysis, "preselection.lead_pt_min", "not a usable cut")


def test_empty_mass_window_is_refused(capsys, workspace):
    folder, _, generated = workspace
    analysis = write_analysis(folder, generated, metaconditions={"preselection": {"mass_min": 180, "mass_max": 100}})
    check(capsys, workspace, analysis, "mass_min (180) must be below mass_max (100)")


@independent_of_coffea
@pytest.mark.parametrize(
    "options, needle",
    [
        (("-s", "-1"), "-s/--scaleout must be at least 1, got -1"),
        (("--max-scaleout", "0"), "--max-scaleout must be at least 1"),
        (("-m", "lots"), "--memory 'lots': expected a size such as 10GB"),
    ],
)
def test_cluster_sizes_that_cannot_work_are_one_line(capsys, workspace, options, needle):
    """`dask/local -s -1` waited forever for workers; `-m lots` was a traceback from deep inside Dask."""
    folder, _, generated = workspace
    analysis = write_analysis(folder, generated)
    check(capsys, workspace, analysis, needle, extra=("--executor", "dask/local", *options))


@independent_of_coffea
@pytest.mark.parametrize("cache", ["a file", "read-only"])
def test_dask_local_without_a_usable_cache_folder_is_one_line(capsys, workspace, monkeypatch, mounted, cache):
    """The credentials of dask/local go under $XDG_CACHE_HOME: before, a traceback when it could not be used
    (futures, which only skips its metadata cache there, runs)."""
    folder, _, generated = workspace
    if cache == "a file":
        home = folder / "cache-home"
        home.write_text("not a folder")
    else:
        home = mounted("ro,size=1m")  # read-only even for root
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    analysis = write_analysis(folder, generated)
    extra = ("--executor", "dask/local", "-s", "1", "--no-metadata-cache")
    check(capsys, workspace, analysis, "--credentials-directory", "cannot make a private folder", extra=extra)


@independent_of_coffea
@pytest.mark.parametrize("name", [".coffea-dispatch", ".hidden", "merged"])
def test_a_sample_named_like_the_tools_own_folders_is_refused(capsys, workspace, name):
    """A sample named .coffea-dispatch was accepted, and `check` then failed on its own records."""
    folder, _, generated = workspace
    analysis = write_analysis(folder, {name: generated["Signal"]})
    check(capsys, workspace, analysis, f"sample name {name!r} is a folder the tool keeps for itself")
