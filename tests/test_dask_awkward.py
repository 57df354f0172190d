"""coffea's dask-awkward users on our clusters: `dataset_tools.preprocess` + `apply_to_fileset` + a plain
`dask.compute` inside `coffea_dispatch.cluster(...)`, on dask/local and on real SLURM, give the histograms a
local compute (no cluster) gives.

It runs in .venv-dask-awkward (`make test-dask-awkward`), where `coffea[dask-awkward]` was installed first and
installing coffea-dispatch changed none of its packages; elsewhere dask-awkward is not installed (it requires
dask<2025.4, and .venv tests the newest dask) and the module is skipped.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("dask_awkward", reason="dask-awkward is installed in .venv-dask-awkward (make test-dask-awkward)")

import dask  # noqa: E402
import distributed  # noqa: E402
from coffea.dataset_tools import apply_to_fileset, preprocess  # noqa: E402
from coffea.nanoevents import NanoAODSchema  # noqa: E402

import coffea_dispatch  # noqa: E402
from conftest import TESTS  # noqa: E402
from dask_awkward_processor import PhotonHistograms  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:Passing a dict to preprocess is deprecated:DeprecationWarning"),
]
STEP_SIZE = 10_000  # 12 steps of the 120,000 generated events


def fileset_of(samples: dict[str, list[str]]) -> dict:
    """The fileset form coffea's preprocess takes: {dataset: {"files": {path: tree}}}."""
    return {name: {"files": {path: "Events" for path in files}} for name, files in samples.items()}


def histograms(fileset: dict, **compute: object) -> dict:
    """preprocess, apply_to_fileset, dask.compute: the AGC's and coffea 2024+ analyses' three steps."""
    available, _ = preprocess(fileset, step_size=STEP_SIZE, skip_bad_files=False, **compute)
    graphs = apply_to_fileset(PhotonHistograms(), available, schemaclass=NanoAODSchema)
    (computed,) = dask.compute(graphs, **compute)
    return {name: output[name] for name, output in computed.items()}


@pytest.fixture(scope="module")
def reference(generated) -> dict:
    """The same analysis computed here, with dask's synchronous scheduler: no cluster, no client."""
    return histograms(fileset_of(generated), scheduler="sync")


def assert_equal_histograms(got: dict, expected: dict) -> None:
    assert set(got) == set(expected) == {"Signal", "Background"}
    for name, outputs in expected.items():
        assert got[name]["events"] == outputs["events"] > 0
        for key in ("leading_pt", "photon_pt"):
            assert got[name][key].sum() == outputs[key].sum(), (name, key)
            assert got[name][key] == outputs[key], (name, key)  # axes and every bin's value (and variance)


def test_dask_awkward_analysis_on_dask_local(generated, reference, tmp_path):
    lines: list[str] = []
    report = tmp_path / "dask-report.html"
    with coffea_dispatch.cluster(
        "dask/local",
        scaleout=2,
        credentials_directory=str(tmp_path / "credentials"),
        dask_report=str(report),
        announce=lines.append,
    ) as client:
        assert distributed.default_client() is client  # a plain dask.compute runs there
        assert client.scheduler.address.startswith("tls://")
        credentials = Path(client.security.tls_ca_file)
        assert credentials.stat().st_mode & 0o777 == 0o600
        with distributed.get_task_stream() as tasks:
            got = histograms(fileset_of(generated))
        assert {task["worker"] for task in tasks.data} <= set(client.scheduler_info()["workers"])
        assert len(tasks.data) > 0
    assert_equal_histograms(got, reference)
    dashboard = [line for line in lines if line.startswith("Dask dashboard: ")]
    assert len(dashboard) == 1 and "/status?token=" in dashboard[0]
    assert not credentials.exists() and not credentials.parent.exists()  # deleted with the cluster
    assert b"<html" in report.read_bytes()[:2000].lower()  # distributed's performance report of the block
    with pytest.raises(ValueError):  # the block's client is no longer the default
        distributed.default_client()


def test_dask_awkward_analysis_on_dask_slurm(slurm, generated, reference, tmp_path, monkeypatch):
    for key, value in slurm.env.items():
        monkeypatch.setenv(key, value)
    # the worker jobs import the processor's module, as a user's would from their analysis folder
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p))
    lines: list[str] = []
    with coffea_dispatch.cluster(
        "dask/slurm",
        scaleout=1,
        workers=2,
        memory="4GB",
        walltime="00:20:00",
        log_directory=str(tmp_path / "logs"),
        show_tunnel=True,
        announce=lines.append,
    ) as client:
        assert client.scheduler.address.startswith("tls://")
        got = histograms(fileset_of(generated))
    assert_equal_histograms(got, reference)
    assert len(list((tmp_path / "logs").glob("*.err"))) == 1  # the workers really ran as one SLURM job
    assert any(line.startswith("from your laptop: ssh -N -L 8000:localhost:") for line in lines)
    assert any("/status?token=" in line for line in lines)
