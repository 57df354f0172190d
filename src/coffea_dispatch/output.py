"""Where chunk outputs go and how they are written.

A chunk's parquet file appears under its final name only once it is complete (temporary name, fsync,
rename), so a crash never leaves a partial file that looks finished; the name encodes the input file and
entry range, so every chunk has exactly one output and reruns replace rather than duplicate.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from coffea.util import save

from coffea_dispatch.errors import OutputError

SYSTEMATIC_NOMINAL = "nominal"
LEDGER = ".coffea-dispatch"  # <dump>/.coffea-dispatch/: the dump's records (dump/ledger.py); no sample may be named so
MERGED_FOLDER = "merged"  # <dump>/merged/<sample>/: what `merge` writes; no sample may have that folder
METADATA_PREFIX = "coffea_dispatch."


def input_stem(filename: str) -> str:
    """The file's stem, for URLs too (root://host//store/a/b.root -> b)."""
    name = PurePosixPath(filename.split("?")[0]).name
    return name[: -len(".root")] if name.endswith(".root") else name


def short_hash(text: str, length: int = 10) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def chunk_output_name(filename: str, entrystart: int, entrystop: int) -> str:
    """`<file-stem>-<hash of the full input path>_<start>-<stop>.parquet`: unique per chunk, stable across runs."""
    return f"{input_stem(filename)}-{short_hash(filename)}_{entrystart}-{entrystop}.parquet"


def chunk_output_path(
    dump: str | os.PathLike,
    sample: str,
    filename: str,
    entrystart: int,
    entrystop: int,
    systematic: str = SYSTEMATIC_NOMINAL,
) -> Path:
    return Path(dump) / sample / systematic / chunk_output_name(filename, entrystart, entrystop)


def arrow_array(values: np.ndarray) -> pa.Array:
    """A pyarrow array sharing the numpy buffer.

    `pa.array(ndarray)` imports pandas on first use (pyarrow checks for pandas objects), about 0.2 s in every
    worker process; building numeric columns from their buffers avoids that and the copy.
    """
    values = np.ascontiguousarray(values)
    if values.ndim == 1 and values.dtype.kind in "iuf" and values.dtype.byteorder in "=|":
        return pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), len(values), [None, pa.py_buffer(values)])
    return pa.array(values)


def arrow_table(columns: Mapping[str, np.ndarray]) -> pa.Table:
    return pa.Table.from_arrays([arrow_array(v) for v in columns.values()], names=list(columns))


def _encode_metadata(metadata: Mapping[str, object]) -> dict[bytes, bytes]:
    return {str(k).encode(): str(v).encode() for k, v in metadata.items()}


TEMPORARY_SUFFIX = ".tmp"
TEMPORARY_SEPARATOR = "~"  # never in a host name; the name part is split off from the right
STALE_FOREIGN_SECONDS = 24 * 3600  # a temporary of another host (batch node) is left alone for this long


def temporary_path(target: Path) -> Path:
    """A unique temporary name beside `target` that says who writes it (host and PID), so a later run can
    tell the leftovers of a crashed writer from the files of one still running (`remove_stale_temporaries`)."""
    return target.with_name(owned_name(f".{target.name}", secrets.token_hex(4)) + TEMPORARY_SUFFIX)


@contextmanager
def atomic_writer(path: str | os.PathLike, durable: bool = True) -> Iterator[BinaryIO]:
    """A file that appears under `path` only once complete (temporary name, fsync, rename). It is created
    with mode 0666 less the umask, like any file the user writes (mkstemp's 0600 hides outputs from
    collaborators on shared storage); on any failure the temporary is removed and OutputError names `path`.

    `durable=False` skips the fsync, for files that can be derived again (caches, plans rebuilt from the chunk
    records): still never partial to a reader, but a power cut may leave them empty, which their readers
    treat as absent. An fsync costs milliseconds, more on network disks, with all workers of a run waiting
    on the same device."""
    target = Path(path)
    temporary = temporary_path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(descriptor, "wb") as sink:
            yield sink
            if durable:
                sink.flush()
                os.fsync(sink.fileno())
        os.replace(temporary, target)
    except OSError as exc:
        raise OutputError(str(target), f"{type(exc).__name__}: {exc.strerror or exc}") from None
    finally:
        with suppress(OSError):
            os.unlink(temporary)


def write_parquet_atomic(table: pa.Table, path: str | os.PathLike, metadata: Mapping[str, object]) -> Path:
    """Write `table` with key/value `metadata` to `path`, visible only when complete.

    Any failure (disk full, a file where a folder should be) leaves no file behind under the final name and
    raises OutputError, which no executor mistakes for an unreadable input.
    """
    existing = table.schema.metadata or {}
    table = table.replace_schema_metadata({**existing, **_encode_metadata(metadata)})
    with atomic_writer(path) as sink:
        pq.write_table(table, sink)
    return Path(path)


def write_bytes_atomic(path: str | os.PathLike, data: bytes, durable: bool = True) -> None:
    """Small records and manifests: a reader (or a resumed run) sees either the old file or the complete new one."""
    with atomic_writer(path, durable) as sink:
        sink.write(data)


def save_accumulator(value: object, path: str | os.PathLike) -> Path:
    """coffea's accumulator file (coffea.util.save), complete or absent; a write that fails is OutputError."""
    target = Path(path)
    temporary = temporary_path(target)
    try:
        save(value, str(temporary))
        os.replace(temporary, target)
    except OSError as exc:
        raise OutputError(str(target), f"{type(exc).__name__}: {exc.strerror or exc}") from None
    finally:
        temporary.unlink(missing_ok=True)
    return target


def owned_name(prefix: str, token: str) -> str:
    """`prefix~host~pid~token`: a file or folder name that says which process of which host made it."""
    return TEMPORARY_SEPARATOR.join((prefix, socket.gethostname(), str(os.getpid()), token))


def is_stale(path: Path, now: float) -> bool:
    """Made by an `owned_name` writer that is gone: a dead process of this host, or one of another host a day
    later. Names of any other form (a user's own files) are never stale."""
    parts = path.name.removesuffix(TEMPORARY_SUFFIX).rsplit(TEMPORARY_SEPARATOR, 3)
    if len(parts) != 4 or not parts[2].isdigit():
        return False
    if parts[1] == socket.gethostname():
        return not _process_alive(int(parts[2]))
    try:
        return now - path.lstat().st_mtime > STALE_FOREIGN_SECONDS
    except FileNotFoundError:
        return False


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def remove_stale_temporaries(folder: Path) -> int:
    """Delete the temporaries that crashed writers left under `folder` (a full disk, a SIGKILL between
    create and rename); those of writers still running, here or on other hosts, stay. Returns how many."""
    now = time.time()
    removed = 0
    for path in folder.rglob(f".*{TEMPORARY_SUFFIX}"):
        if path.is_file() and is_stale(path, now):
            with suppress(FileNotFoundError):
                path.unlink()
                removed += 1
    return removed


def read_parquet_metadata(path: str | os.PathLike) -> dict[str, str]:
    raw = pq.read_schema(path).metadata or {}
    return {k.decode(): v.decode() for k, v in raw.items() if not k.startswith(b"ARROW:")}
