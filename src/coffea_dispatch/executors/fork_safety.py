"""A process forked while another thread writes a log record must not inherit that stream's lock held.

dask/local and our futures pool fork their workers from a process whose other threads (the Dask scheduler's event
loop, a Nanny's, the planner's) log at any time. Python gives every logging handler a fresh lock in a forked child,
but not the buffered stream under it: a fork taken while another thread was inside `stream.write()` leaves the
child's copy of that stream locked for ever, and the worker hangs at its first log line (seen as a LocalCluster
that never finishes starting: a worker `[not started]` stuck in `StreamHandler.flush`). Holding every handler's
lock across the fork means no thread is inside a handler's emit at that instant.

Never a deadlock of its own: logging's module lock is taken first (as logging's own hook then takes it again: a
thread configuring logging holds it and then takes handler locks), and each handler lock is waited for at most
HANDLER_WAIT seconds (a handler whose emit logs through another handler takes two, in its own order), then skipped.
"""

from __future__ import annotations

import logging
import os

HANDLER_WAIT = 1.0  # seconds: longer than any emit to a live stream, short enough never to be felt
_held: list = []  # what the fork holds, released in the parent in reverse order


def _handlers() -> list[logging.Handler]:
    """Every handler of every logger, in one fixed order (taken in the same order by each fork: no inversion)."""
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    found = {id(h): h for logger in loggers for h in getattr(logger, "handlers", ())}
    return [found[key] for key in sorted(found)]


def _before_fork() -> None:
    logging._lock.acquire()  # noqa: SLF001  (logging's own at-fork hook takes the same lock next)
    _held.append(logging._lock)  # noqa: SLF001
    for handler in _handlers():
        if handler.lock is not None and handler.lock.acquire(timeout=HANDLER_WAIT):
            _held.append(handler.lock)


def _after_fork_in_parent() -> None:
    while _held:
        _held.pop().release()


def _after_fork_in_child() -> None:
    _held.clear()  # logging has already given its module and each handler a new, free lock in this process


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child)
