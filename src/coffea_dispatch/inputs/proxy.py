"""The grid proxy that workers need to read root:// inputs: found, checked for lifetime, exported.

A job that starts with an expired (or soon expiring) proxy fails hours later on the first remote read; we
refuse to start instead, with the command that fixes it.
"""

from __future__ import annotations

import calendar
import os
import shutil
import subprocess
import time
from pathlib import Path

from coffea_dispatch.errors import DispatchError

RENEW = "voms-proxy-init -voms cms -valid 192:00"


def is_remote(filename: str) -> bool:
    return "://" in filename and not filename.startswith("file://")


def _run(command: list[str]) -> str | None:
    if shutil.which(command[0]) is None:
        return None
    done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    return done.stdout.strip() if done.returncode == 0 else None


def find_proxy(voms: str | None) -> Path | None:
    """--voms, else what voms-proxy-info reports, else $X509_USER_PROXY, else /tmp/x509up_u<uid>."""
    if voms:
        path = Path(voms).expanduser()
        if not path.is_file():
            raise DispatchError(f"--voms {voms}: no such proxy file (create one with: {RENEW})")
        return path.resolve()
    candidates = [_run(["voms-proxy-info", "-p"]), os.environ.get("X509_USER_PROXY"), f"/tmp/x509up_u{os.getuid()}"]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate).resolve()
    return None


def seconds_left(proxy: Path) -> int | None:
    """Remaining lifetime: voms-proxy-info when installed, else the proxy certificate's notAfter (openssl)."""
    left = _run(["voms-proxy-info", "-file", str(proxy), "-timeleft"])
    if left is not None and left.lstrip("-").isdigit():
        return int(left)
    end = _run(["openssl", "x509", "-noout", "-enddate", "-in", str(proxy)])
    if end and end.startswith("notAfter="):
        expiry = time.strptime(end.removeprefix("notAfter="), "%b %d %H:%M:%S %Y %Z")
        return int(calendar.timegm(expiry) - time.time())
    return None


def grid_proxy(voms: str | None, needed: bool, lifetime_needed: int) -> Path | None:
    """The proxy to export to workers; an error when it is needed and missing, or expires too soon."""
    proxy = find_proxy(voms)
    if proxy is None:
        if needed:
            raise DispatchError(
                f"remote (root://) inputs need a grid proxy and none was found: run {RENEW}, or give --voms PATH"
            )
        return None
    left = seconds_left(proxy)
    if left is not None and left < lifetime_needed:
        state = "has expired" if left <= 0 else f"expires in {left / 3600:.1f} h"
        raise DispatchError(
            f"grid proxy {proxy} {state}, before the jobs' {lifetime_needed / 3600:.1f} h can end: "
            f"renew it with {RENEW}"
        )
    return proxy


def proxy_exports(proxy: Path | None) -> list[str]:
    """Lines for a worker job's prologue."""
    if proxy is None:
        return []
    lines = [f"export X509_USER_PROXY={proxy}"]
    if os.environ.get("X509_CERT_DIR"):
        lines.append(f"export X509_CERT_DIR={os.environ['X509_CERT_DIR']}")
    return lines
