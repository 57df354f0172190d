"""The single-machine executors: coffea's IterativeExecutor and FuturesExecutor.

FuturesExecutor gets a process pool forked from the main process after planning: workers start in
milliseconds with coffea already imported and inherit the input files the planner opened, instead of
coffea's default pools that start fresh interpreters (about 1.3 s each) twice per run.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager

from coffea.processor import FuturesExecutor, IterativeExecutor

from coffea_dispatch.executors import worker_count


def _process_context():
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


@contextmanager
def coffea_progress(shown: bool) -> Iterator[None]:
    """coffea's FuturesExecutor draws its bars whatever `status` says; silence its console when asked to."""
    from coffea.util import coffea_console

    previous = coffea_console.quiet
    coffea_console.quiet = previous or not shown
    try:
        yield
    finally:
        coffea_console.quiet = previous


@contextmanager
def local_executor(name: str, *, workers: int, n_items: int, status: bool = True) -> Iterator[object]:
    common = {"status": status, "unit": "chunk", "desc": "Processing"}
    if name == "iterative":
        with coffea_progress(status):
            yield IterativeExecutor(**common)
        return
    size = worker_count(name, workers, n_items)
    pool = ProcessPoolExecutor(max_workers=size, mp_context=_process_context())
    try:
        # start every worker now, so the caller may start threads without forking under them
        pool.submit(os.getpid).result()
        with coffea_progress(status):
            yield FuturesExecutor(pool=pool, workers=size, **common)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
