"""Ports on shared machines: what a batch backend's Dask scheduler binds on a login node (a leaf)."""

from __future__ import annotations

import contextlib
import socket

from coffea_dispatch.errors import DispatchError

SCHEDULER_PORT = 8786


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
