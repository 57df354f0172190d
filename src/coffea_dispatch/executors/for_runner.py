"""Every executor as an object coffea's own `processor.Runner(executor=...)` accepts, on coffea 0.7 and 2025+.

coffea's Runner asserts `isinstance(executor, ExecutorBase)`, rebuilds it with `executor.copy(**kw)` (every
attribute an `__init__` keyword: these are dataclasses), calls `out, e = executor(items, function, None)` for
preprocessing (`function_name="get_metadata"`) and then for the chunks, and reads `executor.retries`. So a
PocketCoffea configuration or a notebook changes one line to get our fork pool, our TLS Dask clusters, parsl
on a batch system, or job arrays with status, resubmission by cause and resume.

A cluster (Dask, parsl) is started by the first call and kept for the next (preprocessing, then processing,
then the next Runner call): copies share it. It ends with `close()`, the `with` block, or the interpreter.
A job array preprocesses here (a batch round trip per file would cost minutes), then writes, submits and waits
for its jobs; calling again with the same `folder=` collects what finished and runs only what did not.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coffea.processor.executor import ExecutorBase

from coffea_dispatch.batch.arrays import Following, run_array
from coffea_dispatch.batch.items import WorkDigest, existing_submission, item_jobs, work_digest
from coffea_dispatch.batch.registry import array_backend
from coffea_dispatch.batch.submission import MANIFEST, Submission, plan_jobs
from coffea_dispatch.batch.submit import job_requests
from coffea_dispatch.dump.collect import summed_accumulators
from coffea_dispatch.dump.completeness import Completeness
from coffea_dispatch.dump.completeness_file import check_report, write_report
from coffea_dispatch.errors import DispatchError
from coffea_dispatch.executors.kinds import metadata_killed
from coffea_dispatch.executors.local import pool_executor
from coffea_dispatch.executors.registry import kind_of, open_executor
from coffea_dispatch.executors.runner_reading import Counted, RunnerReading
from coffea_dispatch.options import ExecutorSettings, RunOptions, SubmitOptions, check_values, options_of
from coffea_dispatch.options.keywords import keywords_named, python_options
from coffea_dispatch.result_keys import KILLED_KEY, KILLED_WORKERS_KEY

DEFAULT_RETRIES = RunOptions.__dataclass_fields__["retries"].default
PREPROCESSING = "get_metadata"  # coffea's function_name for the preprocessing call


def print_line(line: str) -> None:
    """What a notebook or script shows of a run going on (the dashboard link, the submission folder)."""
    print(line, flush=True)


class Live:
    """The executor a cluster keeps between calls, shared by every copy of one DispatchExecutor."""

    def __init__(self) -> None:
        self.stack: contextlib.ExitStack | None = None
        self.executor: Any = None

    def open(self, settings: ExecutorSettings, n_items: int, announce: Callable[[str], None]) -> Any:
        if self.executor is None:
            self.stack = contextlib.ExitStack()
            self.executor = self.stack.enter_context(open_executor(settings, n_items=n_items, announce=announce))
            atexit.register(self.close)
        return self.executor

    def close(self) -> None:
        stack, self.stack, self.executor = self.stack, None, None
        if stack is not None:
            atexit.unregister(self.close)
            stack.close()


@dataclass
class DispatchExecutor(ExecutorBase):
    """`iterative`, `futures`, `dask/...` and `parsl/...` for coffea's Runner; `coffea_dispatch.executor()`
    builds it from the command line's options."""

    name: str = "futures"
    settings: ExecutorSettings = field(default_factory=ExecutorSettings)
    retries: int = DEFAULT_RETRIES
    announce: Callable[[str], None] = print_line
    live: Live | None = None
    report: str | None = None  # where what the Runner calls read is written, as a dump's completeness.json
    reading: RunnerReading | None = None  # shared by every copy: the object the user holds answers

    def __post_init__(self) -> None:
        if self.live is None:
            self.live = Live()
        if self.reading is None:
            self.reading = RunnerReading()

    def completeness(self) -> Completeness:
        """Per dataset, what the Runner calls through this executor (and the copies coffea made of it) read of
        what they were given: files read, partly read, failed and not run, entries, sums of generator weights
        (`Completeness`, as `coffea_dispatch.completeness_of` answers for a dump; `.unprocessed()` what is left)."""
        return self.reading.completeness()

    @property
    def keeps_workers(self) -> bool:
        """A cluster outlives the call; a local pool forks in milliseconds and leaves nothing running."""
        return kind_of(self.name).keeps_workers

    def __call__(self, items: Iterable, function: Callable, accumulator: Any) -> tuple[Any, Any]:
        """coffea's executor call; a refusal names this object's keywords (`memory=`), not the CLI's flags. What
        it planned and read is kept (`completeness()`), and written to `report` at its end."""
        items = list(items)
        with keywords_named(lambda: python_options(options_of(type(self.settings)))):
            if self.function_name == PREPROCESSING:
                output, error = self._call(items, function, accumulator)
                self.reading.preprocessed(items, output)
                return output, error
            self.reading.plan(items)
            try:
                output, error = self._call(items, function, accumulator)
            except BaseException as failure:
                self.reading.failed(failure)
                with contextlib.suppress(DispatchError):  # the report's own refusal must not hide why the call failed
                    self._write_report()
                raise
            self._write_report()
            return output, error

    def _write_report(self) -> None:
        if self.report:
            write_report(self.report, self.reading.completeness())

    def _call(self, items: list, function: Callable, accumulator: Any) -> tuple[Any, Any]:
        if not items:
            return accumulator, 0
        settings = dataclasses.replace(self.settings, status=self.status)
        try:
            inner = self.live.open(settings, len(items), self.announce)
            result = inner.copy(desc=self.desc, unit=self.unit)(items, self._counted(function), accumulator)
        finally:
            if not self.keeps_workers:
                self.live.close()
        output, error = result if isinstance(result, tuple) else (result, 0)
        return self.reading.took(_without_deaths(output)), error

    def _counted(self, function: Callable) -> Callable:
        """The chunk function, counting what each chunk reads (not coffea's preprocessing: it reads no events)."""
        return function if self.function_name == PREPROCESSING else Counted(function)

    def close(self) -> None:
        """End the cluster this executor (and every copy of it) started."""
        self.live.close()

    def __enter__(self) -> DispatchExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _without_deaths(output: Any) -> Any:
    """A chunk whose worker died twice (our futures pool retries it once) is lost: coffea's Runner would
    return an accumulator without it, so the call fails instead, naming it."""
    if not isinstance(output, dict):
        return output
    killers = output.pop(KILLED_WORKERS_KEY, [])
    if killers:  # chunks that killed their Dask workers: lost too
        raise killers[0]
    if KILLED_KEY not in output:
        return output
    final = [death for death in output.pop(KILLED_KEY) if death.final]
    if final:
        item = final[0].item
        if not hasattr(item, "entrystart"):  # coffea's preprocessing item
            raise DispatchError(metadata_killed(item.filename, f"two workers ({final[0].cause})", None))
        where = f"{getattr(item, 'filename', item)} (entries {getattr(item, 'entrystart', '?')}-"
        where += f"{getattr(item, 'entrystop', '?')})"
        raise DispatchError(
            f"the worker running {where} died twice ({final[0].cause}): fewer workers or a smaller chunksize "
            f"give each more memory{f' ({len(final)} chunk(s) lost)' if len(final) > 1 else ''}"
        )
    return output


@dataclass
class JobArrayExecutor(DispatchExecutor):
    """Every backend's job arrays (`BatchBackend.array_executor`) for coffea's Runner: blocks like every
    coffea executor until its jobs are done, resubmitting failures by cause up to `retries` times."""

    folder: str | None = None  # where the submission is written (default: .higgs_dna_<executor>/<name>_<time>)
    submit: SubmitOptions = field(default_factory=SubmitOptions)

    def _call(self, items: list, function: Callable, accumulator: Any) -> tuple[Any, Any]:
        if not items:
            return accumulator, 0
        if self.function_name == PREPROCESSING:
            return self._here(items, function, accumulator)
        digest = work_digest(function, items)
        folder = Path(self.folder).absolute() if self.folder and (Path(self.folder) / MANIFEST).exists() else None
        earlier = existing_submission(folder, digest) if folder else None
        again = "; call again with folder={folder!r} to collect them"
        following = Following(True, self.retries, self.submit.poll_seconds, self.status, again)
        plan = lambda: self._plan(items, self._counted(function), digest)  # noqa: E731
        array = run_array(earlier, plan, following, self.announce)
        return self.reading.took(summed_accumulators(array.submission, accumulator)), 0

    def _here(self, items: list, function: Callable, accumulator: Any) -> tuple[Any, Any]:
        """Preprocessing in a pool of this machine: it opens each file once, for seconds."""
        workers = os.cpu_count() or 1
        with pool_executor(workers=workers, start=min(workers, len(items)), status=self.status) as pool:
            output = pool.copy(desc=self.desc, unit=self.unit)(items, function, accumulator)
        return _without_deaths(output), 0

    def _plan(self, items: list, function: Callable, digest: WorkDigest) -> Submission:
        """These items' submission, written into `folder` (or a new `.higgs_dna_<executor>/<name>_<time>`)."""
        backend = array_backend(self.name)
        requests = job_requests(backend, self.settings, self.submit, (item.filename for item in items))
        spec = item_jobs(items, function, self.function_name or "runner", digest)
        return plan_jobs(
            spec.work(items),
            spec,
            executor=self.name,
            requests=requests,
            files_per_job=self.submit.files_per_job,
            folder=self.folder,
        )


def runner_executor(name: str, **options: Any) -> DispatchExecutor:
    """The executor `name` with the options its kind reads, under their Python names (`workers`, `scaleout`,
    `memory`, `queue`, `files_per_job`, ...), `retries` and `announce`, with the command line's defaults."""
    kind = kind_of(name)
    accepted = kind.keywords(name) | {"status", "retries", "announce", "report"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise DispatchError(
            f"executor {name!r}: unknown option(s) {', '.join(unknown)} (it takes: {', '.join(sorted(accepted))})"
        )
    check_values(RunOptions, options)
    check_values(SubmitOptions, options)
    settings = kind.settings_from(name, options)
    common = {"name": name, "settings": settings, "status": settings.status}
    common["retries"] = options.get("retries", DEFAULT_RETRIES)
    if options.get("report") is not None:
        check_report(options["report"])  # before the Runner starts: another file there is never replaced
        common["report"] = os.fspath(options["report"])
    if "announce" in options:
        common["announce"] = options["announce"]
    if not kind.job_array:
        return DispatchExecutor(**common)
    return JobArrayExecutor(**common, folder=options.get("folder"), submit=kind.submit_options(name, options))
