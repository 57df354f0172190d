"""Dask executors: coffea's DaskExecutor on a distributed Client, one cluster kind per executor name.

The cluster lives exactly as long as the `with` block. Its real dashboard address is announced as soon as it
is up, and a worker killed by a chunk (KilledWorker) comes back as KilledWorkerError carrying that chunk, so
the run can diagnose it instead of printing Dask's guesswork.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import dask
from coffea.processor import DaskExecutor
from coffea.processor.executor import WorkItem

from coffea_dispatch.errors import DispatchError
from coffea_dispatch.executors import ExecutorSettings
from coffea_dispatch.executors.dashboard import dashboard_lines

KILLED_ITEM = re.compile(r"Work item chunk(\{.*\}) caused a KilledWorker exception")


class TrackedWorkItem(WorkItem):
    """A WorkItem whose repr is JSON: coffea names the item that killed a worker only by its repr."""

    def __repr__(self) -> str:
        fields = {
            k: getattr(self, k) for k in ("dataset", "filename", "treename", "entrystart", "entrystop", "fileuuid")
        }
        return "chunk" + json.dumps(fields)


def tracked(item: WorkItem) -> TrackedWorkItem:
    return TrackedWorkItem(
        item.dataset,
        item.filename,
        item.treename,
        item.entrystart,
        item.entrystop,
        item.fileuuid,
        item.usermeta,
        item.preload,
    )


class KilledWorkerError(DispatchError):
    """A chunk killed the Dask workers that ran it (crash or memory) more often than Dask allows."""

    def __init__(self, item: WorkItem, worker_memory_bytes: int | None):
        super().__init__(
            f"{item.filename} (entries {item.entrystart}-{item.entrystop}) killed the Dask workers that ran it "
            "(KilledWorker)"
        )
        self.item = item
        self.worker_memory_bytes = worker_memory_bytes

    def __reduce__(self):
        return (type(self), (self.item, self.worker_memory_bytes))


def killed_item(error: BaseException) -> WorkItem | None:
    match = KILLED_ITEM.search(str(error))
    if match is None:
        return None
    fields = json.loads(match.group(1))
    return WorkItem(
        fields["dataset"],
        fields["filename"],
        fields["treename"],
        fields["entrystart"],
        fields["entrystop"],
        fields["fileuuid"],
    )


@dataclass
class DaskRun:
    """coffea's DaskExecutor, with KilledWorker turned into KilledWorkerError(chunk)."""

    executor: DaskExecutor
    worker_memory_bytes: int | None
    n_workers: int
    report: str | None = None

    def __call__(self, items, function, accumulator):
        report = self._performance_report()
        try:
            with report:
                return self.executor([tracked(i) for i in items], function, accumulator)
        except RuntimeError as error:
            item = killed_item(error)
            if item is None:
                raise
            raise KilledWorkerError(item, self.worker_memory_bytes) from None

    def _performance_report(self):
        if not self.report:
            return contextlib.nullcontext()
        from distributed import performance_report

        return performance_report(filename=self.report)


def _pythonpath_for_workers() -> str:
    """Local workers import what this process can: user processors given as `module:Class` included."""
    entries = [p for p in sys.path if p and os.path.isdir(p)]
    existing = os.environ.get("PYTHONPATH")
    return os.pathsep.join(([existing] if existing else []) + entries)


def _local_cluster(settings: ExecutorSettings):
    from distributed import LocalCluster

    n_workers = settings.scaleout or os.cpu_count() or 1
    dashboard = f":{settings.dashboard_port if settings.dashboard_port is not None else 8787}"
    return LocalCluster(
        n_workers=n_workers,
        threads_per_worker=settings.workers or 1,
        memory_limit=settings.memory or "auto",
        processes=True,
        dashboard_address=dashboard,
        silence_logs=logging.ERROR,
        env={"PYTHONPATH": _pythonpath_for_workers()},
    )


CLUSTERS: dict[str, Callable[[ExecutorSettings], Any]] = {"dask/local": _local_cluster}


def _workers(client) -> list[dict]:
    return list(client.scheduler_info().get("workers", {}).values())


def _worker_memory_bytes(client) -> int | None:
    limits = [w.get("memory_limit") for w in _workers(client) if w.get("memory_limit")]
    return min(limits) if limits else None


@contextlib.contextmanager
def dask_executor(settings: ExecutorSettings, announce: Callable[[str], None]) -> Iterator[DaskRun]:
    from distributed import Client

    # distributed's Nanny would otherwise write MALLOC_TRIM_THRESHOLD_=65536 into this process's environment,
    # and every process started after it (our futures pools too) then reads wide NanoAOD files ~3.6x slower
    with (
        dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}),
        contextlib.ExitStack() as stack,
    ):
        if settings.scheduler_address:  # an existing cluster (coffea-casa style): attach, never shut it down
            client = stack.enter_context(_attach(settings.scheduler_address))
        else:
            cluster = stack.enter_context(CLUSTERS[settings.name](settings))
            client = stack.enter_context(Client(cluster))
        for line in dashboard_lines(client.dashboard_link, show_tunnel=settings.show_tunnel):
            announce(line)
        executor = DaskExecutor(client=client, status=settings.status, unit="chunk", desc="Processing")
        yield DaskRun(executor, _worker_memory_bytes(client), len(_workers(client)), settings.dask_report)


@contextlib.contextmanager
def _attach(address: str):
    from distributed import Client

    try:
        client = Client(address, timeout="20s")
    except OSError as error:
        raise DispatchError(f"--scheduler-address {address}: cannot connect ({error})") from None
    try:
        yield client
    finally:
        client.close()
