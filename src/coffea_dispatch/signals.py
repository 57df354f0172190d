"""SIGTERM and SIGHUP stop a run the way Ctrl-C does; network waits end at a deadline or at the first signal.

A batch system's kill, `kill PID` and a closed terminal send SIGTERM or SIGHUP, whose default action ends
the process at once: no message, and the worker processes it forked live on. Turned into an exception (a
KeyboardInterrupt, so every cleanup path that handles Ctrl-C handles them too), they end with a message,
stopped workers and intact records, and the shell's exit code 128 + signal number.

A call blocked in a C library (XRootD's client, pycurl) runs no Python signal handler until it returns: a
Ctrl-C waited as long as the server took to time out (minutes). `map_with_deadline` runs such calls in daemon
threads and waits for them in short slices, so a signal ends the wait within a slice and a call that outlives
its deadline is given up (its thread is left to finish or die with the process).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

STOPPING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Terminated(KeyboardInterrupt):
    """The run was told to stop by `signum`."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def exit_code(interrupt: KeyboardInterrupt) -> int:
    return 128 + getattr(interrupt, "signum", signal.SIGINT)


def describe(interrupt: KeyboardInterrupt) -> str:
    signum = getattr(interrupt, "signum", None)
    return "interrupted" if signum is None else f"stopped by {signal.Signals(signum).name}"


def _raise_once(signum: int, frame) -> None:
    for stopping in STOPPING_SIGNALS:  # a second signal must not break the cleanup the first one started
        signal.signal(stopping, signal.SIG_IGN)
    raise Terminated(signum)


def _default_in_forked_child() -> None:
    """A child forked while the handler is installed (futures workers, dask/local's forked workers) must die
    on SIGTERM as any process does: its parent (or dask's Nanny, on too much memory) stops it so. The one
    place that does it: pools fork their workers before any signal, so none is forked while the first
    signal's cleanup ignores further ones."""
    for stopping in STOPPING_SIGNALS:
        if signal.getsignal(stopping) is _raise_once:
            signal.signal(stopping, signal.SIG_DFL)


os.register_at_fork(after_in_child=_default_in_forked_child)


@contextmanager
def stopping_signals_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise Terminated in the main thread, unless they are ignored
    (as `nohup` ignores SIGHUP)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in STOPPING_SIGNALS}
    for stopping, handler in previous.items():
        if handler != signal.SIG_IGN:  # `nohup`: a closed terminal must not stop the run
            signal.signal(stopping, _raise_once)
    try:
        yield
    finally:
        for stopping, handler in previous.items():
            signal.signal(stopping, handler)


class HeldSignals:
    """Ctrl-C, SIGTERM and SIGHUP received while a command starts (parsing, importing coffea: about a second)
    are held, then raised by `release()` once nothing is half-imported. Raised in the middle of an import, a
    KeyboardInterrupt printed a traceback, left a module half-made (a later import of it raised ImportError),
    or was swallowed by a library and the run went on."""

    def __init__(self, received: list[int] | None = None, previous: dict[int, object] | None = None) -> None:
        """Hold from now on (in the main thread); or take over the hold `entry.py` installed: the signals it
        holds with their `previous` handlers, appending to `received`."""
        self.received: list[int] = received if received is not None else []
        self.previous: dict[int, object] = dict(previous or {})
        if previous is not None or threading.current_thread() is not threading.main_thread():
            return
        for held in (signal.SIGINT, *STOPPING_SIGNALS):
            handler = signal.getsignal(held)
            if handler != signal.SIG_IGN:  # `nohup` keeps ignoring SIGHUP
                self.previous[held] = handler
                signal.signal(held, self._hold)

    def _hold(self, signum: int, frame) -> None:
        self.received.append(signum)

    def restore(self) -> None:
        """Back to the usual handlers."""
        for held, handler in self.previous.items():
            signal.signal(held, handler)
        self.previous.clear()

    def release(self) -> None:
        """Back to the usual handlers; the first signal held, if any, is raised now."""
        self.restore()
        if self.received:
            signum = self.received[0]
            raise KeyboardInterrupt() if signum == signal.SIGINT else Terminated(signum)


@contextmanager
def interruptible() -> Iterator[None]:
    """Within the block Ctrl-C raises KeyboardInterrupt, whatever handler a library installed; after it, the
    handler from before is back. dask-jobqueue replaces SIGINT's handler when it is imported with one that calls
    sys.exit() (exit code 0, no cleanup message): the import of a batch backend's cluster, and every wait on
    batch jobs, run inside this block. An ignored SIGINT (`nohup`, a batch job) stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous != signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)


WAIT_SLICE = 0.1  # seconds: how long a wait may hold a signal that arrived in another thread

Item = TypeVar("Item")
Result = TypeVar("Result")


class DeadlinePassed(TimeoutError):
    """`item` got no answer within `seconds`: its call goes on in a daemon thread, no longer waited for."""

    def __init__(self, item: object, seconds: float):
        super().__init__(f"no answer within {seconds:g} s")
        self.item = item
        self.seconds = seconds


class _Calls:
    """What the daemon threads of one `map_with_deadline` share: the items left, when each started, its outcome."""

    def __init__(self, function: Callable, items: list) -> None:
        self.function, self.items = function, items
        self.left = list(range(len(items)))
        self.started: dict[int, float] = {}
        self.outcomes: dict[int, tuple[bool, object]] = {}
        self.changed = threading.Condition()

    def start_thread(self) -> None:
        threading.Thread(target=self._work, daemon=True, name="deadline-call").start()

    def _work(self) -> None:
        while True:
            with self.changed:
                if not self.left:
                    return
                index = self.left.pop(0)
                self.started[index] = time.monotonic()
            try:
                outcome = (True, self.function(self.items[index]))
            except BaseException as error:  # handed to the waiting thread, which raises it there
                outcome = (False, error)
            with self.changed:
                if index in self.outcomes:  # given up at its deadline: another thread took this one's place
                    return
                self.outcomes[index] = outcome
                self.changed.notify_all()

    def late(self, seconds: float) -> int | None:
        """The first item running for longer than `seconds`. Called with the condition held."""
        now = time.monotonic()
        running = (i for i, began in self.started.items() if i not in self.outcomes and now - began >= seconds)
        return min(running, default=None)

    def outcome(self, index: int, seconds: float, on_late: Callable | None) -> object:
        """Item `index`'s result, waited for in slices. Called with the condition held."""
        while index not in self.outcomes:
            late = self.late(seconds)
            if late is not None and on_late is None:
                raise DeadlinePassed(self.items[late], seconds)
            if late is not None:
                self.outcomes[late] = (True, on_late(self.items[late], DeadlinePassed(self.items[late], seconds)))
                self.start_thread()  # in place of the one still blocked in the late call
                continue
            self.changed.wait(WAIT_SLICE)
        succeeded, outcome = self.outcomes[index]
        if not succeeded:
            raise outcome
        return outcome


def map_with_deadline(
    function: Callable[[Item], Result],
    items: Iterable[Item],
    seconds: float,
    parallel: int = 1,
    on_late: Callable[[Item, DeadlinePassed], Result] | None = None,
) -> list[Result]:
    """`function(item)` for each item, in up to `parallel` daemon threads, each call given `seconds` from its
    start; the results in the items' order. The first failure in that order is raised; an item still running
    at its deadline raises DeadlinePassed, or gives `on_late(item, error)` as its result. Ctrl-C, SIGTERM and
    SIGHUP end the wait in the main thread within WAIT_SLICE; no item starts after the wait ended."""
    calls = _Calls(function, list(items))
    for _ in range(min(max(1, parallel), len(calls.items))):
        calls.start_thread()
    try:
        with calls.changed:
            return [calls.outcome(index, seconds, on_late) for index in range(len(calls.items))]
    finally:
        with calls.changed:
            calls.left.clear()  # given up, or done: the threads take nothing more


def call_with_deadline(call: Callable[[], Result], seconds: float) -> Result:
    """`call()`, waited for at most `seconds` (DeadlinePassed), and never past a signal; see map_with_deadline."""
    return map_with_deadline(lambda _: call(), [None], seconds)[0]
