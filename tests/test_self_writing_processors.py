"""Processors that write their own files (HiggsDNA's contract), however they keep the output folder and name
their files: every file is staged per chunk, published once, recorded, and never left behind by an attempt
that did not finish. Rows are compared with the input files read directly (uproot): each selected event once."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import uproot

from coffea_dispatch.cli import main
from coffea_dispatch.dump.check import check_dump
from coffea_dispatch.dump.completeness_file import COMPLETENESS, read_completeness
from coffea_dispatch.dump.ledger import LEDGER, read_marker
from conftest import ROW_KEYS, sort_rows, write_analysis
from helpers import run_analysis_with

CHUNK = 10_000


@pytest.fixture(scope="module")
def expected_rows(generated) -> dict[str, dict[str, np.ndarray]]:
    """Per sample, the events with two photons or more, read straight from the inputs."""
    rows = {}
    for sample, files in generated.items():
        arrays = [uproot.open(f)["Events"].arrays([*ROW_KEYS, "nPhoton"], library="np") for f in files]
        selected = [{k: a[k][a["nPhoton"] >= 2] for k in ROW_KEYS} for a in arrays]
        rows[sample] = sort_rows({k: np.concatenate([s[k] for s in selected]) for k in ROW_KEYS})
    return rows


def own_rows(dump: Path, sample: str) -> dict[str, np.ndarray]:
    """Every row of the parquet files the processor wrote for `sample` (files only: a link's rows are its
    target's)."""
    files = sorted(p for p in (dump / sample / "tables").rglob("*.parquet") if not p.is_symlink())
    tables = [pq.read_table(f) for f in files]
    return sort_rows({k: np.concatenate([t.column(k).to_numpy() for t in tables]) for k in ROW_KEYS})


def assert_each_event_once(dump: Path, expected: dict) -> None:
    """Every selected event once, and every file the processor wrote listed by its chunk's record."""
    for sample, rows in expected.items():
        found = own_rows(dump, sample)
        assert len(found["event"]) == len(rows["event"]), sample
        for key in ROW_KEYS:
            np.testing.assert_array_equal(found[key], rows[key])
    assert all(c.ok and c.complete == c.planned for c in check_dump(dump).values())
    records = [read_marker(m) for m in (dump / LEDGER / "chunks").rglob("*.done")]
    recorded = {output for record in records for output in record["outputs"]}
    written = {str(p.relative_to(dump)) for sample in expected for p in (dump / sample / "tables").iterdir()}
    assert len(records) == 12 and recorded == written


def test_an_output_folder_kept_under_other_names_is_staged_and_recorded(generated, expected_rows, tmp_path):
    """`self.outdir` and a settings path below it: before, not staged (files straight into the dump, not
    atomic, not recorded) and `check` failed on a clean run."""
    analysis = write_analysis(tmp_path, generated, workflow="user_processors:WritesItsOwnFiles")
    run_analysis_with(analysis, tmp_path / "out", "futures", workers=2, chunk=CHUNK)
    assert_each_event_once(tmp_path / "out", expected_rows)
    assert not list((tmp_path / "out" / LEDGER / "staging").rglob("*.parquet"))


KILL_AFTER = """
import os, sys
from coffea_dispatch.dump import ledger
from coffea_dispatch.cli import main
from coffea_dispatch.dump.completeness_file import COMPLETENESS, read_completeness
calls = []
original = getattr(ledger.Ledger, {method!r})
def dies_the_third_time(self, *args, **kwargs):
    calls.append(1)
    if len(calls) == {nth}:
        os.kill(os.getpid(), 9)
    return original(self, *args, **kwargs)
setattr(ledger.Ledger, {method!r}, dies_the_third_time)
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize(
    "method, nth",
    [("record_chunk", 3), ("_move_into_place", 5)],
    ids=["between publishing and recording", "between two files of a chunk"],
)
def test_outputs_of_a_killed_attempt_are_removed_whatever_their_names(generated, expected_rows, tmp_path, method, nth):
    """Random names, SIGKILL after some of a chunk's files were published but before its record: before, the
    rerun added its own files beside the killed attempt's, and those events counted twice."""
    analysis = write_analysis(tmp_path, generated, workflow="user_processors:WritesRandomNames")
    dump = tmp_path / "out"
    command = ["run", "--json-analysis", str(analysis), "--dump", str(dump), "--executor", "iterative"]
    command += ["--chunk", str(CHUNK), "--no-progress", "--no-plot"]
    script = textwrap.dedent(KILL_AFTER.format(method=method, nth=nth))
    killed = subprocess.run([sys.executable, "-c", script, *command], cwd=Path(__file__).parent)
    assert killed.returncode == -9
    published = list(dump.glob("*/tables/*.parquet"))
    assert published  # the killed attempt left files in the dump
    assert main(command) == 0
    assert_each_event_once(dump, expected_rows)


def test_links_within_the_outputs_are_published_as_links(generated, expected_rows, tmp_path):
    """Before, a processor that linked to its own output failed every run and left the chunk's files."""
    analysis = write_analysis(tmp_path, generated, workflow="user_processors:LinksItsOutput")
    run_analysis_with(analysis, tmp_path / "out", "iterative", chunk=CHUNK)
    links = sorted((tmp_path / "out").glob("*/tables/*.latest"))
    assert len(links) == 12
    for link in links:
        assert link.is_symlink() and not os.path.isabs(os.readlink(link))
        assert link.resolve() == link.with_suffix(".parquet")
    assert_each_event_once(tmp_path / "out", expected_rows)


def failing_run(tmp_path: Path, generated, workflow: str, capsys) -> tuple[str, Path]:
    """An iterative run of `workflow` that must fail with exit code 2: (its stderr, its dump)."""
    analysis = write_analysis(tmp_path, generated, workflow=f"user_processors:{workflow}")
    dump = tmp_path / "out"
    command = ["run", "--json-analysis", str(analysis), "--dump", str(dump), "--executor", "iterative"]
    assert main([*command, "--chunk", str(CHUNK), "--no-progress", "--no-plot"]) == 2
    return capsys.readouterr().err.strip(), dump


def test_a_link_out_of_the_outputs_is_refused_in_one_line(generated, tmp_path, capsys):
    err, dump = failing_run(tmp_path, generated, "LinksOutsideItsOutputs", capsys)
    assert len(err.splitlines()) == 1 and "a symbolic link to /etc/hostname, outside its outputs" in err, err
    written = [p for p in dump.rglob("*") if p.is_file() and LEDGER not in p.parts]
    assert written == [dump / COMPLETENESS], written  # nothing of the chunk; what was read, with nothing read
    assert sum(read_completeness(dump)["Signal"].counts().values()) == 1
    assert not [p for p in (dump / LEDGER).rglob("*") if "staging" in p.parts and p.is_file()]


def test_files_written_beside_the_output_folder_are_reported_and_removed(generated, expected_rows, tmp_path):
    """`output_location/../x`: before, those files stayed under .coffea-dispatch/staging/ forever."""
    analysis = write_analysis(tmp_path, generated, workflow="user_processors:WritesBesideItsOutputFolder")
    result = run_analysis_with(analysis, tmp_path / "out", "futures", workers=2, chunk=CHUNK)
    assert any("wrote 12 file(s) outside its output_location (e.g. ../escaped-" in n for n in result.notes)
    assert not [p for p in (tmp_path / "out").rglob("escaped-*")]
    assert not [p for p in tmp_path.glob("escaped-*")]
    assert_each_event_once(tmp_path / "out", expected_rows)


def test_a_folder_kept_where_it_cannot_be_replaced_is_refused_before_anything_runs(generated, tmp_path, capsys):
    err, dump = failing_run(tmp_path, generated, "KeepsItsFolderReadOnly", capsys)
    assert len(err.splitlines()) == 1 and "self.settings['tables']" in err, err
    assert not dump.exists()


def test_chunks_writing_one_file_name_fail_the_run(generated, tmp_path, capsys):
    """Every chunk of a sample overwrites the same file: all but one chunk's events would be lost."""
    err, dump = failing_run(tmp_path, generated, "OneNameForEveryChunk", capsys)
    assert "chunks wrote the same output " in err and "/tables/all.parquet" in err, err
    assert main(["check", str(dump)]) == 1
    assert "written by both" in capsys.readouterr().out
