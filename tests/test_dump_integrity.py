"""A dump never mixes configurations, never holds events twice, never keeps damaged or stale outputs.

Runs race into one dump (forked from this process, so twenty races take seconds), inputs are replaced
between runs, outputs and ledger files are damaged after a run: every time the dump ends either refused
before anything was written or identical to a clean run, and `check` agrees.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from coffea_dispatch.cli import main
from coffea_dispatch.dump.check import check_dump
from coffea_dispatch.dump.ledger import LEDGER
from coffea_dispatch.output import owned_name
from coffea_dispatch.synthetic.generator import SampleSpec, make_sample
from conftest import LOOSE_CUTS, TESTS, read_rows, snapshot, write_analysis
from helpers import assert_same_rows

CHUNK = 1000
OTHER_CHUNK = 1500
CHUNKS = 6  # two files of 3,000 events
RACES = 20


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, list[str]]:
    """Two small files: a run takes a fraction of a second, so races can be repeated."""
    folder = tmp_path_factory.mktemp("tiny")
    files = [make_sample(folder / f"Tiny_{i}.root", SampleSpec(events=3000, seed=40 + i)) for i in range(2)]
    return {"Tiny": [str(f) for f in files]}


@pytest.fixture(scope="module")
def configurations(tiny, tmp_path_factory) -> dict[str, Path]:
    """Two analyses that differ only in their cuts."""
    folder = tmp_path_factory.mktemp("configurations")
    return {
        "default": write_analysis(folder / "default", tiny),
        "loose": write_analysis(folder / "loose", tiny, metaconditions={"preselection": LOOSE_CUTS}),
    }


def command(analysis: Path, dump: Path, chunk: int = CHUNK) -> list[str]:
    return ["run", "--json-analysis", str(analysis), "--dump", str(dump), "--chunk", str(chunk)]


def run(analysis: Path, dump: Path, chunk: int = CHUNK, *extra: str) -> int:
    return main([*command(analysis, dump, chunk), "--executor", "iterative", "--no-progress", "--no-plot", *extra])


@pytest.fixture(scope="module")
def clean(configurations, tmp_path_factory) -> dict[tuple[str, int], Path]:
    """Clean runs: the only acceptable contents of a dump, per configuration and chunking."""
    folder = tmp_path_factory.mktemp("clean")
    dumps = {}
    for name, analysis in configurations.items():
        for chunk in (CHUNK, OTHER_CHUNK):
            dumps[name, chunk] = folder / f"{name}-{chunk}"
            assert run(analysis, dumps[name, chunk], chunk) == 0
    return dumps


def _run_child(argv: list[str], stderr: str, barrier) -> None:
    sys.stderr = open(stderr, "w")  # noqa: SIM115 - the process ends with os._exit
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115
    barrier.wait()
    code = main(argv)
    sys.stderr.flush()
    os._exit(code)


def race(commands: list[list[str]], folder: Path) -> list[tuple[int, str]]:
    """Run the commands at the same moment, each in a process forked from this one: (exit code, stderr)."""
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(len(commands))
    started = []
    for number, argv in enumerate(commands):
        stderr = folder / f"stderr-{number}"
        full = [*argv, "--executor", "iterative", "--no-progress", "--no-plot"]
        process = context.Process(target=_run_child, args=(full, str(stderr), barrier))
        process.start()
        started.append((process, stderr))
    outcomes = []
    for process, stderr in started:
        process.join(120)
        outcomes.append((process.exitcode, stderr.read_text().strip()))
    return outcomes


def assert_dump_equals(dump: Path, reference: Path) -> None:
    checks, expected = check_dump(dump), check_dump(reference)
    assert all(c.ok and c.complete == c.planned == expected[s].planned for s, c in checks.items()), checks
    assert_same_rows(read_rows(dump, "Tiny"), read_rows(reference, "Tiny"))


@pytest.mark.slow
@pytest.mark.parametrize("what", ["configuration", "chunk"])
def test_two_runs_that_differ_racing_into_one_dump_one_is_refused(configurations, clean, tmp_path, what):
    for attempt in range(RACES):
        dump = tmp_path / f"dump-{attempt}"
        if what == "configuration":
            runs = [("default", CHUNK), ("loose", CHUNK)]
        else:
            runs = [("default", CHUNK), ("default", OTHER_CHUNK)]
        outcomes = race([command(configurations[name], dump, chunk) for name, chunk in runs], tmp_path)
        codes = [code for code, _ in outcomes]
        assert sorted(codes) == [0, 2], (attempt, outcomes)
        refused = outcomes[codes.index(2)][1]
        assert len(refused.splitlines()) == 1, refused
        assert ("another configuration" if what == "configuration" else "holds chunks of --chunk") in refused
        assert_dump_equals(dump, clean[runs[codes.index(0)]])  # only the winner's chunks, all of them


@pytest.mark.slow
def test_the_same_command_twice_at_once_gives_the_clean_rows(configurations, clean, tmp_path):
    for attempt in range(RACES):
        dump = tmp_path / f"dump-{attempt}"
        outcomes = race([command(configurations["default"], dump)] * 2, tmp_path)
        assert [code for code, _ in outcomes] == [0, 0], (attempt, outcomes)
        assert_dump_equals(dump, clean["default", CHUNK])


@pytest.mark.slow
def test_an_input_replaced_between_a_partial_and_a_full_run_is_redone(tmp_path, capsys):
    path = make_sample(tmp_path / "inputs" / "File.root", SampleSpec(events=3000, seed=50))
    analysis = write_analysis(tmp_path / "config", {"Tiny": [str(path)]})
    dump = tmp_path / "out"
    assert run(analysis, dump, CHUNK, "--max", "2") == 0
    make_sample(path, SampleSpec(events=3000, seed=51))  # same path, same number of events, other events
    capsys.readouterr()
    assert run(analysis, dump) == 0
    assert "File.root changed since the earlier run: its chunks are redone" in " ".join(capsys.readouterr().out.split())
    assert run(analysis, tmp_path / "clean") == 0
    assert check_dump(dump)["Tiny"].ok
    assert_same_rows(read_rows(dump, "Tiny"), read_rows(tmp_path / "clean", "Tiny"))


def _outputs(dump: Path) -> list[Path]:
    return sorted((dump / "Tiny" / "nominal").glob("*.parquet"))


def garble_keeping_the_footer(path: Path) -> None:
    """Zeros over the first half: same size, the footer still reads, the data does not."""
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        handle.seek(4)
        handle.write(b"\0" * (size // 2))
    assert path.stat().st_size == size and pq.read_schema(path) is not None


def test_damaged_outputs_are_named_by_check_and_one_rerun_redoes_exactly_those(configurations, clean, tmp_path, capsys):
    dump = tmp_path / "out"
    assert run(configurations["default"], dump) == 0
    truncated, garbled, deleted = _outputs(dump)[:3]
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    garble_keeping_the_footer(garbled)
    deleted.unlink()
    capsys.readouterr()
    assert main(["check", str(dump)]) == 1
    report = " ".join(capsys.readouterr().out.split())
    for damaged in (truncated, garbled, deleted):
        assert damaged.name in report
    assert run(configurations["default"], dump) == 0
    assert f"resumed: {CHUNKS - 3} chunk(s)" in " ".join(capsys.readouterr().out.split())
    assert main(["check", str(dump)]) == 0
    assert_dump_equals(dump, clean["default", CHUNK])


def test_outputs_of_another_chunking_are_removed_by_the_rerun(configurations, clean, tmp_path, capsys):
    """What two racing --chunk values left before the configuration was claimed atomically: both chunkings'
    records and outputs in one dump. `check` names the overlap and the fix; the fix leaves one chunking."""
    dump = tmp_path / "out"
    shutil.copytree(clean["default", CHUNK], dump)
    other = clean["default", OTHER_CHUNK]
    for source in [*other.glob(f"{LEDGER}/chunks/*/*.done"), *other.glob("Tiny/nominal/*.parquet")]:
        shutil.copy2(source, dump / source.relative_to(other))
    assert main(["check", str(dump)]) == 1
    report = " ".join(capsys.readouterr().out.split())
    assert "overlapping" in report and f"--chunk {CHUNK}" in report
    assert run(configurations["default"], dump) == 0
    assert "chunk(s) of another --chunk" in " ".join(capsys.readouterr().out.split())
    assert_dump_equals(dump, clean["default", CHUNK])


@pytest.mark.parametrize("damage", ["truncated", "wrong_type"])
def test_a_damaged_plan_file_is_rebuilt(configurations, clean, tmp_path, capsys, damage):
    dump = tmp_path / "out"
    shutil.copytree(clean["default", CHUNK], dump)
    plan = sorted(dump.glob(f"{LEDGER}/files/*/*.json"))[0]
    plan.write_text(plan.read_text()[:20] if damage == "truncated" else "[1, 2]")
    assert main(["check", str(dump)]) == 0  # rebuilt from the chunk records, nothing is missing
    assert "rebuilt" in " ".join(capsys.readouterr().out.split())
    assert json.loads(plan.read_text())["chunks"]
    assert run(configurations["default"], dump) == 0
    assert json.loads(plan.read_text())["input"]["entries"] == 3000  # the rerun records the input again
    assert_dump_equals(dump, clean["default", CHUNK])


def test_leftovers_of_crashed_writers_are_removed_by_the_next_run(configurations, tmp_path):
    dump = tmp_path / "out"
    assert run(configurations["default"], dump, CHUNK, "--max", "1") == 0
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)

    def of_a_dead_process(name: str) -> str:
        return name.replace(f"~{os.getpid()}~", f"~{int(dead.stdout)}~")

    records = dump / LEDGER / "chunks" / "Tiny"
    record = records / of_a_dead_process(owned_name(".x.done", "ab") + ".tmp")
    output = dump / "Tiny" / "nominal" / of_a_dead_process(owned_name(".x.parquet", "ab") + ".tmp")
    staging = dump / LEDGER / "staging" / "Tiny" / of_a_dead_process(owned_name("chunk", "1"))
    alive = records / (owned_name(".y.done", "cd") + ".tmp")  # this process: still writing it
    staging.mkdir(parents=True)
    for path in (record, output, alive):
        path.write_bytes(b"partial")
    assert run(configurations["default"], dump) == 0
    assert not any(p.exists() for p in (record, output, staging)) and alive.exists()


def test_outputs_and_records_follow_the_umask(configurations, tmp_path):
    dump = tmp_path / "out"
    previous = os.umask(0o022)
    try:
        assert run(configurations["default"], dump) == 0
    finally:
        os.umask(previous)
    files = [p for p in dump.rglob("*") if p.is_file()]
    assert files and {oct(p.stat().st_mode & 0o777) for p in files} == {oct(0o644)}


def _one_line_and_untouched(capsys, analysis: Path, dump: Path, *needles: str) -> None:
    before = snapshot(dump) if dump.exists() else {}
    assert run(analysis, dump) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    assert (snapshot(dump) if dump.exists() else {}) == before


def test_a_read_only_dump_is_one_line(configurations, mounted, capsys):
    read_only = mounted("ro,size=1m")
    _one_line_and_untouched(capsys, configurations["default"], read_only / "out", "cannot write there")
    _one_line_and_untouched(capsys, configurations["default"], read_only, "cannot write there")


def test_a_full_disk_at_the_start_is_one_line_and_leaves_no_temporary(configurations, mounted, capsys):
    full = mounted("size=64k")
    subprocess.run(["dd", "if=/dev/zero", f"of={full / 'filler'}", "bs=4k"], capture_output=True)
    _one_line_and_untouched(capsys, configurations["default"], full / "out", "no space left")
    assert not [p for p in full.rglob("*") if p.name.endswith(".tmp")]


def test_a_damaged_configuration_file_is_one_line(configurations, clean, tmp_path, capsys):
    dump = tmp_path / "out"
    shutil.copytree(clean["default", CHUNK], dump)
    (dump / LEDGER / "configuration.json").write_text("[]")
    _one_line_and_untouched(capsys, configurations["default"], dump, "configuration.json: damaged")


def test_check_reads_a_dump_whose_path_is_not_utf8(configurations, tmp_path):
    dump = Path(os.fsdecode(bytes(tmp_path) + b"/out-\xff"))
    assert run(configurations["default"], dump) == 0
    checks = check_dump(dump)
    assert checks["Tiny"].ok and checks["Tiny"].complete == CHUNKS


SLOW_RUN = """
import sys
from coffea_dispatch.cli import main
sys.exit(main(sys.argv[1:]))
"""


def start_slow_futures_run(tiny, tmp_path: Path, ignore_hangup: bool = False):
    """A futures run of 60 slow chunks on 2 workers, once it recorded its first chunk: (process, workers)."""
    import psutil

    analysis = write_analysis(tmp_path, tiny, workflow="user_processors:SlowDiphoton")
    argv = [*command(analysis, tmp_path / "out", 100), "--executor", "futures", "--workers", "2", "--no-progress"]
    process = subprocess.Popen(
        [sys.executable, "-c", SLOW_RUN, *argv, "--no-plot"],
        env={**os.environ, "PYTHONPATH": str(TESTS)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # as from a terminal, or as under nohup: never what this test run inherited (under nohup, SIGHUP ignored)
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN if ignore_hangup else signal.SIG_DFL),
    )
    records = tmp_path / "out" / LEDGER / "chunks"
    deadline = time.monotonic() + 60
    while not list(records.glob("*/*.done")) and time.monotonic() < deadline:  # mid-run: some chunks done
        time.sleep(0.1)
    workers = psutil.Process(process.pid).children(recursive=True)
    assert workers, "the futures workers never started"
    return process, workers


def assert_gone_5_s_later(workers) -> None:
    import psutil

    time.sleep(5)
    assert not [w.pid for w in workers if w.is_running() and w.status() != psutil.STATUS_ZOMBIE]


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_stop_the_run_and_its_workers(tiny, tmp_path, stop):
    process, workers = start_slow_futures_run(tiny, tmp_path)
    process.send_signal(getattr(signal, stop))
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + getattr(signal, stop)
    assert err.strip().splitlines()[-1] == f"stopped by {stop}"
    assert_gone_5_s_later(workers)
    assert all(c.unreadable == [] for c in check_dump(tmp_path / "out").values())  # records intact


@pytest.mark.slow
def test_a_run_under_nohup_ignores_the_hangup(tiny, tmp_path):
    process, _ = start_slow_futures_run(tiny, tmp_path, ignore_hangup=True)
    process.send_signal(signal.SIGHUP)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert all(c.ok for c in check_dump(tmp_path / "out").values())


@pytest.mark.slow
def test_workers_of_a_sigkilled_run_do_not_live_on(tiny, tmp_path):
    """The OOM killer or a lost session: nothing can be cleaned up, so the workers die with their parent."""
    process, workers = start_slow_futures_run(tiny, tmp_path)
    process.kill()
    process.wait(timeout=60)  # not communicate(): workers that live on would hold its pipes open
    assert_gone_5_s_later(workers)


def test_a_process_forked_during_a_run_still_dies_on_sigterm():
    """dask/local forks its workers, and its Nanny stops one that uses too much memory with SIGTERM: a worker
    that inherited the run's SIGTERM handler would raise in its own main thread and keep running its chunk."""
    from coffea_dispatch.signals import stopping_signals_interrupt

    with stopping_signals_interrupt():
        child = os.fork()
        if child == 0:
            try:
                time.sleep(30)
            finally:
                os._exit(0)
        time.sleep(0.5)
        os.kill(child, signal.SIGTERM)
        _, status = os.waitpid(child, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.1, 0.4, 0.9])
def test_ctrl_c_in_the_first_second_is_one_line(tiny, tmp_path, delay):
    """While the command imports coffea: before, a traceback (once an ImportError, once the run went on)."""
    analysis = write_analysis(tmp_path, tiny)
    console_script = Path(sys.executable).with_name("coffea-dispatch")
    argv = [str(console_script), *command(analysis, tmp_path / "out", 1000), "--no-progress", "--no-plot"]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert "Traceback" not in out + err and "Error" not in err, err
    if process.returncode != 0:  # a fast machine may finish the run before the signal: then nothing to say
        assert (process.returncode, err.strip().splitlines()[-1]) == (130, "interrupted"), err
