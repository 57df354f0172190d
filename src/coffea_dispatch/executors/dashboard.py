"""Where the Dask dashboard really is, and how to reach it from a laptop.

Analysts on a login node cannot open the dashboard directly: they need the actual port (Dask picks another
one when 8787 is taken) and an ssh tunnel. We print both instead of leaving them to guess.
"""

from __future__ import annotations

import getpass
import os
import socket
from urllib.parse import urlsplit

TUNNEL_LOCAL_PORT = 8000


def dashboard_port(link: str) -> int | None:
    port = urlsplit(link).port
    return port


def on_remote_host(environ: dict[str, str] | None = None) -> bool:
    return bool((environ if environ is not None else os.environ).get("SSH_CONNECTION"))


def dashboard_lines(link: str, show_tunnel: bool = False, environ: dict[str, str] | None = None) -> list[str]:
    """The dashboard URL; on a remote host (or when asked) also the exact ssh tunnel and the local URL."""
    lines = [f"Dask dashboard: {link}"]
    port = dashboard_port(link)
    if port is not None and (show_tunnel or on_remote_host(environ)):
        user = getpass.getuser()
        host = socket.getfqdn()
        lines.append(f"from your laptop: ssh -N -L {TUNNEL_LOCAL_PORT}:localhost:{port} {user}@{host}")
        lines.append(f"then open http://localhost:{TUNNEL_LOCAL_PORT}/status")
    return lines
