"""Every option value is checked, from the option spec, before anything runs: `coffea_dispatch.executor()`,
`coffea_dispatch.run()` and the command line refuse a value of the wrong type or out of range in one line naming
the option (the keyword from Python, the flag from the command line), never with a traceback from deep inside
and never after a job was submitted. The API's refusals name its keywords where the shared pipeline names flags.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import coffea_dispatch
from coffea_dispatch import cli
from coffea_dispatch.arguments import add_run_arguments
from coffea_dispatch.errors import DispatchError
from coffea_dispatch.executors import executor_names
from coffea_dispatch.executors.for_runner import DispatchExecutor
from coffea_dispatch.executors.registry import kind_of
from coffea_dispatch.options import RunOptions, SubmitOptions, options_of
from coffea_dispatch.options.keywords import in_keywords, python_options
from coffea_dispatch.pipeline.result import RunResult
from conftest import independent_of_coffea, write_analysis
from runner_processors import CountingProcessor

# validation only: each example is refused or fails at once on a missing input
PROPERTY = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# any value a caller could pass: wrong types, None, negative, huge, non-finite, text (without '/', so that a
# path option accepted as valid stays inside the test's folder)
relative_text = st.text(alphabet=st.characters(blacklist_characters="/"), max_size=12).filter(
    lambda t: t.strip(".") != ""
)
any_value = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**62, max_value=2**80),
    st.integers(max_value=-1),
    st.floats(allow_nan=True, allow_infinity=True),
    relative_text,
    st.binary(max_size=4),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
    st.sampled_from([object(), Path("p"), b"x", "\x00", "\ud800", math.nan, math.inf, 10**30, -1, 0, 1.5, "2"]),
)
# what a command line may carry after a flag
argv_value = st.one_of(
    relative_text,
    st.integers().map(str),
    st.floats().map(str),
    st.sampled_from(["nan", "inf", "-1", "0", "1e400", str(2**64), "", "-", "--x", "\x00", "1.5", "a b"]),
)


def one_line_naming(error: DispatchError, name: str) -> None:
    assert "\n" not in error.message and "Traceback" not in error.message, error.message
    assert name in error.message, error.message


# --- every option checked before anything happens ---------------------------------------------------------


@independent_of_coffea
@pytest.mark.parametrize(
    ("name", "options", "words"),
    [
        ("futures", {"workers": "2"}, "workers= must be an integer of at least 1, got '2'"),
        ("futures", {"retries": None}, "retries= must be an integer of 0 or more, got None"),
        ("dask/slurm", {"scaleout": "a"}, "scaleout= must be an integer of at least 1, got 'a'"),
        ("futures", {"workers": True}, "workers= must be an integer of at least 1, got True"),
        ("vanilla_slurm", {"poll_seconds": -1}, "poll_seconds= must be from 0 to 86400, got -1"),
        ("vanilla_slurm", {"poll_seconds": math.nan}, "poll_seconds= must be a number from 0 to 86400, got nan"),
        ("vanilla_slurm", {"walltime": "soon"}, "walltime='soon': expected HH:MM:SS"),
        ("vanilla_lxplus", {"max_materialize": "3"}, "max_materialize= must be an integer, got '3'"),
        ("vanilla_lxplus", {"folder": 5}, "folder= must be a path, got 5"),
        ("dask/local", {"dashboard_port": 70_000}, "dashboard_port= must be from 0 to 65535, got 70000"),
        ("futures", {"announce": "loud"}, "announce= must be a function"),
    ],
)
def test_executor_refuses_a_wrong_value_in_one_line_naming_its_keyword(name, options, words):
    """`workers="2"`, `retries=None`, `scaleout="a"` were raw TypeErrors; `poll_seconds=nan` and a walltime that
    is no time limit were taken, and failed once the jobs were submitted."""
    with pytest.raises(DispatchError) as error:
        coffea_dispatch.executor(name, **options)
    one_line_naming(error.value, words)


@independent_of_coffea
def test_run_checks_every_value_before_a_job_array_is_written(generated, tmp_path, monkeypatch):
    """`poll_seconds=nan` with `wait=True` wrote and submitted the jobs, then failed in its first sleep."""
    monkeypatch.chdir(tmp_path)
    analysis = write_analysis(tmp_path / "a", {"Signal": generated["Signal"]})
    with pytest.raises(DispatchError) as error:
        coffea_dispatch.run(str(analysis), executor="vanilla_slurm", wait=True, poll_seconds=math.nan)
    one_line_naming(error.value, "poll_seconds=")
    assert not (tmp_path / ".higgs_dna_vanilla_slurm").exists()  # nothing written, nothing submitted


@independent_of_coffea
@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["-j", "abc"], "argument -j/--workers: invalid int value: 'abc'"),
        (["--poll-seconds", "nan"], "--poll-seconds must be a number from 0 to 86400, got nan"),
        (["--dashboard-port", "70000"], "--dashboard-port must be from 0 to 65535, got 70000"),
        (["--timeout", "0"], "--timeout must be from 1 to 2147483647, got 0"),
        (["--dump", "a\x00b"], "-d/--dump must be a path of one line without NUL"),
    ],
)
def test_the_command_line_refuses_a_wrong_value_in_one_line_naming_its_flag(capsys, tmp_path, argv, words):
    """`-j abc` printed 30 lines of usage before its error; `--poll-seconds nan` and the others were taken."""
    code = main(["run", "--json-analysis", str(tmp_path / "missing.json"), *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and words in err, err


def main(argv: list[str]) -> int:
    """The command line in this process, as the console script exits."""
    try:
        return cli.main(argv)
    except SystemExit as leaving:  # argparse's own refusals
        return int(leaving.code)


@independent_of_coffea
@PROPERTY
@given(data=st.data())
def test_any_value_of_any_executor_option_builds_it_or_is_refused_in_one_line(data):
    name = data.draw(st.sampled_from(executor_names()), label="executor")
    keyword = data.draw(st.sampled_from(sorted(kind_of(name).keywords(name) | {"retries", "status", "announce"})))
    value = data.draw(any_value, label="value")
    try:
        built = coffea_dispatch.executor(name, **{keyword: value})
    except DispatchError as error:
        one_line_naming(error, f"{keyword}=")
    else:
        assert isinstance(built, DispatchExecutor)


RUN_KEYWORDS = sorted(
    ({o.dest for o in options_of(RunOptions)} | {o.dest for o in options_of(SubmitOptions)} | {"announce"})
    - {"json_analysis", "executor", "chunk", "job_record"}
    | {"chunksize"}
)


@independent_of_coffea
@PROPERTY
@given(data=st.data())
def test_any_value_of_any_run_option_runs_or_is_refused_in_one_line(data, tmp_path, monkeypatch):
    """On a missing input: a valid value gets as far as the input (refused, naming it), a wrong one no further
    than its check."""
    monkeypatch.chdir(tmp_path)
    missing = str(tmp_path / "missing.root")
    keyword = data.draw(st.sampled_from(RUN_KEYWORDS), label="keyword")
    value = data.draw(any_value, label="value")
    try:
        result = coffea_dispatch.run(
            {"S": [missing]}, CountingProcessor(), executor="iterative", **{"progress": False, keyword: value}
        )
    except DispatchError as error:
        one_line_naming(error, missing if missing in error.message else f"{keyword}=")
    else:
        assert isinstance(result, RunResult)


def value_options() -> list:
    """Every option of `run` that takes a value, as the parser has it (the backends' and physics' included);
    not --job-record, a batch job's own, whose record is written before the options are read."""
    parser = cli.build_parser()
    add_run_arguments(parser)  # a fresh parser with every option, to read them from
    actions = [a for a in parser._actions if a.option_strings and a.nargs != 0]
    return [a for a in actions if a.dest not in ("help", "command", "json_analysis", "job_record")]


@independent_of_coffea
@PROPERTY
@given(data=st.data())
def test_any_value_of_any_command_line_option_is_refused_in_one_line_naming_its_flag(
    data, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # a path option's value, taken, stays in here
    action = data.draw(st.sampled_from(value_options()), label="option")
    flag = data.draw(st.sampled_from(action.option_strings), label="flag")
    value = data.draw(argv_value, label="value")
    missing = str(tmp_path / "missing.json")
    code = main(["run", "--json-analysis", missing, flag, value])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "Traceback" not in err, err
    names_it = any(f in err for f in action.option_strings)
    assert names_it or "analysis JSON not found" in err or "unknown executor" in err, err


# --- the API names its keywords, not the command line's flags -------------------------------------------------


@independent_of_coffea
@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            "d: holds chunks of --chunk 2000 (this run: --chunk 3000), so their outputs would overlap; rerun with "
            "--chunk 2000, or rerun with --overwrite to redo everything, or choose another --dump",
            "d: holds chunks of chunksize=2000 (this run: chunksize=3000), so their outputs would overlap; rerun "
            "with chunksize=2000, or rerun with overwrite=True to redo everything, or choose another dump=",
        ),
        ("-s/--scaleout must be at least 1, got 0", "scaleout= must be at least 1, got 0"),
        ("--memory 'lots': expected a size", "memory='lots': expected a size"),
        ("--dump out: exists and is not a directory", "dump='out': exists and is not a directory"),
        ("give --voms PATH or --no-progress", "give voms=PATH or progress=False"),
        ("--max-scaleout must be at least 1", "max_scaleout= must be at least 1"),
        ("see `coffea-dispatch run --overwrite`", "see `coffea-dispatch run --overwrite`"),  # a command to copy
        ("f --dump.root: file does not exist", "f --dump.root: file does not exist"),  # part of a file name
    ],
)
def test_flags_become_keywords(message, expected):
    assert in_keywords(message, python_options(), {"dump": "out"}) == expected


@pytest.mark.parametrize("chunk", [3000])
def test_run_names_chunksize_and_overwrite_where_the_pipeline_names_flags(generated, tmp_path, chunk):
    """The dump's refusal said `rerun with --chunk 20000, or rerun with --overwrite`: run() has no such flags."""
    options = {"executor": "iterative", "schema": "base", "progress": False, "plot": False, "dump": tmp_path / "d"}
    coffea_dispatch.run({"Signal": generated["Signal"]}, CountingProcessor(), chunksize=20_000, **options)
    with pytest.raises(DispatchError) as error:
        coffea_dispatch.run({"Signal": generated["Signal"]}, CountingProcessor(), chunksize=chunk, **options)
    one_line_naming(error.value, "rerun with chunksize=20000, or rerun with overwrite=True")
    assert "--" not in error.value.message


@independent_of_coffea
def test_executor_refusals_name_keywords():
    with pytest.raises(DispatchError) as error:
        coffea_dispatch.executor("vanilla_slurm", memory="lots")
    one_line_naming(error.value, "memory='lots': expected a size such as 10GB")
