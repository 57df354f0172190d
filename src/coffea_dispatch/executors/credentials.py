"""TLS credentials made for one run, so that only our own workers and client get into the Dask scheduler.

A Dask scheduler runs whatever Python a connected client sends, as the user who started it, with their grid
proxy and Kerberos tickets. On a shared login node anyone who finds the port could connect. Every cluster we
start therefore uses mutual TLS: distributed's scheduler requires a certificate signed by the run's own CA from
every client and worker. The key and certificate (distributed's `Security.temporary()`, a self-signed pair)
are written as 0600 files in a 0700 folder of their own under the credentials directory, which must be on a
filesystem the batch workers see (the home directory, on most sites); dask-jobqueue puts
their paths on the worker command line. The folder is deleted when the run ends; one left by a killed run
(its name carries host and pid) is deleted by the next run.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from coffea_dispatch.errors import DispatchError
from coffea_dispatch.output import is_stale, owned_name

PRIVATE_FOLDER = 0o700
PRIVATE_FILE = 0o600


def default_credentials_directory() -> Path:
    """`$XDG_CACHE_HOME/coffea-dispatch/credentials` (beside the metadata cache), in the home directory."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "coffea-dispatch" / "credentials"


def remove_stale_credentials(root: Path) -> int:
    """Delete the credential folders of runs that are gone (SIGKILL, a lost node); how many."""
    now = time.time()
    removed = 0
    for folder in root.iterdir() if root.is_dir() else ():
        if folder.is_dir() and is_stale(folder, now):
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed


def _private_root(root: Path) -> Path:
    """The credentials directory, created 0700, and refused when others may write to it or it is not ours."""
    root.mkdir(parents=True, exist_ok=True, mode=PRIVATE_FOLDER)
    status = root.stat()
    if status.st_uid != os.getuid():
        raise DispatchError(f"{root}: the credentials directory belongs to another user; use --credentials-directory")
    if status.st_mode & 0o077:
        root.chmod(PRIVATE_FOLDER)  # ours: readable by nobody else
    return root


def _write_private(path: Path, text: str) -> str:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)
    return str(path)


@contextlib.contextmanager
def run_credentials(root: Path | None = None) -> Iterator:
    """A distributed `Security` requiring mutual TLS, backed by files made for this run under `root`
    (default: `default_credentials_directory()`), which are deleted when the block ends."""
    from distributed.security import Security

    root = _private_root(Path(root) if root else default_credentials_directory())
    remove_stale_credentials(root)
    folder = root / owned_name("run", secrets.token_hex(4))
    folder.mkdir(mode=PRIVATE_FOLDER)
    try:
        made = Security.temporary()  # one self-signed certificate: the CA, and every role's certificate
        certificate = _write_private(folder / "certificate.pem", made.tls_ca_file)
        key = _write_private(folder / "key.pem", made.tls_client_key)
        roles = ("client", "scheduler", "worker")
        files = {f"tls_{role}_{kind}": path for role in roles for kind, path in (("cert", certificate), ("key", key))}
        yield Security(tls_ca_file=certificate, require_encryption=True, **files)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
