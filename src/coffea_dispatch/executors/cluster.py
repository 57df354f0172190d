"""`coffea_dispatch.cluster(name, **options)`: our Dask clusters for coffea's dask-awkward users.

coffea 2024+ analyses (`dataset_tools.preprocess`, `apply_to_fileset`, then `dask.compute`) need a
`distributed.Client`, not an executor: they build their own task graph. This hands them the client of the same
cluster a run of `dask/...` starts (executors/dask.py's `dask_client`): mutual TLS with credentials made for the
block and deleted after it, the dashboard behind a token with its ssh tunnel line, a worker job the batch system
refuses failing at once in one line, the client the default so a plain `dask.compute(...)` runs there. Options
are `coffea_dispatch.executor(name, ...)`'s, checked by the same code before anything starts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from coffea_dispatch.batch.registry import backends
from coffea_dispatch.errors import DispatchError
from coffea_dispatch.executors.dask import DaskKind, dask_client
from coffea_dispatch.executors.for_runner import runner_executor
from coffea_dispatch.executors.registry import executor_names, kind_of
from coffea_dispatch.options import Option, options_of
from coffea_dispatch.options.keywords import keywords_named, python_options

# executor()'s keywords that are about coffea's Runner calls, of no use to a bare client
NOT_FOR_A_CLUSTER = {"retries": "coffea's Runner's retries", "report": "the report of coffea's Runner calls"}


@contextlib.contextmanager
def cluster(name: str = "dask/local", **options: Any) -> Iterator[Any]:
    """A `distributed.Client` on the Dask cluster `name` (`dask/local`, a batch system's `dask/<system>`,
    `dask/casa`, ...), started with `options` as `coffea_dispatch.executor(name, ...)` takes them
    (`workers`, `scaleout`, `memory`, `queue`, `walltime`, `scheduler_address`, `announce`, ...), and the
    default client while the block runs:

        with coffea_dispatch.cluster("dask/local", scaleout=4, memory="4GB") as client:
            (out,) = dask.compute(apply_to_fileset(processor, preprocessed))

    The cluster (not one attached to with `scheduler_address=`) and its credentials end with the block."""
    with keywords_named(lambda: _keywords_of(name), options):
        kind = _dask_kind(name)
        refused = sorted(set(options) & set(NOT_FOR_A_CLUSTER))
        if refused:
            raise DispatchError(f"cluster({name!r}): {refused[0]}= is {NOT_FOR_A_CLUSTER[refused[0]]}, not a cluster's")
        announce = options.get("announce")
        if announce is not None and not callable(announce):
            raise DispatchError(f"announce= must be a function taking one line of text, got {announce!r}")
        executor = runner_executor(name, **options)  # every value checked, as executor() checks them
        stack = contextlib.ExitStack()
        client = stack.enter_context(dask_client(kind, executor.settings, executor.announce))
    with stack:
        yield client


def _dask_kind(name: str) -> DaskKind:
    kind = kind_of(name)  # an unknown name: one line listing every executor
    if not isinstance(kind, DaskKind):
        dask_names = [n for n in executor_names() if isinstance(kind_of(n), DaskKind)]
        raise DispatchError(
            f"cluster({name!r}): not a Dask executor (choose from: {', '.join(dask_names)}); for {name}, "
            f"hand coffea_dispatch.executor({name!r}) to coffea's processor.Runner"
        )
    return kind


def _keywords_of(name: str) -> Iterator[Option]:
    """The options a refusal may name by their keywords: the executor's own and the batch backends'."""
    try:
        own = list(options_of(kind_of(name).settings))
    except DispatchError:  # an unknown executor: its refusal names no option
        own = []
    return python_options(own, *(backend.options for backend in backends()))
