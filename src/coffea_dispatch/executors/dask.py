"""Dask executors: a distributed Client on a cluster of the kind the executor names.

The cluster lives exactly as long as the `with` block. Its real dashboard address is announced as soon as it
is up; chunks are submitted as the run learns of them (executors/streaming.py), and a worker killed by a
chunk (KilledWorker) comes back as a KilledWorkerError carrying that chunk, so the run can diagnose it instead
of printing Dask's guesswork.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import dask

from coffea_dispatch.batch.registry import backend_for
from coffea_dispatch.errors import DispatchError, KilledWorkerError
from coffea_dispatch.executors.credentials import run_credentials
from coffea_dispatch.executors.dashboard import (
    dashboard_lines,
    report_template_compatible,
    require_token,
    with_token,
)
from coffea_dispatch.executors.first_worker import first_worker, refused_submissions
from coffea_dispatch.executors.kinds import (
    DEFAULT_BATCH_JOBS,
    ExecutorKind,
    check_submit_command,
    first_batch_workers,
    metadata_killed,
    worker_prologue,
)
from coffea_dispatch.executors.progress import Titled
from coffea_dispatch.executors.streaming import Failed, Stream
from coffea_dispatch.inputs.planning import FileTask
from coffea_dispatch.options import (
    DEFAULT_JOB_MEMORY,
    BatchResources,
    ClusterSize,
    DaskOptions,
    ExecutorState,
    ProcessOptions,
)
from coffea_dispatch.result_keys import KILLED_WORKERS_KEY
from coffea_dispatch.signals import interruptible

MAX_KILLER_CHUNKS = 5


@dataclass(kw_only=True)
class DaskLocalSettings(DaskOptions, ClusterSize, ProcessOptions, ExecutorState):
    """dask/local: a LocalCluster of --scaleout workers of -j threads and --memory each."""


@dataclass(kw_only=True)
class DaskSettings(DaskOptions, BatchResources, ProcessOptions, ExecutorState):
    """A Dask cluster of batch worker jobs (or one attached to), sized as every batch job is."""


@dataclass(kw_only=True)
class DaskCasaSettings(DaskOptions, ClusterSize, ProcessOptions, ExecutorState):
    """coffea-casa's own cluster, attached to: -s says how many workers to count on."""


@dataclass
class DaskRun(Titled):
    """coffea's executor interface, `executor(items, function, accumulator)`, on a distributed Client, with
    follow-ups submitted as soon as their FileTask returns (executors/streaming.py). A chunk that kills its
    workers (KilledWorker) is set aside and returned as a KilledWorkerError under KILLED_WORKERS_KEY, for the run
    to diagnose; the other chunks go on."""

    client: Any
    worker_memory_bytes: int | None
    n_workers: int

    def __call__(self, items, function, accumulator):
        from distributed import as_completed

        killers: list[KilledWorkerError] = []

        def submit(items: list, keys: list[str], priority: int) -> list:
            # the function is pickled once per batch (one message), not per task; as a task of its own (or
            # scattered), the first tasks would queue behind the worker holding it: measured, items 0-4 of 64
            # started in the second wave
            return self.client.map(function, items, key=keys, priority=priority, pure=False)

        def failed(item: Any, error: BaseException) -> Failed:
            if type(error).__name__ != "KilledWorker":
                raise error
            return self._killed(item, killers)

        stream = Stream(submit, as_completed, lambda future: future.result(), self.client.cancel, failed)
        return stream(items, accumulator, self.progress)

    def _killed(self, item: Any, killers: list[KilledWorkerError]) -> Failed:
        """A FileTask that killed its workers runs again describing only, its chunks handed back one by one (so
        the next death names the chunk that kills); a chunk is left out, and named."""
        if isinstance(item, FileTask) and item.chunks_here > 0:
            return Failed([dataclasses.replace(item, chunks_here=0)], {})
        if isinstance(item, FileTask) or not hasattr(item, "entrystart"):  # ours, or coffea's preprocessing item
            raise DispatchError(
                metadata_killed(item.filename, "the Dask workers (KilledWorker)", self.worker_memory_bytes)
            )
        killers.append(KilledWorkerError(item, self.worker_memory_bytes))
        if len(killers) >= MAX_KILLER_CHUNKS:
            raise DispatchError(f"{len(killers)} chunks killed their workers; stopping (last: {killers[-1].message})")
        return Failed([], {KILLED_WORKERS_KEY: [killers[-1]]})


def _pythonpath_for_workers() -> str:
    """Local workers import what this process can: user processors given as `module:Class` included."""
    entries = [p for p in sys.path if p and os.path.isdir(p)]
    existing = os.environ.get("PYTHONPATH")
    return os.pathsep.join(([existing] if existing else []) + entries)


START_METHOD_VARIABLE = "DASK_DISTRIBUTED__WORKER__MULTIPROCESSING_METHOD"


def local_start_method() -> str:
    """How dask/local starts its workers: fork where available, unless the user chose otherwise.

    Forked workers inherit coffea already imported and the input files the planner opened, like our futures
    pool: measured 0.4 s instead of 1.0 s to start two workers, 0.05 s instead of 0.35 s to stop them, and no
    per-worker re-read of a 1,500-branch TTree. Set DASK_DISTRIBUTED__WORKER__MULTIPROCESSING_METHOD=spawn
    to get distributed's default back.
    """
    chosen = os.environ.get(START_METHOD_VARIABLE)
    if chosen:
        return chosen
    return "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"


def _local_cluster(settings: Any):
    from distributed import LocalCluster

    n_workers = settings.scaleout or os.cpu_count() or 1
    return LocalCluster(
        n_workers=n_workers,
        threads_per_worker=settings.workers or 1,
        memory_limit=settings.memory or "auto",
        processes=True,
        host="127.0.0.1",  # the scheduler too: its workers are on this machine
        dashboard_address=dashboard_address(settings),
        security=settings.security,
        silence_logs=logging.ERROR,
        env={"PYTHONPATH": _pythonpath_for_workers()},
    )


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def dashboard_address(settings: Any) -> str:
    """HOST:PORT the dashboard binds: --dashboard-address (HOST, or HOST:PORT), the port from --dashboard-port."""
    host, colon, port = settings.dashboard_address.rpartition(":")
    if colon and port.isdigit():
        return f"{host}:{port}"
    return f"{settings.dashboard_address}:{settings.dashboard_port}"


def dashboard_link(client, settings: Any, attached: bool) -> str:
    """The dashboard's URL where it really listens: distributed names the scheduler's host, which is the
    login node's interface for a batch cluster, while our dashboards listen on --dashboard-address."""
    link = client.dashboard_link
    host = dashboard_address(settings).rpartition(":")[0]
    if attached or host in ("", "0.0.0.0", "::"):
        return link
    parts = urlsplit(link)
    return parts._replace(netloc=f"{host}:{parts.port}").geturl() if parts.port else link


def exposure_warnings(settings: Any) -> list[str]:
    """One line for each way this run lets others in: a dashboard on a shared interface, an unencrypted and
    unauthenticated scheduler on another host."""
    lines = []
    host = dashboard_address(settings).rpartition(":")[0]
    if host not in LOOPBACK:
        lines.append(
            f"warning: the Dask dashboard listens on {host or 'every interface'}: anyone who can reach it sees your "
            "jobs, their logs and data; the default (127.0.0.1, through the printed ssh tunnel) keeps it yours"
        )
    address = settings.scheduler_address or ""
    scheduler_host = address.removeprefix("tcp://").rsplit(":", 1)[0].strip("[]")
    if address.startswith("tcp://") and scheduler_host not in LOOPBACK:
        lines.append(
            f"warning: --scheduler-address {address} is plain TCP: anyone who can reach that port can run code as "
            "you; use tls:// with the cluster's TLS settings (as coffea-casa does)"
        )
    return lines


def jobqueue_options(settings: Any) -> dict[str, Any]:
    """What every batch-system cluster gets: worker size, dashboard, proxy and Python path for the jobs."""
    cores = settings.workers or 1
    return {
        "cores": cores,
        "processes": cores,
        "memory": settings.memory or DEFAULT_JOB_MEMORY,
        "python": sys.executable,
        "log_directory": settings.log_directory,
        # the scheduler listens where the worker jobs reach it, but only holders of the run's credentials get in
        "protocol": "tls://",
        "security": settings.security,
        "scheduler_options": {"dashboard_address": dashboard_address(settings)},
        "job_script_prologue": worker_prologue(settings),
    }


def _lpc_cluster(settings: Any):
    raise DispatchError(
        "dask/lpc needs lpcjobqueue, the LPC's own package (not on PyPI): on an LPC node start its cluster and "
        "pass the scheduler with --scheduler-address tcp://host:port"
    )


# coffea-casa runs the scheduler beside the notebook; its TLS settings come from the Dask configuration there
CASA_SCHEDULER = "tls://localhost:8786"
CASA_CACHE_HOST = "xcache"  # coffea-casa reads remote files through its XCache, as HiggsDNA's dask/casa does


def through_casa_cache(url: str) -> str:
    """root://any.host:1094//store/f.root -> root://xcache//store/f.root (local paths unchanged)."""
    scheme, separator, rest = url.partition("://")
    if not separator or scheme not in ("root", "xroot"):
        return url
    _, slash, path = rest.partition("/")
    return f"{scheme}://{CASA_CACHE_HOST}{slash}{path}"


def read_through_casa_cache(analysis) -> list[str]:
    """dask/casa: root:// inputs (and their replicas) are read through coffea-casa's XCache; a note if so."""
    before = analysis.samples
    analysis.rename_files(through_casa_cache)  # with its replicas, entry ranges, trees and steps
    if analysis.samples == before:
        return []
    return [f"dask/casa: root:// inputs are read through coffea-casa's cache (root://{CASA_CACHE_HOST}/...)"]


@contextlib.contextmanager
def start_cluster(kind: DaskKind, settings: Any) -> Iterator[Any]:
    """The kind's cluster (dask/local here, or the batch system's cluster of worker jobs, built by its backend),
    secured with TLS credentials made for it (executors/credentials.py), deleted after the cluster is closed."""
    with (
        run_credentials(settings.credentials_directory) as security,
        kind.new_cluster(dataclasses.replace(settings, security=security)) as cluster,
    ):
        yield cluster


def _workers(client) -> list[dict]:
    return list(client.scheduler_info().get("workers", {}).values())


def _threads(client) -> int:
    """Chunks that can run at once: every worker's threads."""
    return sum(w.get("nthreads", 1) for w in _workers(client)) or 1


def _performance_report(filename: str):
    from distributed import performance_report

    return performance_report(filename=filename)


def _worker_memory_bytes(client) -> int | None:
    limits = [w.get("memory_limit") for w in _workers(client) if w.get("memory_limit")]
    return min(limits) if limits else None


@contextlib.contextmanager
def dask_client(kind: DaskKind, settings: Any, announce: Callable[[str], None]) -> Iterator[Any]:
    """A distributed Client (the default one while the block runs) on the kind's cluster, started secured
    (TLS, the dashboard's token) or attached to, its dashboard and tunnel announced, its first worker up:
    what a run executes on (`dask_executor`) and what `coffea_dispatch.cluster()` hands a dask-awkward user."""
    from distributed import Client

    # distributed's Nanny would otherwise write MALLOC_TRIM_THRESHOLD_=65536 into this process's environment,
    # and every process started after it (our futures pools too) then reads wide NanoAOD files ~3.6x slower
    config = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None, **kind.config()}
    with dask.config.set(config), contextlib.ExitStack() as stack:
        for line in exposure_warnings(settings):
            announce(line)
        address = settings.scheduler_address or kind.default_scheduler
        refused = stack.enter_context(refused_submissions())
        if address:  # an existing cluster (coffea-casa, or one started by hand): attach, never shut it down
            client = stack.enter_context(_attach(address))
            link = dashboard_link(client, settings, attached=True)
        else:
            check_submit_command(settings, "or use --scheduler-address to attach to a running Dask cluster")
            cluster = stack.enter_context(start_cluster(kind, settings))
            token = require_token(cluster.scheduler.http_server)  # our scheduler runs in this process
            report_template_compatible()  # and so does its performance report
            client = stack.enter_context(Client(cluster))
            kind.scale(cluster, settings, announce)
            link = with_token(dashboard_link(client, settings, attached=False), token)
        for line in dashboard_lines(link, settings.show_tunnel):
            announce(line)
        first_worker(client, None if address else cluster, settings, refused, announce)
        refused.stop()  # later refusals (more jobs than a quota allows) are distributed's to log
        if settings.dask_report:  # one report for the whole block: every call, every task
            stack.enter_context(_performance_report(settings.dask_report))
        yield client


@contextlib.contextmanager
def dask_executor(kind: DaskKind, settings: Any, announce: Callable[[str], None]) -> Iterator[DaskRun]:
    with dask_client(kind, settings, announce) as client:
        yield DaskRun(client, _worker_memory_bytes(client), _threads(client), status=settings.status)


@contextlib.contextmanager
def _attach(address: str):
    from distributed import Client

    try:
        client = Client(address, timeout="20s")
    except OSError as error:
        raise DispatchError(f"--scheduler-address {address}: cannot connect ({error})") from None
    except (TypeError, ValueError) as error:  # e.g. tls:// without the TLS settings (coffea-casa provides them)
        raise DispatchError(f"scheduler {address}: cannot connect ({error})") from None
    try:
        yield client
    finally:
        client.close()


class DaskKind(ExecutorKind):
    """A Dask cluster of batch worker jobs, adapting between --scaleout and --max-scaleout jobs, secured and
    streamed to (`dask_executor`); each Dask kind says what it does differently."""

    settings: type = DaskSettings
    default_scheduler: str | None = None  # the scheduler to attach to when --scheduler-address is not given

    def config(self) -> dict[str, Any]:
        """Dask configuration for the run, beside what every kind sets."""
        return {}

    def new_cluster(self, settings: Any) -> Any:
        with interruptible():  # importing dask-jobqueue takes Ctrl-C's handler: it gets it back here
            return backend_for(settings.name).dask_cluster(settings.name, settings, jobqueue_options(settings))

    def scale(self, cluster: Any, settings: Any, announce: Callable[[str], None]) -> None:
        """Batch clusters adapt between --scaleout and --max-scaleout jobs (no unbounded growth by default).

        In jobs, not workers: `adapt(minimum=1)` counts workers, so with --workers 2 per job it kept retiring
        one worker of the only job, which ends the whole job and both its running chunks, then asked for a new
        job."""
        minimum = settings.scaleout or DEFAULT_BATCH_JOBS
        maximum = max(minimum, settings.max_scaleout or minimum)
        cluster.adapt(minimum_jobs=minimum, maximum_jobs=maximum)
        announce(f"Dask: {minimum} to {maximum} {settings.name.split('/')[1]} worker job(s) requested")

    def expected_workers(self, settings: Any) -> int:
        return first_batch_workers(settings)

    def open(self, settings: Any, n_items: int, announce: Callable[[str], None]):
        return dask_executor(self, settings, announce)


class DaskLocalKind(DaskKind):
    """dask/local: a LocalCluster on this machine, its workers forked."""

    settings = DaskLocalSettings

    def names(self) -> tuple[str, ...]:
        return ("dask/local",)

    def config(self) -> dict[str, Any]:
        # each worker's own web server (health, Prometheus metrics) would answer every local account: none
        return {"distributed.worker.multiprocessing-method": local_start_method(), "distributed.worker.http.routes": []}

    def new_cluster(self, settings: DaskLocalSettings) -> Any:
        return _local_cluster(settings)

    def scale(self, cluster: Any, settings: Any, announce: Callable[[str], None]) -> None:
        pass  # --scaleout workers from the start

    def expected_workers(self, settings: DaskLocalSettings) -> int:
        return (settings.scaleout or os.cpu_count() or 1) * (settings.workers or 1)


class DaskCasaKind(DaskKind):
    """dask/casa: coffea-casa's cluster, beside the notebook; remote inputs read through its XCache."""

    settings = DaskCasaSettings
    default_scheduler = CASA_SCHEDULER

    def names(self) -> tuple[str, ...]:
        return ("dask/casa",)

    def prepare_inputs(self, analysis: Any) -> list[str]:
        return read_through_casa_cache(analysis)


class DaskLpcKind(DaskKind):
    """dask/lpc: the LPC's lpcjobqueue cluster (not on PyPI), or one attached to with --scheduler-address."""

    def names(self) -> tuple[str, ...]:
        return ("dask/lpc",)

    def new_cluster(self, settings: Any) -> Any:
        return _lpc_cluster(settings)


class DaskBatchKind(DaskKind):
    """`dask/<system>`: every batch backend's Dask clusters (dask-jobqueue's, built by the backend)."""

    def names(self) -> tuple[str, ...]:
        from coffea_dispatch.batch.registry import backends

        return tuple(name for backend in backends() for name in backend.dask_executors)

    def owns(self, name: str) -> bool:
        backend = backend_for(name)  # built-in backends first: no plugin is read for theirs
        return backend is not None and name in backend.dask_executors
