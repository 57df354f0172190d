"""Where chunk outputs go and how they are written.

A chunk's parquet file appears under its final name only once it is complete (temporary name, fsync,
rename), so a crash never leaves a partial file that looks finished; the name encodes the input file and
entry range, so every chunk has exactly one output and reruns replace rather than duplicate.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from coffea_dispatch.errors import OutputError

SYSTEMATIC_NOMINAL = "nominal"
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


def write_parquet_atomic(table: pa.Table, path: str | os.PathLike, metadata: Mapping[str, object]) -> Path:
    """Write `table` with key/value `metadata` to `path`, visible only when complete.

    Any failure (disk full, a file where a folder should be) leaves no file behind under the final name and
    raises OutputError, which no executor mistakes for an unreadable input.
    """
    target = Path(path)
    existing = table.schema.metadata or {}
    table = table.replace_schema_metadata({**existing, **_encode_metadata(metadata)})
    temporary = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        with os.fdopen(handle, "wb") as sink:
            pq.write_table(table, sink)
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(temporary, target)
    except OSError as exc:
        raise OutputError(str(target), f"{type(exc).__name__}: {exc.strerror or exc}") from None
    finally:
        if temporary is not None and os.path.exists(temporary):
            os.unlink(temporary)
    return target


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Small records and manifests: written under a temporary name, fsynced, renamed, so a reader (or a
    resumed run) sees either the old file or the complete new one."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with open(temporary, "wb") as sink:
        sink.write(data)
        sink.flush()
        os.fsync(sink.fileno())
    os.replace(temporary, target)


def read_parquet_metadata(path: str | os.PathLike) -> dict[str, str]:
    raw = pq.read_schema(path).metadata or {}
    return {k.decode(): v.decode() for k, v in raw.items() if not k.startswith(b"ARROW:")}
