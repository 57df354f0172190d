"""What planning learns about an input file, kept between runs: its entries, ROOT UUID and branch names.

Reading a NanoAOD TTree's metadata costs 0.3-0.6 s per file (1,500-2,700 branches); a rerun, a resume, a
`--validate` and the next analysis over the same dataset need the same numbers again. They are kept in the
user's cache folder (`$XDG_CACHE_HOME/coffea-dispatch/metadata`, or `--metadata-cache`), one small JSON file
per input and one list per distinct set of branch names (the files of a dataset share theirs).

An entry is used only while it is provably the same file: for a local file its size and mtime must match
(a `stat`, no open); for a remote file its ROOT UUID must match, read from the file's header (one small
read, not the TTree's metadata). Entries are written atomically under unique temporary names, so runs
sharing the cache never see a partial entry. The cache only saves time: a folder that cannot be written
(read-only home, quota) turns it off for the run, silently.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from coffea_dispatch.errors import OutputError
from coffea_dispatch.output import write_bytes_atomic

FORMAT = 1


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
    identity: dict  # local files: {"size", "mtime_ns"}; remote files: {} (the UUID decides)


@dataclass
class MetadataCache:
    folder: Path | None  # None: no cache (--no-metadata-cache)
    hits: int = 0
    misses: int = 0

    def _entry_path(self, filename: str, treename: str) -> Path:
        key = _digest(f"{FORMAT}\0{filename}\0{treename}")
        return self.folder / "files" / key[:2] / f"{key}.json"

    def lookup(self, filename: str, treename: str, identity: dict) -> FileMetadata | None:
        """The cached metadata, if it was recorded for a file with this `identity` (size and mtime of a local
        file; {} for a remote one, whose UUID the caller compares)."""
        if self.folder is None:
            return None
        try:
            content = json.loads(self._entry_path(filename, treename).read_bytes())
            metadata = FileMetadata(**{k: content[k] for k in ("entries", "uuid", "branches", "identity")})
        except (OSError, ValueError, KeyError, TypeError):  # absent, or damaged: describe the file again
            return None
        if content.get("file") != filename or metadata.identity != identity:
            return None
        return metadata

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
            write_bytes_atomic(self._entry_path(filename, treename), json.dumps(entry).encode(), durable=False)
        except OutputError:  # the cache folder cannot be written: run without it
            self.folder = None
            return False
        return True


def branches_digest(branch_names: list[str]) -> str:
    return _digest("\n".join(sorted(branch_names)))
