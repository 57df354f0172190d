"""Helpers shared by the test modules (fixtures live in conftest.py): running an analysis, comparing rows,
grid proxies, batch submissions run as their scheduler would."""

from __future__ import annotations

import subprocess
from pathlib import Path

import htcondor2
import numpy as np
import pyarrow.parquet as pq

from coffea_dispatch.batch.submission import Submission
from coffea_dispatch.cli import run_analysis_main
from coffea_dispatch.dump.check import check_dump
from coffea_dispatch.dump.ledger import LEDGER
from coffea_dispatch.higgsdna.diphoton import OUTPUT_COLUMNS
from coffea_dispatch.pipeline.run import RunOptions, run_analysis
from conftest import LOOSE_CUTS, read_rows, sort_rows, write_analysis

SMALL_CHUNK = 15_000  # several chunks per generated file
NANO = ["--nano-version", "12", "--triggerGroup", ".*Diphoton30.*"]  # generated files have no DoubleEG path


def higgsdna_analysis(folder: Path, samples: dict, workflow: str = "base", **extra) -> Path:
    """A HiggsDNA analysis JSON as its users write it: registered names everywhere."""
    year = {name: ["2022preEE"] for name in samples}
    return write_analysis(
        folder,
        samples,
        workflow=workflow,
        metaconditions="Era2022_v1",
        taggers=["DummyTagger2", "DummyTagger1"],
        systematics={},
        corrections={},
        year=year,
        **extra,
    )


def outputs(dump: Path) -> dict[str, dict]:
    """Every parquet output below `dump` (not our ledger), by relative path, read as Python lists."""
    return {
        str(p.relative_to(dump)): pq.read_table(p).to_pydict()
        for p in sorted(dump.rglob("*.parquet"))
        if LEDGER not in p.parts
    }


def run_analysis_with(analysis: Path, dump: Path | None, executor: str = "iterative", **options):
    """run_analysis on `analysis` into `dump`, quietly: no progress bar, no plot."""
    return run_analysis(
        RunOptions(
            json_analysis=str(analysis),
            dump=str(dump) if dump else None,
            executor=executor,
            progress=False,
            plot=False,
            **options,
        )
    )


def assert_same_rows(actual: dict, expected: dict, exact: bool = True):
    assert set(actual) == set(OUTPUT_COLUMNS)
    assert len(actual["event"]) == len(expected["event"])
    for column in OUTPUT_COLUMNS:
        if exact:
            np.testing.assert_array_equal(actual[column], expected[column], err_msg=column)
        else:
            np.testing.assert_allclose(actual[column], expected[column], rtol=1e-6, err_msg=column)


def make_proxy(folder: Path, days: int) -> Path:
    """A real X.509 certificate + key in one file, valid `days` days, like a grid proxy."""
    cert, key, proxy = folder / "cert.pem", folder / "key.pem", folder / f"x509up_{days}"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=coffea-dispatch test",
            "-days",
            str(days),
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    proxy.write_bytes(cert.read_bytes() + key.read_bytes())
    return proxy


def rows_on_slurm_equal_iterative(slurm, monkeypatch, tmp_path, samples: dict, executor: str, **options):
    """Run `executor` with one 2-worker job on the test's SLURM cluster and iteratively: the same rows."""
    for key, value in slurm.env.items():
        monkeypatch.setenv(key, value)
    analysis = write_analysis(tmp_path, samples, metaconditions={"preselection": LOOSE_CUTS})
    run_analysis_with(analysis, tmp_path / "iterative", "iterative", chunk=SMALL_CHUNK)
    result = run_analysis_with(
        analysis,
        tmp_path / "batch",
        executor,
        chunk=SMALL_CHUNK,
        scaleout=1,
        workers=2,
        walltime="00:20:00",
        log_directory=str(tmp_path / "logs"),
        **options,
    )
    assert not result.failed_chunks
    for sample in samples:
        if sample != "Empty":
            assert_same_rows(read_rows(tmp_path / "batch", sample), read_rows(tmp_path / "iterative", sample))
    return result


def truncate_inside_photon_pt(source: str, target: Path) -> Path:
    """Copy `source` cut in the middle of the Photon_pt basket: the TTree is readable, the photons are not."""
    import uproot

    branch = uproot.open(source)["Events"]["Photon_pt"]
    cut = int(branch.member("fBasketSeek")[0]) + int(branch.member("fBasketBytes")[0]) // 2
    target.write_bytes(Path(source).read_bytes()[:cut])
    return target


HOSTILE = "we ird 'q\" ;$(touch PWNED)`touch PWNED2`"


def only_submission(cwd: Path, executor: str = "vanilla_lxplus") -> Submission:
    """The one submission made from `cwd` (`.higgs_dna_<executor>/<analysis>_<time>`)."""
    (folder,) = list((cwd / f".higgs_dna_{executor}").iterdir())
    return Submission.load(folder)


def run_like_the_schedd(submission: Submission, check: bool = True) -> list[int]:
    """For every submit file: parse it, and run its executable with each proc's expanded arguments.

    `check`: fail at the first job that fails; otherwise run them all (as a schedd does) and return the exit codes.
    """
    codes = []
    for sub in sorted(submission.jobs_folder.glob("*.sub")):
        text = sub.read_text()
        for proc in range(int(htcondor2.Submit(text).getQArgs())):
            description = htcondor2.Submit(text)
            description["ProcId"] = str(proc)
            executable, arguments = description.expand("executable"), description.expand("arguments")
            done = subprocess.run([executable, *arguments.split()], check=check, capture_output=True, timeout=600)
            codes.append(done.returncode)
    return codes


def run_iteratively(analysis: Path, dump: Path) -> None:
    """The same analysis with --executor iterative: the rows every job array must reproduce."""
    run_analysis_main(
        [
            "--json-analysis",
            str(analysis),
            "--dump",
            str(dump),
            "--executor",
            "iterative",
            "--chunk",
            "20000",
            "--no-progress",
        ]
    )


def merged_rows(dump: Path, sample: str) -> dict:
    table = pq.read_table(dump / "merged" / sample / "nominal" / "merged.parquet")
    return sort_rows({name: table.column(name).to_numpy() for name in table.column_names})


def assert_complete_and_identical(dump: Path, reference: Path, samples) -> None:
    checks = check_dump(dump)
    assert all(c.ok and c.complete == c.planned for c in checks.values()), checks
    for sample in samples:
        assert_same_rows(read_rows(dump, sample), read_rows(reference, sample))


def completed_chunks(dump: Path) -> int:
    return len(list((dump / LEDGER).glob("chunks/*/*.done")))


def status_counts(folder: Path, ask_queue: bool = True) -> dict[str, tuple[int, ...]]:
    """Per sample, what `status` reports, from its data: (done, failed, unfinished, queued, running, gone, events)."""
    from coffea_dispatch.batch.status import submission_status

    _, statuses, _ = submission_status(folder, ask_queue=ask_queue)
    return {
        s.sample: (s.done, s.failed, s.unfinished, s.queued, s.running, s.gone, s.events) for s in statuses.values()
    }
