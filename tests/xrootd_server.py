"""A real XRootD server on loopback for the tests (Debian's xrootd-server, installed by .ci/run).

As root, xrootd must drop privileges (`-R nobody`), so the exported folder lives outside pytest's private
temporary folders and is world-readable. Nothing here fakes XRootD: uproot reads `root://` through the
`xrootd` and `fsspec-xrootd` packages.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from services import INSTALL_SERVICES, MISSING_SERVICE

USER = "nobody"


def unavailable_reason() -> str | None:
    if shutil.which("xrootd") is None:
        return f"{MISSING_SERVICE} XRootD: xrootd is not installed ({INSTALL_SERVICES})"
    if os.geteuid() != 0:
        return f"{MISSING_SERVICE} XRootD: the test server is started as root and drops privileges to 'nobody'"
    try:
        import fsspec_xrootd  # noqa: F401
        import XRootD.client  # noqa: F401
    except ImportError as error:
        return f"the XRootD Python packages are missing ({error})"
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class XRootDServer:
    def __init__(self):
        self.folder = Path(tempfile.mkdtemp(prefix="coffea-dispatch-xrootd-"))
        self.root = self.folder / "root"  # served as the namespace root: files are /store/data/<name>
        self.data = self.root / "store" / "data"
        self.logs = self.folder / "logs"
        for folder in (self.folder, self.root, self.root / "store", self.data, self.logs):
            folder.mkdir(exist_ok=True)
            folder.chmod(0o755)
        shutil.chown(self.logs, USER)
        self.port = free_port()
        self.config = self.folder / "xrootd.cfg"
        self.config.write_text(
            f"xrd.port {self.port}\noss.localroot {self.root}\nall.export /store\nxrd.allow host *\n"
        )

    def add(self, source: str | Path, name: str | None = None) -> str:
        """Serve a copy of `source`; returns its root:// URL."""
        target = self.data / (name or Path(source).name)
        shutil.copy(source, target)
        target.chmod(0o644)
        return self.url(target.name)

    @property
    def redirector(self) -> str:
        return f"root://localhost:{self.port}"

    def url(self, name: str, port: int | None = None) -> str:
        return f"root://localhost:{port or self.port}//store/data/{name}"

    def start(self, timeout: float = 30) -> None:
        subprocess.run(
            ["xrootd", "-b", "-R", USER, "-c", str(self.config), "-l", str(self.logs / "xrootd.log"),
             "-s", str(self.logs / "xrootd.pid")],
            check=True,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"xrootd did not start; see {self.logs}")

    def stop(self) -> None:
        pid_file = self.logs / "xrootd.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text().split()[0])
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
            pid_file.unlink()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                time.sleep(0.1)
            except OSError:
                return

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)
