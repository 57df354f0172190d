"""Executors: each kind (`kinds.ExecutorKind`, found by `registry`) yields a coffea-style executor,
`executor(items, function, accumulator)`; `for_runner` makes every one of them an executor coffea's Runner takes."""

# first: every executor forks (our pool, dask/local's Nanny) from a process whose threads log (fork_safety says why)
from coffea_dispatch.executors import fork_safety  # noqa: F401  (registers its at-fork hooks)
from coffea_dispatch.executors.kinds import DEFAULT_BATCH_JOBS, ExecutorKind, check_submit_command, worker_prologue
from coffea_dispatch.executors.registry import (
    check_executor,
    describe_with,
    executor_names,
    is_job_array,
    kind_for,
    kind_of,
    open_executor,
    settings_for,
)
from coffea_dispatch.options import ExecutorSettings
from coffea_dispatch.result_keys import FOLLOW_UP_KEY, KILLED_KEY

__all__ = [
    "DEFAULT_BATCH_JOBS",
    "FOLLOW_UP_KEY",
    "KILLED_KEY",
    "ExecutorKind",
    "ExecutorSettings",
    "check_executor",
    "check_submit_command",
    "describe_with",
    "executor_names",
    "is_job_array",
    "kind_for",
    "kind_of",
    "open_executor",
    "settings_for",
    "worker_prologue",
]
