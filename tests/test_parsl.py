"""HiggsDNA's parsl executors: coffea's ParslExecutor with worker jobs on the real SLURM of the tests
(parsl/slurm); parsl/condor's configuration checked without HTCondor daemons."""

from __future__ import annotations

import pytest

from coffea_dispatch.errors import DispatchError
from coffea_dispatch.executors import ExecutorSettings
from coffea_dispatch.executors import parsl as parsl_backend
from conftest import write_analysis
from helpers import make_proxy, rows_on_slurm_equal_iterative
from helpers import run_analysis_with as run

pytestmark = pytest.mark.slow  # every test here starts workers, a cluster or a server


def test_parsl_slurm_writes_the_rows_of_the_iterative_run(slurm, generated, shared_nanoaod, tmp_path, monkeypatch):
    samples = {**generated, "DY": [str(shared_nanoaod / "nano_dy.root")]}
    options = {"memory": "2GB", "queue": "debug"}
    result = rows_on_slurm_equal_iterative(slurm, monkeypatch, tmp_path, samples, "parsl/slurm", **options)
    assert result.events == 120_040
    assert list((tmp_path / "logs" / "parsl").iterdir())  # parsl's run folder went where --log-directory says


def test_parsl_condor_configuration(tmp_path):
    proxy = make_proxy(tmp_path, days=30)
    settings = ExecutorSettings(
        executor="parsl/condor",
        workers=3,
        memory="6GB",
        walltime="02:00:00",
        queue="longlunch",
        voms=str(proxy),
        scaleout=2,
        max_scaleout=5,
        remote_inputs=True,
        log_directory=str(tmp_path / "logs"),
    )
    config = parsl_backend.parsl_config(settings)
    (executor,) = config.executors
    provider = executor.provider
    assert (provider.init_blocks, provider.max_blocks) == (2, 5)
    assert provider.cores_per_slot == 3 and provider.mem_per_slot == 6
    assert '+JobFlavour = "longlunch"' in provider.scheduler_options
    assert f"export X509_USER_PROXY={proxy}" in provider.worker_init
    assert executor.max_workers_per_node == 3


def test_parsl_without_the_submit_command_is_one_line(generated, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    analysis = write_analysis(tmp_path, {"Signal": generated["Signal"]})
    with pytest.raises(DispatchError, match="'parsl/condor' submits worker jobs with condor_submit, which is not"):
        run(analysis, None, "parsl/condor")
