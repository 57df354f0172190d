"""What kind of executor a name is, and what a launcher of batch workers needs from its backend (a leaf of the
executors: the Dask and parsl launchers and the registry above them import it).
"""

from __future__ import annotations

import os

from coffea_dispatch.batch.backend import BatchBackend
from coffea_dispatch.batch.registry import backend_for
from coffea_dispatch.errors import DispatchError
from coffea_dispatch.inputs.proxy import grid_proxy, proxy_exports
from coffea_dispatch.options import ExecutorSettings

LOCAL_EXECUTORS = ("iterative", "futures")
DASK_LOCAL, DASK_CASA, DASK_LPC = "dask/local", "dask/casa", "dask/lpc"
MACHINE_EXECUTORS = (*LOCAL_EXECUTORS, DASK_LOCAL, DASK_CASA, DASK_LPC)  # need no batch backend
DEFAULT_BATCH_JOBS = 6  # HiggsDNA's --scaleout default: worker jobs of a batch cluster (Dask or parsl)


def backend_of(name: str) -> BatchBackend | None:
    """The batch backend behind `name`; executors of this machine are known without loading any."""
    if name in MACHINE_EXECUTORS:
        return None
    return backend_for(name)


def check_submit_command(settings: ExecutorSettings, alternative: str) -> None:
    """Without the batch system's submit command no worker can ever start: say so instead of waiting forever."""
    backend = backend_of(settings.name)
    if backend is not None and not backend.available():
        raise DispatchError(
            f"executor '{settings.name}' submits worker jobs with {backend.submit_command}, which is not on PATH "
            f"here: run on a submit node of {backend.name}, {alternative}"
        )


def worker_prologue(settings: ExecutorSettings) -> list[str]:
    """What a batch worker job runs first: the grid proxy (checked to outlive the job when inputs are remote)
    and the import path of this process, so user processors given as `module:Class` import there too."""
    backend = backend_of(settings.name)
    lifetime = backend.max_job_seconds(settings.walltime, settings.queue) if backend else 0
    proxy = grid_proxy(settings.voms, needed=settings.remote_inputs, lifetime_needed=lifetime)
    pythonpath = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), os.getcwd()) if p)
    return [*proxy_exports(proxy), f"export PYTHONPATH={pythonpath}"]
