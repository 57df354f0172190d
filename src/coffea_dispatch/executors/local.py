"""The single-machine executors: coffea's IterativeExecutor, and a process pool for `futures`.

The pool's workers are forked from the main process: they start in milliseconds with coffea already imported,
instead of coffea's default pools that start fresh interpreters (about 1.3 s each) twice per run. It is
driven by PoolExecutor, which has coffea's executor interface but runs follow-up items as soon as a result
names them (a FileTask's remaining chunks) and keeps the main process's cost per chunk constant. Each worker
has a pipe of its own (not concurrent.futures' shared queues, where one dead worker breaks the whole pool and
nobody knows what it ran): a worker killed by the OOM killer costs only its chunk, retried once in a fresh
worker, and is named with the peak memory the kernel measured.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import dataclasses
import functools
import itertools
import multiprocessing
import os
import pickle
import signal
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

import cloudpickle
from coffea.processor import IterativeExecutor, accumulate

from coffea_dispatch.errors import DispatchError
from coffea_dispatch.executors.kinds import ExecutorKind
from coffea_dispatch.executors.progress import Titled
from coffea_dispatch.inputs.compat import coffea_progress
from coffea_dispatch.inputs.planning import FileTask
from coffea_dispatch.options import ExecutorState, ProcessOptions
from coffea_dispatch.result_keys import FOLLOW_UP_KEY, KILLED_KEY

# glibc mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
ARRAYS_FROM_HEAP_BELOW = 64 * 2**20
KEEP_FREE_BYTES = 256 * 2**20


PR_SET_PDEATHSIG = 1  # prctl option (linux/prctl.h)


def _setup_worker() -> None:
    """Worker initializer: gone with its parent, chunk memory reused (signals.py gives forked children the
    default SIGTERM)."""
    _die_with_parent()
    _reuse_chunk_memory()


def _libc():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def _die_with_parent() -> None:
    """A SIGKILLed main process (OOM killer, a closed session) cannot stop its workers: the kernel sends them
    SIGTERM when it dies (Linux prctl; elsewhere a no-op). They were forked by the main thread, which lives as
    long as the process."""
    libc = _libc()
    prctl = getattr(libc, "prctl", None)
    if prctl is not None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _reuse_chunk_memory() -> None:
    """Let chunk-sized arrays come from, and go back to, the heap.

    By default glibc gives every large array its own mmap and unmaps it on free, so each chunk faults its
    ~100 MB of arrays in afresh (about 30k page faults per 500k-event chunk, measured). With these thresholds
    the memory freed by one chunk serves the next: 2-3k faults and about 15% less time per chunk, for the
    same peak memory. Workers only; a no-op where the C library is not glibc.
    """
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is not None:
        mallopt(M_MMAP_THRESHOLD, ARRAYS_FROM_HEAP_BELOW)
        mallopt(M_TRIM_THRESHOLD, KEEP_FREE_BYTES)


IN_FLIGHT_PER_WORKER = 2  # items handed to a worker at a time: one running, one waiting in its pipe
STOP_GRACE_SECONDS = 5.0
CRASH_SIGNALS = ("SIGSEGV", "SIGBUS", "SIGABRT", "SIGILL", "SIGFPE")
ITEM, FUNCTION = "item", "function"  # what a worker is sent
RESULT, ERROR = "result", "error"  # what it answers


def _serve(connection: Connection) -> None:
    """A worker: run each item it is sent with the function it was last sent, and answer, until its pipe closes.
    Ctrl-C reaches the whole process group: the parent decides, and stops the workers."""
    _setup_worker()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    function = None
    while True:
        try:
            kind, token, payload = connection.recv()
        except (EOFError, OSError):
            return
        if kind == FUNCTION:
            try:
                function = cloudpickle.loads(payload)
            except Exception as exc:  # a module it needs is not importable here: each item says so, once
                function = functools.partial(_raising, exc)
            continue
        try:
            answer = (RESULT, token, function(payload))
        except BaseException as exc:  # a bug in the function: re-raised in the parent, as a pool would
            answer = (ERROR, token, exc)
        try:
            connection.send(answer)
        except Exception:  # an answer that does not pickle
            connection.send((ERROR, token, RuntimeError(traceback.format_exc())))


@dataclass(eq=False)
class Worker:
    """One forked worker process and its end of the pipe."""

    pid: int
    connection: Connection
    function_of: int = -1  # the call whose function it holds
    running: deque = field(default_factory=deque)  # (token, item) sent and not answered; the first one runs
    broken: bool = False  # its pipe refused an item: it died

    def send(self, token: int, item: Any) -> None:
        self.connection.send((ITEM, token, item))
        self.running.append((token, item))


@dataclass
class WorkerDeath:
    """How a worker ended without being asked to, read from the kernel (wait4): exit status and peak memory."""

    status: int
    peak_rss_bytes: int

    def cause(self) -> str:
        peak = f"peak memory {self.peak_rss_bytes / 2**30:.2f} GB"
        if os.WIFSIGNALED(self.status):
            name = signal.Signals(os.WTERMSIG(self.status)).name
            if os.WTERMSIG(self.status) == signal.SIGKILL:
                return f"SIGKILL, {peak}: most likely the kernel's out-of-memory killer"
            crash = " (a crash in compiled code)" if name in CRASH_SIGNALS else ""
            return f"{name}{crash}, {peak}"
        return f"exit code {os.WEXITSTATUS(self.status)}, {peak}"


class WorkerSet:
    """Worker processes forked from this one on demand, up to `limit`, each with a pipe of its own: the parent
    knows which item each worker runs, so a worker that dies (the OOM killer, a segfault) names its chunk."""

    def __init__(self, limit: int):
        self.limit = limit
        self.workers: list[Worker] = []
        self.most = 0  # the most workers alive at once

    def spawn(self) -> Worker:
        """Fork one more worker (in the calling thread, the main one: the kernel stops it when that ends)."""
        parent_end, child_end = multiprocessing.Pipe(duplex=True)
        pid = os.fork()
        if pid == 0:  # the worker: it needs no other worker's pipe
            exit_code = 1
            try:
                parent_end.close()
                for other in self.workers:
                    other.connection.close()
                _serve(child_end)
                exit_code = 0
            finally:
                os._exit(exit_code)
        child_end.close()
        worker = Worker(pid, parent_end)
        self.workers.append(worker)
        self.most = max(self.most, len(self.workers))
        return worker

    def bury(self, worker: Worker) -> WorkerDeath:
        """A worker whose pipe closed without an answer: reap it and read how it ended."""
        self.workers.remove(worker)
        worker.connection.close()
        _, status, usage = os.wait4(worker.pid, 0)
        return WorkerDeath(status, usage.ru_maxrss * 1024)

    def stop(self, grace_seconds: float = STOP_GRACE_SECONDS, now: bool = False) -> None:
        """End every worker: idle ones leave when their pipe closes; `now`, running ones are terminated too."""
        for worker in self.workers:
            worker.connection.close()
            if now:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_seconds
        for worker in self.workers:
            while os.waitpid(worker.pid, os.WNOHANG) == (0, 0):
                if time.monotonic() > deadline:
                    os.kill(worker.pid, signal.SIGKILL)
                    os.waitpid(worker.pid, 0)
                    break
                time.sleep(0.01)
        self.workers.clear()


@dataclass(frozen=True)
class KilledChunk:
    """An item whose worker died while running it; `final`: it killed the fresh worker it was retried in too."""

    item: Any
    cause: str
    final: bool


@dataclass
class PoolExecutor(Titled):
    """coffea's executor interface, `executor(items, function, accumulator)`, on our forked worker processes.

    Unlike coffea's FuturesExecutor it hands each worker at most IN_FLIGHT_PER_WORKER items at a time and merges
    each result into the accumulator in place as it arrives, so the main process holds a bounded number of
    items and one accumulator, whatever the number of chunks; it forks workers only while there is work for
    them (up to -j); items a result names under FOLLOW_UP_KEY run next, in the same call; a worker that dies
    costs only its own chunk, which is retried once in a fresh worker (as Dask does) before it is reported under
    KILLED_KEY; and it draws one progress bar, not coffea's second "Merging (local)" bar.
    """

    pool: WorkerSet

    @property
    def n_workers(self) -> int:
        return self.pool.most

    def __call__(self, items: Iterable, function: Callable, accumulator: Any) -> Any:
        call = _Call(self.pool, function, deque(items))
        with self.progress(len(call.waiting)) as advance:
            while call.waiting or call.busy():
                call.hand_out()
                for result in call.collect():
                    accumulator = accumulate([result], accumulator)
                advance(call.done, call.total)
        if call.killed:
            accumulator = accumulate([{KILLED_KEY: call.killed}], accumulator)
        return accumulator


RETRIES_AFTER_A_DEATH = 1


def _by_value(function: Callable) -> bytes:
    try:
        return cloudpickle.dumps(function)
    except Exception as error:
        raise DispatchError(f"the processor cannot be sent to the futures workers: {error}") from error


def _raising(error: BaseException, item: Any) -> Any:
    raise error


@dataclass(eq=False)
class _Call:
    """One executor call: what waits, what runs where, what came back."""

    pool: WorkerSet
    function: Callable
    waiting: deque
    done: int = 0
    killed: list = field(default_factory=list)
    deaths: Counter = field(default_factory=Counter)  # token -> how many workers died running it
    tokens: itertools.count = field(default_factory=itertools.count)
    pickled: bytes | None = None  # the function as sent to the workers, made once

    def __post_init__(self) -> None:
        self.total = len(self.waiting)
        self.waiting = deque((next(self.tokens), item) for item in self.waiting)

    def busy(self) -> bool:
        return any(worker.running for worker in self.pool.workers)

    def _function_bytes(self) -> bytes:
        """The function by reference where it can be: forked workers already hold its module's objects (a
        processor's module-level tables, sessions, locks), shared and never copied. By value (cloudpickle, as
        coffea sends processors) where it must be: a class defined in a notebook cell or an exec'd block is not
        importable by name in the workers."""
        if self.pickled is None:
            try:
                self.pickled = pickle.dumps(self.function)
            except (pickle.PicklingError, AttributeError, TypeError):
                self.pickled = _by_value(self.function)
        return self.pickled

    def _give(self, worker: Worker, token: int, item: Any) -> bool:
        """Send `item` (and this call's function, once); False, and the item back in line, when the worker died
        meanwhile (collect() then reads its end: its running chunk is retried; an idle one is just gone)."""
        try:
            if worker.function_of != id(self):
                worker.connection.send((FUNCTION, None, self._function_bytes()))
                worker.function_of = id(self)
            worker.send(token, item)
        except OSError:
            self.waiting.appendleft((token, item))
            worker.broken = True
            if not worker.running:
                self.pool.bury(worker)
            return False
        return True

    def hand_out(self) -> None:
        """Idle workers first, then new ones while there is work for them, then one item queued behind each."""
        for worker in [w for w in self.pool.workers if not w.running and not w.broken]:
            if self.waiting and not self._give(worker, *self.waiting.popleft()):
                return
        while self.waiting and len(self.pool.workers) < self.pool.limit:
            if not self._give(self.pool.spawn(), *self.waiting.popleft()):
                return
        for worker in [w for w in self.pool.workers if not w.broken]:
            while self.waiting and len(worker.running) < IN_FLIGHT_PER_WORKER:
                if not self._give(worker, *self.waiting.popleft()):
                    return

    def collect(self) -> Iterator[Any]:
        """The results that arrived (waiting up to a second for one); a worker that died is replaced."""
        by_connection = {w.connection: w for w in self.pool.workers if w.running}
        for connection in wait(list(by_connection), timeout=1.0):
            worker = by_connection[connection]
            try:
                kind, token, payload = connection.recv()
            except (EOFError, OSError):
                self._lost(worker)
                continue
            worker.running.popleft()
            if kind == ERROR:
                raise payload
            follow_up = payload.pop(FOLLOW_UP_KEY, None) if isinstance(payload, dict) else None
            if follow_up:  # a big file's other chunks: next, for every worker to share
                self.waiting.extendleft((next(self.tokens), i) for i in reversed(follow_up))
                self.total += len(follow_up)
            self.done += 1
            yield payload

    def _lost(self, worker: Worker) -> None:
        """The worker died: its queued items go back; its running item is retried in a fresh worker once (a
        FileTask first describes only, handing all its chunks back, so the next death names the chunk)."""
        death = self.pool.bury(worker)
        (token, item), *queued = worker.running
        self.waiting.extendleft(reversed(queued))
        if isinstance(item, FileTask) and item.chunks_here:
            self.waiting.appendleft((token, dataclasses.replace(item, chunks_here=0)))
            return
        self.deaths[token] += 1
        final = self.deaths[token] > RETRIES_AFTER_A_DEATH
        self.killed.append(KilledChunk(item, death.cause(), final))
        if final:
            self.done += 1
        else:
            self._give(self.pool.spawn(), token, item)


@contextmanager
def iterative_executor(status: bool = True) -> Iterator[IterativeExecutor]:
    """coffea's own IterativeExecutor: every chunk in this process, one after the other."""
    with coffea_progress(status):
        yield IterativeExecutor(status=status, unit="chunk", desc="Processing")


@contextmanager
def pool_executor(*, workers: int, start: int, status: bool = True) -> Iterator[PoolExecutor]:
    """Our pool of up to `workers` processes, `start` of them forked now (before the caller starts threads),
    more as work comes."""
    pool = WorkerSet(limit=max(1, workers))
    for _ in range(start):
        pool.spawn()
    try:
        yield PoolExecutor(pool=pool, status=status, unit="chunk", desc="Processing")
    except BaseException:  # Ctrl-C, SIGTERM, a failure: running chunks are abandoned (their records are atomic)
        pool.stop(now=True)
        raise
    finally:
        pool.stop()


@dataclass(kw_only=True)
class LocalSettings(ProcessOptions, ExecutorState):
    """`iterative` and `futures`: how many processes (futures; iterative runs in this one)."""


class IterativeKind(ExecutorKind):
    """coffea's IterativeExecutor: chunks run in this process."""

    settings = LocalSettings
    runs_in_process = True
    keeps_workers = False

    def names(self) -> tuple[str, ...]:
        return ("iterative",)

    def sized(self, settings: LocalSettings) -> LocalSettings:
        settings.workers = settings.workers or 1
        return settings

    def expected_workers(self, settings: LocalSettings) -> int:
        return 1

    def open(self, settings: LocalSettings, n_items: int, announce: Callable[[str], None]):
        return iterative_executor(settings.status)


class FuturesKind(ExecutorKind):
    """Our forked pool: all cores by default, never more processes than chunks (idle ones cost memory)."""

    settings = LocalSettings
    keeps_workers = False  # a pool forks in milliseconds and leaves nothing running

    def names(self) -> tuple[str, ...]:
        return ("futures",)

    def sized(self, settings: LocalSettings) -> LocalSettings:
        settings.workers = settings.workers or os.cpu_count() or 1
        return settings

    def open(self, settings: LocalSettings, n_items: int, announce: Callable[[str], None]):
        workers = settings.workers or 1
        return pool_executor(workers=workers, start=self.worker_count(settings, n_items), status=settings.status)
