"""Ports on shared machines: what a batch backend's Dask scheduler binds on a login node; how long the
scheduler's queries are waited for (a leaf)."""

from __future__ import annotations

import contextlib
import socket
import subprocess

from coffea_dispatch.errors import DispatchError

SCHEDULER_PORT = 8786
QUERY_TIMEOUT = 30  # seconds: a scheduler that has not answered a query by then is taken as unreachable
COMMAND_TIMEOUT = 300  # seconds for a command that acts (submit, cancel): a busy schedd takes its time
TIMED_OUT = 124  # the exit code of a command given up at its deadline, as `timeout` gives


def first_free_port(start: int = SCHEDULER_PORT, tries: int = 100, avoid: tuple[int, ...] = ()) -> int:
    """Login nodes are shared: 8786 is often taken, so take the first free port from there up (skipping
    `avoid`: the dashboard's port, which the scheduler binds at the same time)."""
    for port in range(start, start + tries):
        if port in avoid:
            continue
        with contextlib.closing(socket.socket()) as probe:
            try:
                probe.bind(("", port))
            except OSError:
                continue
            return port
    raise DispatchError(f"no free port for the Dask scheduler between {start} and {start + tries - 1}")


def query(command: list[str], timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run one of a batch system's commands, waiting at most `timeout` seconds (QUERY_TIMEOUT): with its
    controller down, a queue query waits for it for minutes. A command that does not answer in time is killed
    and answers as a failed one (exit code TIMED_OUT, as `timeout` gives), which the callers of a query
    already read as "the queue cannot be asked"."""
    seconds = QUERY_TIMEOUT if timeout is None else timeout
    try:
        return subprocess.run(command, capture_output=True, text=True, check=False, timeout=seconds)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(command, TIMED_OUT, "", f"{command[0]}: no answer within {seconds:g} s")
