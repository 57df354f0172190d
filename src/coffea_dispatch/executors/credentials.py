"""TLS credentials made for one run, so that only our own workers and client get into the Dask scheduler.

A Dask scheduler runs whatever Python a connected client sends, as the user who started it, with their grid
proxy and Kerberos tickets. On a shared login node anyone who finds the port could connect. Every cluster we
start therefore uses mutual TLS: distributed's scheduler requires a certificate signed by the run's own CA from
every client and worker. The key and certificate (distributed's `Security.temporary()`, a self-signed pair)
are written as 0600 files in a folder of the run's own, inside our private 0700 folder of the credentials
directory (which must be on a filesystem the batch workers see: the home directory, on most sites; it may be
shared, it is never changed); dask-jobqueue puts their paths on the worker command line. Each run records what
it makes before making it; the files are deleted when the run ends, those of a killed run (the record names its
host and pid) by the next run, and nothing that no record lists is ever deleted.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from coffea_dispatch.errors import DispatchError
from coffea_dispatch.output import is_stale, owned_name

PRIVATE_FOLDER = 0o700
PRIVATE_FILE = 0o600
CERTIFICATE, KEY = "certificate.pem", "key.pem"
RECORD_SUFFIX = ".made"  # beside each run's folder: what the run made, so that only that is ever deleted


def default_credentials_directory() -> Path:
    """`$XDG_CACHE_HOME/coffea-dispatch/credentials` (beside the metadata cache), in the home directory."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "coffea-dispatch" / "credentials"


def private_folder(root: Path) -> Path:
    """Our own folder inside the credentials directory, `coffea-dispatch-<uid>`, made 0700 if absent (and the
    directory too, 0700, if it does not exist). Nothing we did not make is ever chmod-ed: a shared directory
    keeps its mode, and a private folder that is not ours, or that others may enter, is refused in one line."""
    folder = root / f"coffea-dispatch-{os.getuid()}"
    try:
        root.mkdir(parents=True, exist_ok=True, mode=PRIVATE_FOLDER)
        folder.mkdir(exist_ok=True, mode=PRIVATE_FOLDER)
        status = folder.lstat()
    except OSError as exc:
        raise DispatchError(
            f"--credentials-directory {root}: cannot make a private folder there ({exc.strerror or exc}); choose "
            "another --credentials-directory (on a filesystem the worker jobs see, such as your home directory)"
        ) from None
    if not stat.S_ISDIR(status.st_mode) or status.st_uid != os.getuid():
        raise DispatchError(f"{folder}: not a folder of yours; remove it or choose another --credentials-directory")
    if status.st_mode & 0o077:
        raise DispatchError(
            f"{folder}: others may enter it (mode {stat.filemode(status.st_mode)}); run `chmod 700 {folder}` or "
            "choose another --credentials-directory"
        )
    return folder


def remove_stale_credentials(private: Path) -> int:
    """Delete what runs that are gone (SIGKILL, a lost node) made, as their records list it; how many runs."""
    now, removed = time.time(), 0
    for record in private.glob(f"*{RECORD_SUFFIX}"):
        if is_stale(record, now):  # its name carries host and pid
            _remove_made(private, record)
            removed += 1
    return removed


def _remove_made(private: Path, record: Path) -> None:
    """Delete the files a run's record lists (regular files of ours, in our folder), then its folder when
    nothing else is in it, then the record."""
    try:
        made = json.loads(record.read_text())
    except (OSError, ValueError):
        made = {}
    folder = private / str(made.get("folder", ""))
    if folder.parent == private:  # a record naming no folder of ours deletes nothing
        for path in (folder / str(name) for name in made.get("files", [])):
            with contextlib.suppress(OSError):
                if path.parent == folder and _ours(path):
                    path.unlink()
        with contextlib.suppress(OSError):
            folder.rmdir()  # fails, and keeps it, if anything we did not make is in it
    record.unlink(missing_ok=True)


def _ours(path: Path) -> bool:
    status = path.lstat()
    return stat.S_ISREG(status.st_mode) and status.st_uid == os.getuid()


def _write_private(path: Path, text: str) -> str:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, PRIVATE_FILE)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)
    return str(path)


@contextlib.contextmanager
def run_credentials(root: Path | None = None) -> Iterator:
    """A distributed `Security` requiring mutual TLS, backed by files made for this run in our private folder
    under `root` (default: `default_credentials_directory()`), which are deleted when the block ends. What the
    run makes is recorded before it is made, so a run killed at any point is cleaned up by the next one."""
    from distributed.security import Security

    private = private_folder(Path(root) if root else default_credentials_directory())
    remove_stale_credentials(private)
    name = owned_name("run", secrets.token_hex(4))
    record = private / f"{name}{RECORD_SUFFIX}"
    _write_private(record, json.dumps({"folder": name, "files": [CERTIFICATE, KEY]}))
    folder = private / name
    try:
        folder.mkdir(mode=PRIVATE_FOLDER)
        made = Security.temporary()  # one self-signed certificate: the CA, and every role's certificate
        certificate = _write_private(folder / CERTIFICATE, made.tls_ca_file)
        key = _write_private(folder / KEY, made.tls_client_key)
        roles = ("client", "scheduler", "worker")
        files = {f"tls_{role}_{kind}": path for role in roles for kind, path in (("cert", certificate), ("key", key))}
        yield Security(tls_ca_file=certificate, require_encryption=True, **files)
    finally:
        _remove_made(private, record)
