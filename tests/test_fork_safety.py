"""Workers forked while another thread logs (dask/local's Nanny, our futures pool) must start: the hang seen as a
LocalCluster whose second worker stayed `[not started]`, stuck in its first log line's `StreamHandler.flush`."""

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import coffea_dispatch.executors  # noqa: F401  (what dask/local and futures import before they fork)


class BufferedStream:
    """A stream with a lock of its own held while it writes, as io.BufferedWriter has: a fork taken mid-write
    copies it held."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.writing = threading.Event()

    def write(self, text: str) -> None:
        with self.lock:
            self.writing.set()
            time.sleep(0.5)

    def flush(self) -> None:
        with self.lock:
            pass


def ended_within(pid: int, seconds: float) -> int | None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


@pytest.fixture
def slow_logger():
    stream = BufferedStream()
    logger = logging.getLogger("coffea-dispatch-fork-safety-test")
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)


def test_a_process_forked_while_another_thread_logs_can_log(slow_logger):
    logger, stream = slow_logger
    writer = threading.Thread(target=logger.warning, args=("from the scheduler's thread",))
    writer.start()
    assert stream.writing.wait(10)
    pid = os.fork()
    if pid == 0:  # the worker: its first log line
        try:
            logger.warning("worker started")
        finally:
            os._exit(0)
    writer.join()
    assert ended_within(pid, 10) == 0, "the forked child hung on a stream lock copied held"


@pytest.mark.parametrize("case", ["handler_logs_through_another", "dictconfig_while_forking"])
def test_holding_the_locks_across_a_fork_never_deadlocks(case):
    """Two ways another thread can hold one lock and want the next: a handler whose emit logs through another
    handler, and logging.config.dictConfig (logging's module lock, then each handler's). Run with the hooks
    registered, in a process of their own: they end, as they end without them."""
    script = Path(__file__).parent / "fork_cases" / f"{case}.py"
    done = subprocess.run([sys.executable, str(script), "with"], capture_output=True, text=True, timeout=20)
    assert done.returncode == 0 and "forked and done" in done.stdout, done.stderr
