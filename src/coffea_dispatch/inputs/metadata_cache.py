"""What planning learns about an input file, kept between runs: its entries, ROOT UUID and branch names (and,
as a hint for ordering the next run's queue, how long each of its chunks took).

Reading a NanoAOD TTree's metadata costs 0.3-0.6 s per file (1,500-2,700 branches); a rerun, a resume, a
`--validate` and the next analysis over the same dataset need the same numbers again. They are kept in the
user's cache folder (`$XDG_CACHE_HOME/coffea-dispatch/metadata`, or `--metadata-cache`), one small JSON file
per input and one list per distinct set of branch names (the files of a dataset share theirs).

An entry is used only while it is provably the same file: its ROOT UUID must match the one in the file's
header (one small read, not the TTree's metadata), and for a local file its size and mtime too (a `stat`):
a different file given the same size and mtime (`cp -p`, `rsync -a`, `touch -r`) has another UUID. An entry
is never trusted as it reads: every value is checked for its type and range, and against a checksum of the
whole entry, so a damaged or edited entry is described again and rewritten, never used (a wrong entry count
would silently drop events, or plan millions of chunks). Entries are written atomically under unique
temporary names, so runs sharing the cache never see a partial entry. The cache only saves time: a folder
that cannot be written (read-only home, quota) turns it off for the run, silently.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from coffea_dispatch.errors import OutputError
from coffea_dispatch.inputs.weights import valid_totals
from coffea_dispatch.output import write_bytes_atomic

FORMAT = 3  # 2: local identities carry the header's UUID; entries carry a checksum; 3: and the file's totals
MAX_ENTRIES = 2**48  # far above any TTree; a bigger count is a damaged entry
_HEX32 = re.compile(r"[0-9a-f]{32}")
_HEX64 = re.compile(r"[0-9a-f]{64}")


def default_folder() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "coffea-dispatch" / "metadata"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass(frozen=True)
class FileMetadata:
    entries: int
    uuid: str  # hex of the ROOT file's fUUID
    branches: str  # digest of the sorted branch names
    identity: dict  # local files: {"size", "mtime_ns", "uuid"} (the header's); remote files: {} (the UUID decides)
    totals: dict  # weights.input_totals: the file's sum of generator weights, or its luminosity blocks


@dataclass
class MetadataCache:
    folder: Path | None  # None: no cache (--no-metadata-cache)
    hits: int = 0
    misses: int = 0

    def _entry_path(self, filename: str, treename: str, kind: str = "files") -> Path:
        """Where the entry of `filename` is kept: its metadata (`files`), or its chunk times (`timings`)."""
        key = _digest(f"{FORMAT}\0{filename}\0{treename}")
        return self.folder / kind / key[:2] / f"{key}.json"

    def lookup(self, filename: str, treename: str, identity: dict) -> FileMetadata | None:
        """The cached metadata, if it was recorded for a file with this `identity` (size, mtime and header UUID
        of a local file; {} for a remote one, whose UUID the caller compares) and it is intact."""
        if self.folder is None:
            return None
        path = self._entry_path(filename, treename)
        try:
            content = json.loads(path.read_bytes())
        except (OSError, ValueError):  # absent, or not JSON: describe the file again
            return None
        metadata = _valid_entry(content, filename, treename)
        if metadata is None:  # damaged or edited: never trusted; the description of this run replaces it
            self.forget(filename, treename)
            return None
        if metadata.identity != identity or identity.get("uuid", metadata.uuid) != metadata.uuid:
            return None
        return metadata

    def forget(self, filename: str, treename: str) -> None:
        """Drop an entry found wrong (by its checks, or by a worker that opened the file)."""
        if self.folder is not None:
            self._entry_path(filename, treename).unlink(missing_ok=True)

    def branch_names(self, digest: str) -> frozenset[str] | None:
        if self.folder is None:
            return None
        try:
            names = (self.folder / "branches" / f"{digest}.txt").read_text("utf-8", "surrogateescape")
        except OSError:
            return None
        return frozenset(names.split("\n")) if _digest(names) == digest else None

    def store(self, filename: str, treename: str, metadata: FileMetadata, branch_names: list[str]) -> bool:
        """Keep `metadata` (False when there is no cache, or its folder cannot be written)."""
        if self.folder is None:
            return False
        names = "\n".join(sorted(branch_names))
        try:
            branches = self.folder / "branches" / f"{metadata.branches}.txt"
            # not fsynced: an entry a power cut leaves empty reads as absent
            if not branches.exists():
                write_bytes_atomic(branches, names.encode("utf-8", "surrogateescape"), durable=False)
            entry = {"file": filename, "tree": treename, **asdict(metadata)}
            entry["check"] = _checksum(entry)
            write_bytes_atomic(self._entry_path(filename, treename), json.dumps(entry).encode(), durable=False)
        except OutputError:  # the cache folder cannot be written: run without it
            self.folder = None
            return False
        return True

    def chunk_seconds(self, filename: str, treename: str) -> dict[str, float]:
        """How long each chunk of `filename` took when it last ran ("start-stop" -> seconds), for the order of
        the next run's queue (slowest first). A hint only: an absent or damaged entry is {}."""
        if self.folder is None:
            return {}
        try:
            content = json.loads(self._entry_path(filename, treename, "timings").read_bytes())
        except (OSError, ValueError):
            return {}
        if not isinstance(content, dict) or content.get("file") != filename or content.get("tree") != treename:
            return {}
        seconds = content.get("seconds")
        if not isinstance(seconds, dict):
            return {}
        return {k: float(v) for k, v in seconds.items() if isinstance(v, int | float) and 0 <= v < 1e7}

    def store_chunk_seconds(self, treename: str, seconds: dict[str, dict[str, float]]) -> None:
        """Remember the chunk times of this run (file -> "start-stop" -> seconds), merged with the known ones."""
        if self.folder is None:
            return
        for filename, chunks in seconds.items():
            known = {**self.chunk_seconds(filename, treename), **chunks}
            entry = {"file": filename, "tree": treename, "seconds": known}
            try:
                timings = self._entry_path(filename, treename, "timings")
                write_bytes_atomic(timings, json.dumps(entry).encode(), durable=False)
            except OutputError:
                return


def cache_at(folder: str | os.PathLike | None) -> MetadataCache:
    """The cache in `folder` (--metadata-cache), else in the user's cache folder."""
    return MetadataCache(Path(folder) if folder else default_folder())


def chunk_name(entrystart: int, entrystop: int) -> str:
    return f"{entrystart}-{entrystop}"


def chunk_range(name: str) -> tuple[int, int]:
    """`chunk_name`'s entry range back."""
    start, _, stop = name.partition("-")
    return int(start), int(stop)


def branches_digest(branch_names: list[str]) -> str:
    return _digest("\n".join(sorted(branch_names)))


def _checksum(entry: dict) -> str:
    return _digest(json.dumps({k: v for k, v in entry.items() if k != "check"}, sort_keys=True))


def _valid_entry(content, filename: str, treename: str) -> FileMetadata | None:
    """The entry's metadata when every value has its type and range and the checksum matches; else None."""
    if not isinstance(content, dict) or content.get("check") != _checksum(content):
        return None
    entries, uuid, branches, identity, totals = (
        content.get(k) for k in ("entries", "uuid", "branches", "identity", "totals")
    )
    valid = (
        content.get("file") == filename
        and content.get("tree") == treename
        and type(entries) is int
        and 0 <= entries < MAX_ENTRIES
        and isinstance(uuid, str)
        and _HEX32.fullmatch(uuid)
        and isinstance(branches, str)
        and _HEX64.fullmatch(branches)
        and isinstance(identity, dict)
        and all(type(identity.get(k)) is int and identity[k] >= 0 for k in ("size", "mtime_ns") if k in identity)
        and valid_totals(totals)
    )
    return FileMetadata(entries, uuid, branches, identity, totals) if valid else None
