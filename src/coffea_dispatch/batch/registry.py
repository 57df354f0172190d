"""Which batch systems exist: ours, and those other packages declare under the `coffea_dispatch.backends`
entry-point group (a PBS or LSF backend is one module with one `BatchBackend` subclass, in any package).

This is the only place that names a batch system outside its own module; every executor name of a batch
system (job arrays, Dask clusters, parsl providers) is derived from the backends listed here.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable

from coffea_dispatch.batch.backend import BatchBackend
from coffea_dispatch.errors import DispatchError

BUILTIN = ("coffea_dispatch.batch.htcondor:HTCondor", "coffea_dispatch.batch.slurm:Slurm")
ENTRY_POINT_GROUP = "coffea_dispatch.backends"


def _load(target: str) -> BatchBackend:
    module, _, name = target.partition(":")
    backend = getattr(importlib.import_module(module), name)
    return backend() if isinstance(backend, type) else backend


@functools.cache
def builtin_backends() -> tuple[BatchBackend, ...]:
    return tuple(_load(target) for target in BUILTIN)


@functools.cache
def plugin_backends() -> tuple[BatchBackend, ...]:
    """The backends other packages declare (reading the entry points costs ~15 ms: only when needed)."""
    from importlib.metadata import entry_points

    found = []
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            found.append(point.load()())
        except Exception as error:  # a broken plugin must not break every other executor
            raise DispatchError(f"batch backend plugin {point.value!r} failed to load ({error})") from None
    owners = {executor: backend.name for backend in builtin_backends() for executor in backend.executors}
    for backend in found:
        for executor in backend.executors:
            if executor in owners:
                raise DispatchError(f"executor '{executor}' is claimed by both {owners[executor]} and {backend.name}")
            owners[executor] = backend.name
    return tuple(found)


def backends() -> tuple[BatchBackend, ...]:
    """Every backend, built-in ones first; two backends that claim one executor name are refused."""
    return builtin_backends() + plugin_backends()


def forget() -> None:
    """Look for backends again (after a plugin was installed in this process)."""
    builtin_backends.cache_clear()
    plugin_backends.cache_clear()


def _find(wanted: Callable[[BatchBackend], bool]) -> BatchBackend | None:
    """Built-in backends are asked first: a run on one of them never reads the entry points."""
    found = next((b for b in builtin_backends() if wanted(b)), None)
    return found or next((b for b in plugin_backends() if wanted(b)), None)


def backend_for(executor: str) -> BatchBackend | None:
    """The backend that runs `executor` (job arrays, Dask cluster or parsl provider), if any."""
    return _find(lambda b: executor in b.executors)


def array_backend(executor: str) -> BatchBackend:
    """The backend whose job arrays `executor` names; one line listing them when it names none."""
    backend = _find(lambda b: b.array_executor == executor)
    if backend is None:
        names = ", ".join(b.array_executor for b in backends() if b.array_executor)
        raise DispatchError(f"executor '{executor}' is not a batch executor; choose one of {names}")
    return backend
