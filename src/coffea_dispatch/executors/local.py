"""The single-machine executors: coffea's IterativeExecutor, and a process pool for `futures`.

The pool is forked from the main process: workers start in milliseconds with coffea already imported,
instead of coffea's default pools that start fresh interpreters (about 1.3 s each) twice per run. It is
driven by PoolExecutor, which has coffea's executor interface but runs follow-up items as soon as a result
names them (a FileTask's remaining chunks) and keeps the main process's cost per chunk constant.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import multiprocessing
import os
import signal
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from coffea.processor import IterativeExecutor, accumulate

from coffea_dispatch.compat import coffea_progress
from coffea_dispatch.executors import FOLLOW_UP_KEY, worker_count

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


def _stop_workers(pool: ProcessPoolExecutor, grace_seconds: float = 5.0) -> None:
    """Terminate the pool's processes now rather than wait for their chunks to finish."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(grace_seconds)
        if process.is_alive():
            process.kill()


def _process_context():
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


IN_FLIGHT_PER_WORKER = 2  # items handed to the pool per worker: one running, one waiting in its queue


@dataclass
class PoolExecutor:
    """coffea's executor interface, `executor(items, function, accumulator)`, on our forked process pool.

    Unlike coffea's FuturesExecutor it submits at most IN_FLIGHT_PER_WORKER items per worker at a time and
    merges each result into the accumulator in place as it arrives, so the main process holds a bounded
    number of futures and one accumulator, whatever the number of chunks (coffea's keeps every future and
    re-compresses the merged accumulator after each batch); items a result names under FOLLOW_UP_KEY are run
    next, in the same call; and it draws one progress bar, not coffea's second "Merging (local)" bar.
    """

    pool: ProcessPoolExecutor
    workers: int
    status: bool = True
    desc: str = "Processing"
    unit: str = "chunk"

    @property
    def n_workers(self) -> int:
        return self.workers

    def copy(self, **changes: Any) -> PoolExecutor:
        return dataclasses.replace(self, **changes)

    def __call__(self, items: Iterable, function: Callable, accumulator: Any) -> Any:
        waiting = deque(items)
        running: set = set()
        total, done = len(waiting), 0
        with _progress_bar(self.status, self.desc, total, self.unit) as advance:
            while waiting or running:
                while waiting and len(running) < IN_FLIGHT_PER_WORKER * self.workers:
                    running.add(self.pool.submit(function, waiting.popleft()))
                finished, running = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    result = future.result()  # an exception ends the call, as in coffea's executors
                    follow_up = result.pop(FOLLOW_UP_KEY, None) if isinstance(result, dict) else None
                    if follow_up:  # a big file's other chunks: next, for every worker to share
                        waiting.extendleft(reversed(follow_up))
                        total += len(follow_up)
                    accumulator = accumulate([result], accumulator)
                    done += 1
                advance(done, total)
        return accumulator


@contextmanager
def _progress_bar(shown: bool, desc: str, total: int, unit: str) -> Iterator[Callable[[int, int], None]]:
    """rich redraws at most 10 times a second from its own thread: an update per result costs next to nothing."""
    if not shown:
        yield lambda done, total: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit))
    with Progress(*columns, TimeElapsedColumn()) as progress:
        task = progress.add_task(desc, total=total)
        yield lambda done, total: progress.update(task, completed=done, total=total)


@contextmanager
def local_executor(name: str, *, workers: int, n_items: int, status: bool = True) -> Iterator[object]:
    common = {"status": status, "unit": "chunk", "desc": "Processing"}
    if name == "iterative":
        with coffea_progress(status):
            yield IterativeExecutor(**common)
        return
    size = worker_count(name, workers, n_items)
    pool = ProcessPoolExecutor(max_workers=size, mp_context=_process_context(), initializer=_setup_worker)
    try:
        # start every worker now, so the caller may start threads without forking under them
        pool.submit(os.getpid).result()
        yield PoolExecutor(pool=pool, workers=size, **common)
    except BaseException:  # Ctrl-C, SIGTERM, a failure: running chunks are abandoned (their records are atomic)
        _stop_workers(pool)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
