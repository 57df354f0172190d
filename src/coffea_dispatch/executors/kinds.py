"""What every kind of executor is, as `batch.backend.BatchBackend` is what every batch system is: one class per
kind, in its own module (`local.py`, `dask.py`, `parsl.py`, `job_arrays.py`, or a plugin's), holding everything
that differs between kinds; `registry.py` finds the kind of a name, and nothing else branches on one.

A kind says which names it answers to, which options it reads (`settings`: a dataclass of the option spec's
fields, from which `coffea_dispatch.executor()` takes its keywords and a plugin's options reach the command
line), how its settings are sized, how many chunks it runs at once, and how it starts (`open`: a context
manager yielding a coffea-style executor, `executor(items, function, accumulator)`, with coffea's `copy()`).
Also here: what a launcher of batch workers (Dask and parsl on a batch system) needs from its backend.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import fields
from typing import Any, ClassVar

from coffea_dispatch.batch.registry import backend_for
from coffea_dispatch.errors import DispatchError
from coffea_dispatch.inputs.proxy import grid_proxy, proxy_exports
from coffea_dispatch.options import (
    DEFAULT_WALLTIME,
    ExecutorState,
    check_options,
    check_values,
    duration_seconds,
    memory_mb,
    options_of,
)

DEFAULT_BATCH_JOBS = 6  # HiggsDNA's --scaleout default: worker jobs of a batch cluster (Dask or parsl)
STATE_FIELDS = frozenset(f.name for f in fields(ExecutorState))  # what the run works out, not options


class ExecutorKind(ABC):
    """One kind of executor."""

    settings: ClassVar[type[ExecutorState]]  # its own options (and the run's state): `settings_from` builds it
    runs_in_process: ClassVar[bool] = False  # chunks run in this process, one after the other
    keeps_workers: ClassVar[bool] = True  # its workers outlive a call (a cluster); a local pool's do not
    job_array: ClassVar[bool] = False  # submits batch jobs and returns: results are collected later

    @abstractmethod
    def names(self) -> tuple[str, ...]:
        """The --executor names of this kind."""

    def owns(self, name: str) -> bool:
        return name in self.names()

    def keywords(self, name: str) -> frozenset[str]:
        """The options executor `name` of this kind reads: `coffea_dispatch.executor(name, ...)` takes these."""
        return frozenset(o.dest for o in options_of(self.settings)) - {"executor"}

    def settings_from(self, name: str, values: dict[str, Any]) -> ExecutorState:
        """This kind's settings for `name`, from option values (the run's, or the keywords of `executor()`);
        values of options it does not read are left out. Each value it reads, its batch backend's own options
        among them, is checked first (an executor plugin's too: its options are on its settings)."""
        check_values(self.settings, values)
        backend = backend_for(name)
        if backend is not None:
            check_options(backend.options, values)
            backend.check_options(values)
        known = {f.name for f in fields(self.settings)} - {"executor"}
        return self.sized(self.settings(executor=name, **{k: v for k, v in values.items() if k in known}))

    def sized(self, settings: Any) -> Any:
        """The settings with what is worked out from them filled in, and checked where a value cannot work: a
        --memory that is no size (`-m lots` would fail deep in Dask; a LocalCluster takes "auto" too), a
        --walltime that is no time limit (it failed when the first job was written)."""
        if getattr(settings, "memory", None) not in (None, "auto"):
            memory_mb(settings.memory)
        if getattr(settings, "walltime", None) is not None:
            duration_seconds(settings.walltime)
        if getattr(settings, "worker_wait", None) is not None:
            duration_seconds(settings.worker_wait, "--worker-wait")
        return settings

    def expected_workers(self, settings: Any) -> int:
        """How many chunks may run at once, as far as it is known before the executor starts: it sizes the
        share of its chunks a FileTask runs itself."""
        return getattr(settings, "workers", None) or 1

    def worker_count(self, settings: Any, n_items: int) -> int:
        """Workers the summary counts for `n_items` chunks where the executor does not say (`n_workers`): one
        in this process, else -j but never more than there are chunks."""
        if self.runs_in_process:
            return 1
        return max(1, min(getattr(settings, "workers", None) or 1, n_items))

    def prepare_inputs(self, analysis: Any) -> list[str]:
        """What this kind changes in the inputs before planning (coffea-casa reads through its cache); notes."""
        return []

    @abstractmethod
    def open(self, settings: Any, n_items: int, announce: Callable[[str], None]) -> AbstractContextManager[Any]:
        """The executor, alive for the `with` block, sized for `n_items` items; `announce` gets the lines the
        user should see while it runs (the Dask dashboard, for one)."""


def first_batch_workers(settings: Any) -> int:
    """What a cluster of batch worker jobs runs at once as far as is known before it starts: it adapts, so its
    first --scaleout jobs (HiggsDNA's default without one) of -j workers each are counted."""
    return (getattr(settings, "scaleout", None) or DEFAULT_BATCH_JOBS) * (settings.workers or 1)


def check_submit_command(settings: Any, alternative: str) -> None:
    """Without the batch system's submit command no worker can ever start: say so instead of waiting forever."""
    backend = backend_for(settings.name)
    if backend is not None and not backend.available():
        raise DispatchError(
            f"executor '{settings.name}' submits worker jobs with {backend.submit_command}, which is not on PATH "
            f"here: run on a submit node of {backend.name}, {alternative}"
        )


def worker_prologue(settings: Any) -> list[str]:
    """What a batch worker job runs first: the grid proxy (checked to outlive the job when inputs are remote)
    and the import path of this process, so user processors given as `module:Class` import there too."""
    backend = backend_for(settings.name)
    walltime = duration_seconds(settings.walltime or DEFAULT_WALLTIME)
    lifetime = backend.max_job_seconds(walltime, settings.queue) if backend else 0
    proxy = grid_proxy(settings.voms, needed=settings.remote_inputs, lifetime_needed=lifetime)
    pythonpath = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), os.getcwd()) if p)
    return [*proxy_exports(proxy), f"export PYTHONPATH={pythonpath}"]


def metadata_killed(filename: str, what: str, memory_bytes: int | None) -> str:
    """One line for an input whose describing (its metadata: coffea's preprocessing, or ours) killed workers:
    no chunk of it is known, so the run cannot go on without it."""
    now = f", now {memory_bytes / 2**20:,.0f} MB" if memory_bytes else ""
    return f"{filename}: reading its metadata killed {what}: give each worker more memory (--memory{now})"
