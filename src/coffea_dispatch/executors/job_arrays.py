"""Job arrays (every batch backend's `array_executor`) as a kind of executor: they
submit batch jobs and return, so the run hands them to `pipeline.job_array` and coffea's Runner to
`for_runner.JobArrayExecutor`, both on the one job-array path (`batch.arrays`); they are never opened as a pool.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from coffea_dispatch.batch.registry import array_backend, backend_for, backends
from coffea_dispatch.errors import DispatchError
from coffea_dispatch.executors.kinds import ExecutorKind
from coffea_dispatch.options import BatchResources, ExecutorState, ProcessOptions, SubmitOptions, options_of

NOT_KEYWORDS = {"wait", "job_record", "backend"}  # the command line's: a Runner call always waits


@dataclass(kw_only=True)
class JobArraySettings(BatchResources, ProcessOptions, ExecutorState):
    """What each job of the array asks its batch system for."""


class JobArrayKind(ExecutorKind):
    settings = JobArraySettings
    job_array = True

    def names(self) -> tuple[str, ...]:
        return tuple(backend.array_executor for backend in backends() if backend.array_executor)

    def owns(self, name: str) -> bool:
        backend = backend_for(name)  # built-in backends first: no plugin is read for theirs
        return backend is not None and backend.array_executor == name

    def keywords(self, name: str) -> frozenset[str]:
        """Its jobs' resources, how the array is cut and followed, its backend's own options, and `folder`."""
        submit = {o.dest for o in options_of(SubmitOptions)} - NOT_KEYWORDS
        return super().keywords(name) | submit | self.backend_keywords_of(name) | {"folder"}

    def backend_keywords_of(self, name: str) -> frozenset[str]:
        """The options only `name`'s backend reads."""
        return frozenset(o.dest for o in array_backend(name).options)

    def submit_options(self, name: str, values: dict[str, Any]) -> SubmitOptions:
        """How the array of `name` is cut and followed, from keywords (its backend's own options included)."""
        submit = {k: v for k, v in values.items() if k in {o.dest for o in options_of(SubmitOptions)}}
        backend = self.backend_keywords_of(name)
        return SubmitOptions(**submit, backend={k: v for k, v in values.items() if k in backend})

    def open(self, settings: Any, n_items: int, announce: Callable[[str], None]):
        raise DispatchError(f"{settings.name} submits batch jobs: its runs go through the job-array path")
