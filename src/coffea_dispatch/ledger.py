"""What a `--dump` folder has already processed: resume after a crash, and check the dump's integrity.

`<dump>/.coffea-dispatch/` holds
- `files/<sample>/<file key>.json`: the chunks planned for one input file and the configuration fingerprint;
- `chunks/<sample>/<chunk key>.done`: written (atomically) by the worker after a chunk's processor returned,
  with the chunk's accumulator, statistics and the output files it wrote (with their size and mtime);
- `staging/<sample>/<chunk key>-<process>/`: the private `output_location` a processor writes into while
  its chunk runs (any processor, HiggsDNA's included); the files move into place only once it returned.

A chunk with a `.done` record is complete: its outputs were written atomically before the record was. A rerun
skips it and adds its saved accumulator, so summary and accumulator are those of a run that never stopped. The
fingerprint covers the workflow, its options and metaconditions and the schema: a dump written by another
configuration is refused (never mixed in), and so is one chunked differently (its outputs would overlap).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coffea_dispatch.errors import DispatchError, OutputError
from coffea_dispatch.output import chunk_output_name, input_stem, short_hash, write_bytes_atomic

LEDGER = ".coffea-dispatch"
OVERWRITE_HINT = "rerun with --overwrite to redo everything, or choose another --dump"


def fingerprint(configuration: dict[str, Any]) -> str:
    """A short stable hash of what decides a chunk's output (not where or how fast it is computed)."""
    text = json.dumps(configuration, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def chunk_key(filename: str, entrystart: int, entrystop: int) -> str:
    return chunk_output_name(filename, entrystart, entrystop).removesuffix(".parquet")


def file_key(filename: str) -> str:
    return f"{input_stem(filename)}-{short_hash(filename)}"


@dataclass
class Ledger:
    dump: Path
    fingerprint: str

    @property
    def folder(self) -> Path:
        return self.dump / LEDGER

    def marker(self, item) -> Path:
        return (
            self.folder / "chunks" / item.dataset / f"{chunk_key(item.filename, item.entrystart, item.entrystop)}.done"
        )

    def writes_here(self, output_location: Any) -> bool:
        """Does a processor with this `output_location` write its outputs into this dump?"""
        return output_location is not None and os.path.abspath(output_location) == os.path.abspath(self.dump)

    def staging(self, item) -> Path:
        """A fresh private folder for the chunk's outputs; leftovers of a crashed run of this chunk are removed."""
        folder = self.folder / "staging" / item.dataset
        key = chunk_key(item.filename, item.entrystart, item.entrystop)
        for leftover in folder.glob(f"{glob.escape(key)}-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        path = folder / f"{key}-{os.getpid()}-{threading.get_ident()}"
        path.mkdir(parents=True)
        return path

    def publish(self, staging: Path) -> list[str]:
        """Move what the processor wrote into the dump (same relative paths), each file fsynced and renamed, so
        a file under its final name is complete; returns the dump-relative paths."""
        published = []
        try:
            for source in sorted(p for p in staging.rglob("*") if p.is_file()):
                relative = source.relative_to(staging)
                target = self.dump / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                with open(source, "rb") as handle:
                    os.fsync(handle.fileno())
                os.replace(source, target)
                published.append(str(relative))
        except OSError as exc:
            where = exc.filename2 or exc.filename or staging  # the final path that could not be written
            raise OutputError(str(where), f"{type(exc).__name__}: {exc.strerror or exc}") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return published

    def record_chunk(self, item, result: dict[str, Any], outputs: list[str]) -> None:
        """After the chunk's processor returned and its outputs are in place: remember it and what it wrote."""
        import cloudpickle
        import lz4.frame

        record = {
            "fingerprint": self.fingerprint,
            "outputs": sorted(outputs),
            "stats": {o: _file_identity(self.dump / o) for o in outputs},
            "result": result,
        }
        try:
            write_bytes_atomic(self.marker(item), lz4.frame.compress(cloudpickle.dumps(record)))
        except OSError as exc:
            raise OutputError(str(self.marker(item)), f"{type(exc).__name__}: {exc.strerror or exc}") from None

    def completed(self, item) -> dict[str, Any] | None:
        """The saved result of a chunk already done with this configuration, else None."""
        record = read_marker(self.marker(item))
        if record is None:
            return None
        if record["fingerprint"] != self.fingerprint:
            raise DispatchError(
                f"{self.dump}: holds outputs of another configuration (workflow, options or cuts changed); "
                + OVERWRITE_HINT
            )
        if changed_outputs(self.dump, record):
            return None  # an output was deleted or changed since: redo the chunk
        return record["result"]

    def _plan_path(self, sample: str, filename: str) -> Path:
        return self.folder / "files" / sample / f"{file_key(filename)}.json"

    def check_plan(self, files: dict[str, dict[str, list[tuple[int, int]]]]) -> None:
        """Refuse a dump whose earlier run chunked a file differently or used another configuration."""
        for sample, per_file in files.items():
            for filename, chunks in per_file.items():
                earlier = _read_json(self._plan_path(sample, filename))
                if earlier is None:
                    continue
                if earlier.get("fingerprint") != self.fingerprint:
                    raise DispatchError(
                        f"{self.dump}: holds outputs of another configuration (workflow, options or cuts) for "
                        f"{filename}; {OVERWRITE_HINT}"
                    )
                if _overlapping(earlier.get("chunks", []), chunks):
                    raise DispatchError(
                        f"{self.dump}: {filename} was split into other chunks by an earlier run (another --chunk?):"
                        f" its outputs would overlap; {OVERWRITE_HINT}"
                    )

    def record_plan(self, files: dict[str, dict[str, list[tuple[int, int]]]]) -> None:
        """Per input file, the chunks planned (what `coffea-dispatch check` expects to find)."""
        for sample, per_file in files.items():
            for filename, chunks in per_file.items():
                path = self._plan_path(sample, filename)
                earlier = (_read_json(path) or {}).get("chunks", [])
                union = sorted({tuple(c) for c in earlier} | {tuple(c) for c in chunks})
                if [list(c) for c in union] != earlier:  # --max or --limit runs plan a part of the chunks
                    planned = {"file": filename, "fingerprint": self.fingerprint, "chunks": [list(c) for c in union]}
                    write_bytes_atomic(path, (json.dumps(planned) + "\n").encode())

    def clear(self, files: dict[str, dict[str, list[tuple[int, int]]]]) -> int:
        """--overwrite: for the input files of this run only (other samples, and the other jobs of a batch
        submission writing to the same dump, keep theirs), delete the outputs their recorded chunks wrote, then
        the records. Returns the number of output files removed."""
        removed = 0
        for sample, per_file in files.items():
            for filename in per_file:
                for marker in sorted(
                    (self.folder / "chunks" / sample).glob(f"{glob.escape(file_key(filename))}_*.done")
                ):
                    record = read_marker(marker)
                    for output in record["outputs"] if record else []:
                        target = self.dump / output
                        if target.exists():
                            target.unlink()
                            removed += 1
                    marker.unlink()
                self._plan_path(sample, filename).unlink(missing_ok=True)
        return removed


def _file_identity(path: Path) -> tuple[int, int] | None:
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    return (info.st_size, info.st_mtime_ns)


def changed_outputs(dump: Path, record: dict[str, Any]) -> list[str]:
    """The outputs of a completed chunk that are gone, or were rewritten or damaged since (size or mtime)."""
    stats = record.get("stats", {})
    return [
        o
        for o in record["outputs"]
        if (identity := _file_identity(dump / o)) is None or (o in stats and tuple(stats[o]) != identity)
    ]


def _overlapping(earlier: list, planned: list) -> bool:
    """A planned chunk that is not one of the earlier chunks but shares entries with one: another chunking."""
    known = {tuple(c) for c in earlier}
    return any(
        (start, stop) not in known and any(start < e_stop and e_start < stop for e_start, e_stop in known)
        for start, stop in planned
    )


def read_marker(path: Path) -> dict[str, Any] | None:
    import cloudpickle
    import lz4.frame

    try:
        return cloudpickle.loads(lz4.frame.decompress(path.read_bytes()))
    except FileNotFoundError:
        return None
    except Exception:  # a damaged record: the chunk is simply redone
        return None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


@dataclass
class SampleCheck:
    sample: str
    planned: int = 0
    complete: int = 0
    missing: list[str] = field(default_factory=list)  # chunks without a completion record or its outputs
    unreadable: list[str] = field(default_factory=list)  # outputs that exist but do not read as parquet
    unexpected: list[str] = field(default_factory=list)  # outputs no completed chunk wrote (another run's?)
    overlapping: list[str] = field(default_factory=list)  # outputs whose entry ranges overlap: events twice

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unreadable or self.unexpected or self.overlapping)


def check_dump(dump: str | os.PathLike) -> dict[str, SampleCheck]:
    """Every planned input chunk must have exactly one complete output: report what is missing, unreadable,
    unexpected or duplicated (overlapping entry ranges of one input file)."""
    import pyarrow.parquet as pq

    root = Path(dump)
    plans = sorted((root / LEDGER).glob("files/*/*.json"))
    if not plans:
        raise DispatchError(f"{root}: no record of a run here ({LEDGER}/ is missing or empty): not a --dump folder")
    checks: dict[str, SampleCheck] = {}
    referenced: dict[str, str] = {}  # output -> the chunk whose record lists it
    footers: dict[Path, dict[str, str] | None] = {}  # each parquet footer is read once, for both passes

    def footer(path: Path) -> dict[str, str] | None:
        if path not in footers:
            footers[path] = _metadata(path, pq)
        return footers[path]

    for plan_path in plans:
        sample = plan_path.parent.name
        check = checks.setdefault(sample, SampleCheck(sample))
        plan = _read_json(plan_path) or {}
        for start, stop in plan.get("chunks", []):
            check.planned += 1
            name = f"{plan['file']} (entries {start}-{stop})"
            record = read_marker(root / LEDGER / "chunks" / sample / f"{chunk_key(plan['file'], start, stop)}.done")
            if record is None:
                check.missing.append(name)
                continue
            for output in record["outputs"]:
                if output in referenced:  # the later chunk replaced the earlier one's file
                    check.overlapping.append(f"{output} written by both {referenced[output]} and {name}")
                referenced[output] = name
            changed = changed_outputs(root, record)
            deleted = [o for o in changed if not (root / o).exists()]
            broken = [o for o in record["outputs"] if o.endswith(".parquet") and o not in deleted]
            broken = [o for o in broken if footer(root / o) is None]
            if deleted:
                check.missing.append(f"{name}: output deleted ({deleted[0]})")
            elif changed or broken:
                check.unreadable.extend(f"{o} (changed since it was written)" for o in changed if o not in broken)
                check.unreadable.extend(broken)
            else:
                check.complete += 1
    for sample, check in checks.items():
        ranges: dict[tuple[str, str], list[tuple[int, int, str]]] = {}
        for path in sorted(p for p in (root / sample).rglob("*") if p.is_file() and not p.name.startswith(".")):
            relative = str(path.relative_to(root))
            if relative not in referenced:
                check.unexpected.append(relative)
            if path.suffix != ".parquet":
                continue
            metadata = footer(path)
            if metadata is None:
                if relative not in check.unreadable:
                    check.unreadable.append(relative)
                continue
            key = (path.parent.name, metadata.get("coffea_dispatch.input", ""))
            start, stop = (
                int(metadata.get("coffea_dispatch.entrystart", 0)),
                int(metadata.get("coffea_dispatch.entrystop", 0)),
            )
            for other_start, other_stop, other in ranges.get(key, []):
                if start < other_stop and other_start < stop:
                    check.overlapping.append(f"{relative} and {other}")
            ranges.setdefault(key, []).append((start, stop, relative))
    return checks


def _metadata(path: Path, pq) -> dict[str, str] | None:
    try:
        raw = pq.read_schema(path).metadata or {}
    except Exception:  # truncated, random bytes, not parquet at all: the footer does not read
        return None
    return {k.decode(): v.decode() for k, v in raw.items()}
