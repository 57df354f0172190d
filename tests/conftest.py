"""Fixtures build their data (generated NanoAOD, JSON files); the real CMS files come from ../shared."""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import uproot

from coffea_dispatch.inputs.compat import LEGACY_COFFEA
from coffea_dispatch.synthetic.generator import SampleSpec, distinct_copy, make_sample
from nanoaod_files import nanoaod_from_coffea_sdist
from services import summary_lines

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))  # tests/reference.py, tests/user_processors.py

REPO = TESTS.parent
SHARED_NANOAOD = (REPO.parent / "shared/data/nanoaod").resolve()
# the user's cache, read before the session's private XDG_CACHE_HOME replaces it: downloads survive test runs
TEST_DATA_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "coffea-dispatch-tests"
ROW_KEYS = ["run", "luminosityBlock", "event"]
# cuts loose enough that the 40-event real files give candidates
FAULT_CHUNK = 5000  # 24 chunks over the 120k generated events: room for faults between them
FAULT_TOTAL_CHUNKS = 24
LOOSE_CUTS = {
    "photon_pt_min": 5.0,
    "photon_mvaid_min": -1.0,
    "photon_hoe_max": 10.0,
    "require_electron_veto": False,
    "lead_pt_min": 8.0,
    "sublead_pt_min": 5.0,
    "lead_pt_over_mass_min": 0.0,
    "sublead_pt_over_mass_min": 0.0,
    "mass_min": 0.0,
    "mass_max": 1000.0,
}


# uproot 4 reads a local path through urllib, which cuts the last path segment at ';' (URL parameters);
# tests/test_bad_input.py checks the one-line error it gets instead
needs_uproot5_for_semicolons = pytest.mark.skipif(
    uproot.__version__.startswith("4."),
    reason="uproot 4 (coffea 0.7) cannot open a file whose name contains ';': hostile file names need uproot 5",
)
# what no coffea code decides (TLS, the dashboard, credentials, option checks, the test services) is tested in the
# coffea 2026 pass only: CI runs the suite twice and must stay under 30 minutes
independent_of_coffea = pytest.mark.skipif(
    LEGACY_COFFEA, reason="does not depend on coffea's generation: tested in the coffea 2026 pass (CI time)"
)
HIGGSDNA_LIKE = TESTS / "higgsdna_like"  # a HiggsDNA stand-in: importable only through the fixture below


@pytest.fixture
def higgsdna(monkeypatch) -> Path:
    """`higgs_dna` importable here, in forked workers and in batch jobs (PYTHONPATH), for one test only."""
    monkeypatch.syspath_prepend(str(HIGGSDNA_LIKE))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(HIGGSDNA_LIKE), os.environ.get("PYTHONPATH")])))
    yield HIGGSDNA_LIKE
    forget_higgsdna()


def forget_higgsdna() -> None:
    """Later tests must not find the stand-in: importlib looks in sys.modules before sys.path."""
    for name in [m for m in sys.modules if m == "higgs_dna" or m.startswith("higgs_dna.")]:
        del sys.modules[name]


@pytest.fixture(scope="session", autouse=True)
def ctrl_c_delivered():
    """The tests send Ctrl-C to runs in this process and to the commands it starts. A test run started in the
    background by a non-interactive shell (`make test &`, a CI step) inherits SIGINT ignored, as every child
    would: the runs then rightly keep ignoring it (as under nohup), and those tests cannot tell anything."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield


@pytest.fixture(scope="session", autouse=True)
def no_core_files():
    """The tests crash processes on purpose (a chunk that aborts its Dask worker): where core dumps are enabled
    (a CI machine's `ulimit -c unlimited`), each would leave a core file of hundreds of MB in the clone."""
    previous = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (0, previous[1]))
    yield
    resource.setrlimit(resource.RLIMIT_CORE, previous)


@pytest.fixture(scope="session", autouse=True)
def private_metadata_cache(tmp_path_factory):
    """Runs keep input metadata under $XDG_CACHE_HOME: the tests' own, never the user's ~/.cache (subprocesses
    and batch jobs inherit it)."""
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    yield
    if previous is None:
        del os.environ["XDG_CACHE_HOME"]
    else:
        os.environ["XDG_CACHE_HOME"] = previous


@pytest.fixture(scope="session")
def shared_nanoaod() -> Path:
    """The real NanoAOD files of ../shared, or on a fresh clone without it the same files from coffea's sdist."""
    if SHARED_NANOAOD.is_dir():
        return SHARED_NANOAOD
    return nanoaod_from_coffea_sdist(TEST_DATA_CACHE)


@pytest.fixture(scope="session")
def generated(tmp_path_factory) -> dict[str, list[str]]:
    """120k generated events in three files and two samples (signal-rich and background)."""
    folder = tmp_path_factory.mktemp("generated")
    specs = {
        "Signal": [SampleSpec(events=50_000, seed=7, signal_fraction=0.6)],
        "Background": [
            SampleSpec(events=40_000, seed=8, signal_fraction=0.0, run=2),
            SampleSpec(events=30_000, seed=9, signal_fraction=0.05, run=3),
        ],
    }
    samples = {}
    for name, sample_specs in specs.items():
        samples[name] = [str(make_sample(folder / f"{name}_{i}.root", spec)) for i, spec in enumerate(sample_specs)]
    return samples


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """A real single-node SLURM cluster (tests/slurm_cluster.py), shared by every test that submits to it."""
    from slurm_cluster import SlurmCluster, unavailable_reason

    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def on_slurm(slurm, tmp_path, monkeypatch):
    """The test runs in its own folder with sbatch/squeue talking to the test cluster."""
    for key, value in slurm.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def xrootd(generated):
    """A real XRootD server on loopback (tests/xrootd_server.py) serving copies of the generated files."""
    from xrootd_server import XRootDServer, unavailable_reason

    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    server = XRootDServer()
    server.urls = {sample: [server.add(f) for f in files] for sample, files in generated.items()}
    server.start()
    yield server
    server.remove()


def many_inputs(folder: Path, how_many: int, events: int, seed: int) -> list[str]:
    """`how_many` distinct input files made from two generated ones: byte copies, each with a ROOT UUID of its
    own (a sample listing one file twice, through links or as copies, is refused)."""
    sources = [make_sample(folder / f"source_{i}.root", SampleSpec(events=events, seed=seed + i)) for i in range(2)]
    return [str(distinct_copy(sources[n % 2], folder / f"input_{n:04d}.root")) for n in range(how_many)]


def write_analysis(folder: Path, samples: dict, workflow: str = "base", metaconditions=None, **extra) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "samples.json").write_text(json.dumps(samples))
    analysis = {"samplejson": "samples.json", "workflow": workflow, **extra}
    if metaconditions is not None:
        analysis["metaconditions"] = metaconditions
    path = folder / "analysis.json"
    path.write_text(json.dumps(analysis))
    return path


def read_rows(dump: Path, sample: str) -> dict[str, np.ndarray]:
    """All rows of a sample's parquet outputs, sorted by (run, luminosityBlock, event)."""
    files = sorted((dump / sample / "nominal").glob("*.parquet"))
    tables = [pq.read_table(f) for f in files]
    if not tables:
        return {}
    columns = {name: np.concatenate([t.column(name).to_numpy() for t in tables]) for name in tables[0].column_names}
    return sort_rows(columns)


def sort_rows(rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    order = np.lexsort(tuple(np.asarray(rows[k]) for k in reversed(ROW_KEYS)))
    return {k: np.asarray(v)[order] for k, v in rows.items()}


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Content and modification time of every file below `folder`, to prove nothing was touched."""
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def reference_dump(generated, tmp_path_factory) -> Path:
    """The uninterrupted iterative run every faulty run must reproduce."""
    from coffea_dispatch.pipeline.run import RunOptions, run_analysis

    folder = tmp_path_factory.mktemp("reference")
    dump = folder / "out"
    options = RunOptions(json_analysis=str(write_analysis(folder, generated)), dump=str(dump), executor="iterative")
    run_analysis(dataclasses.replace(options, chunk=FAULT_CHUNK, progress=False, plot=False))
    return dump


@pytest.fixture
def mounted(tmp_path):
    """mount(options) -> a fresh tmpfs mounted with them; skipped where mounting is not allowed."""
    mounts = []

    def mount(options: str) -> Path:
        if os.geteuid() != 0 or shutil.which("mount") is None:
            pytest.skip("mounting a tmpfs needs root")
        folder = tmp_path / f"mount-{len(mounts)}"
        folder.mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)]).returncode != 0:
            pytest.skip("mount -t tmpfs is not permitted here")
        mounts.append(folder)
        return folder

    yield mount
    for folder in mounts:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def pytest_terminal_summary(terminalreporter) -> None:
    """The last lines of `make test`: how many tests a missing service (SLURM, XRootD) kept from running."""
    reasons = [str(report.longrepr[-1]) for report in terminalreporter.stats.get("skipped", [])]
    for line in summary_lines(reasons):
        terminalreporter.write_line(line, yellow=True, bold=True)


LIVENESS_SECONDS = 240  # not a timing assertion: a refused batch job used to leave the caller waiting forever


def ends_by_itself(function: Callable[[], Any]) -> Any:
    """`function()`, failing the test if it is still waiting after LIVENESS_SECONDS (an alarm: the command line
    holds Ctrl-C's handler, which only the main thread may)."""

    def still_waiting(signum: int, frame: object) -> None:
        pytest.fail(f"still waiting after {LIVENESS_SECONDS} s for workers the batch system refused or never started")

    previous = signal.signal(signal.SIGALRM, still_waiting)
    signal.alarm(LIVENESS_SECONDS)
    try:
        return function()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
