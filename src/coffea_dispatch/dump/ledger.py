"""What a `--dump` folder has already processed, to resume after a crash (`check.py` checks its integrity).

`<dump>/.coffea-dispatch/` holds
- `configuration.json`: the configuration fingerprint and the chunk size of the dump, created once and
  atomically (hard link of a complete file, refused if it exists): of two runs racing into one dump with
  different configurations or chunkings, exactly one goes on and the other is refused before it writes;
- `files/<sample>/<file key>.json`: the chunks planned for one input file and the file's identity (ROOT UUID
  and entries; size and mtime for local files): a rerun over a replaced file redoes that file's chunks;
- `chunks/<sample>/<chunk key>.done`: written (atomically) by the worker after a chunk's processor returned,
  with the chunk's input, accumulator, statistics and the output files it wrote (size, mtime, checksum);
- `staging/<sample>/<chunk key>~<host>~<pid>~<thread>/`: the private `output_location` a processor writes into
  while its chunk runs (any processor, HiggsDNA's included); the files move into place only once it returned.

A chunk counts as done only if its record is intact, was made from the same input file, and every output it
lists is still there with its recorded size and checksum; otherwise it is redone. A rerun skips done chunks
and adds their saved accumulators, so summary and accumulator are those of a run that never stopped.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from coffea_dispatch.dump.checkpoints import STAGED_OUTPUTS, Checkpoints, Published
from coffea_dispatch.dump.outputs import changed_outputs, file_identity, staged_entries
from coffea_dispatch.errors import DispatchError, OutputError
from coffea_dispatch.inputs.planning import reading_digest as reading_of
from coffea_dispatch.output import (
    LEDGER,
    TEMPORARY_SEPARATOR,
    chunk_output_name,
    input_stem,
    is_stale,
    owned_name,
    remove_stale_temporaries,
    short_hash,
    temporary_path,
    write_bytes_atomic,
)

CONFIGURATION = "configuration.json"
OVERWRITE_HINT = "rerun with --overwrite to redo everything, or choose another --dump"
ANOTHER_CONFIGURATION = "holds outputs of another configuration (workflow, options or cuts changed)"


def fingerprint(configuration: dict[str, Any]) -> str:
    """A short stable hash of what decides a chunk's output (not where or how fast it is computed)."""
    text = json.dumps(configuration, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def chunk_key(filename: str, entrystart: int, entrystop: int) -> str:
    return chunk_output_name(filename, entrystart, entrystop).removesuffix(".parquet")


def file_key(filename: str) -> str:
    return f"{input_stem(filename)}-{short_hash(filename)}"


def uuid_text(fileuuid: bytes | str | None) -> str:
    return fileuuid.hex() if isinstance(fileuuid, bytes) else str(fileuuid or "")


def _split_record_name(name: str) -> tuple[str, str]:
    """`<file key>_<start>-<stop>.done` -> (file key, "<start>-<stop>")."""
    key, _, entries = name.removesuffix(".done").rpartition("_")
    return key, entries


def _range_of(marker: Path) -> tuple[int, int] | None:
    """A record's entry range, from its name."""
    start, _, stop = _split_record_name(marker.name)[1].partition("-")
    return (int(start), int(stop)) if start.isdigit() and stop.isdigit() else None


def chunk_record(dump: Path, sample: str, filename: str, entrystart: int, entrystop: int) -> Path:
    """Where the completion record of a chunk of `filename` is kept in `dump`."""
    return dump / LEDGER / "chunks" / sample / f"{chunk_key(filename, entrystart, entrystop)}.done"


def chunk_records(ledger_folder: Path, sample: str, key: str) -> list[Path]:
    """The completion records of every chunk of the input file whose `file_key` is `key`."""
    return sorted((ledger_folder / "chunks" / sample).glob(f"{glob.escape(key)}_*.done"))


def inputs_on_record(dump: Path) -> set[tuple[str, str]]:
    """(sample, file key) of every input the dump holds a plan or a chunk record of (one listing per sample)."""
    folder = dump / LEDGER
    on_record = {(p.parent.name, p.stem) for p in folder.glob("files/*/*.json")}
    for records in folder.glob("chunks/*"):
        with os.scandir(records) as entries:
            keys = {_split_record_name(e.name)[0] for e in entries if e.name.endswith(".done")}
        on_record.update((records.name, key) for key in keys)
    return on_record


def _dump_error(dump: Path, exc: OSError) -> DispatchError:
    reason = "no space left on the device" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
    return DispatchError(f"--dump {dump}: cannot write there ({reason}); fix that or choose another --dump")


@dataclass
class Ledger(Checkpoints):
    """The dump's record of what this configuration completed: the chunk runner's checkpoints, and what
    resume and `check` read."""

    dump: Path
    fingerprint: str
    chunk: int | None = None  # the chunk size every run into this dump must use
    unverifiable: str | None = None  # why this run's configuration cannot be compared (then nothing is reused)

    @property
    def folder(self) -> Path:
        return self.dump / LEDGER

    def marker(self, item) -> Path:
        return chunk_record(self.dump, item.dataset, item.filename, item.entrystart, item.entrystop)

    def open_folder(self, samples: Iterable[str]) -> list[str]:
        """Before anything else is written: the dump must be writable (one line if it is not: read-only, full,
        no permission), and what crashed writers left behind (temporaries, staging folders) in the ledger and
        in the folders of these samples is removed (not in the whole dump: it may be a big shared folder)."""
        probe = temporary_path(self.folder / ".writable")  # a name of its own: runs may start together
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with open(probe, "xb") as handle:
                handle.write(b"\0" * 4096)  # a block: a full disk refuses it
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            raise _dump_error(self.dump, exc) from None
        finally:
            probe.unlink(missing_ok=True)
        folders = [self.folder, *(self.dump / sample for sample in samples)]
        removed = sum(remove_stale_temporaries(f) for f in folders if f.is_dir()) + self._remove_stale_staging()
        notes = [f"removed {removed} temporary file(s) left by an earlier run that crashed"] if removed else []
        unrecorded = self._finish_abandoned(list(self.folder.glob("publishing/*/*")))
        if unrecorded:
            notes.append(f"removed {unrecorded} output(s) that a killed run published without recording their chunk")
        return notes

    def _remove_stale_staging(self) -> int:
        now, removed = time.time(), 0
        for folder in self.folder.glob("staging/*/*"):
            if folder.is_dir() and is_stale(folder, now):
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        return removed + self.remove_escaped()

    def remove_escaped(self) -> int:
        """Files a processor wrote far above its output folder (`../../x`) land beside the chunks' staging
        folders, where nothing else is ever a file: removed, counted."""
        removed = 0
        for path in [*self.folder.glob("staging/*"), *self.folder.glob("staging/*/*")]:
            if not path.is_dir() or path.is_symlink():
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def configuration(self) -> dict[str, Any] | None:
        """The dump's configuration, None for a new dump (or one written before configurations were kept)."""
        path = self.folder / CONFIGURATION
        for _ in range(20):  # a racing run that cannot hard-link writes it in place: wait for the content
            try:
                content = json.loads(path.read_text())
            except FileNotFoundError:
                return None
            except (json.JSONDecodeError, UnicodeDecodeError):
                time.sleep(0.05)
                continue
            if isinstance(content, dict) and "fingerprint" in content:
                return content
            break
        raise DispatchError(
            f"{path}: damaged (not the dump's configuration); delete it and rerun the same command "
            "(every chunk record is still verified), or choose another --dump"
        )

    def claim(self, replace: bool = False) -> None:
        """Make this run's configuration the dump's, or refuse in one line: created only if absent, so of two
        runs racing with different configurations exactly one wins (`replace`: --overwrite takes the dump)."""
        path = self.folder / CONFIGURATION
        content = (json.dumps(self._wanted()) + "\n").encode()
        try:
            if replace:
                write_bytes_atomic(path, content)
                return
            _create_if_absent(path, content)
        except OSError as exc:
            raise _dump_error(self.dump, exc) from None
        self.check_configuration()

    def _wanted(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint, "chunk": self.chunk}

    def check_configuration(self) -> None:
        """Refuse a dump made with another configuration or chunk size (reads only: before workers start)."""
        existing = self.configuration() or self._wanted()
        if self.unverifiable and existing != self._wanted():
            why = f"holds outputs of a run this one cannot be compared with (the processor's {self.unverifiable})"
            raise DispatchError(f"{self.dump}: {why}; {OVERWRITE_HINT}")
        if existing.get("fingerprint") != self.fingerprint:
            raise DispatchError(f"{self.dump}: {ANOTHER_CONFIGURATION}; {OVERWRITE_HINT}")
        if existing.get("chunk") != self.chunk:
            raise DispatchError(
                f"{self.dump}: holds chunks of --chunk {existing.get('chunk')} (this run: --chunk {self.chunk}), "
                f"so their outputs would overlap; rerun with --chunk {existing.get('chunk')}, or {OVERWRITE_HINT}"
            )

    def staging(self, item) -> Path:
        """A fresh private folder for the chunk, named after its process (a run of the same command beside this
        one keeps its own). What an earlier attempt at this chunk left is removed first, whatever the files'
        names: what it published without recording (its process was killed in between), and what it recorded
        (a chunk run again after its worker died) since this attempt replaces it."""
        key = chunk_key(item.filename, item.entrystart, item.entrystop)
        self._finish_abandoned(self._journals(item.dataset, key))
        self.discard(item)
        folder = self.folder / "staging" / item.dataset
        path = folder / owned_name(key, str(threading.get_ident()))
        (path / STAGED_OUTPUTS).mkdir(parents=True)
        return path

    def publish(self, staging: Path) -> Published:
        """Move what the processor wrote into the dump (same relative paths), each file fsynced and renamed, so
        a file under its final name is complete. The targets are journaled first: if this process dies before
        the chunk is recorded, the next attempt at the chunk removes them. Links within the outputs are
        published as links; one pointing elsewhere is refused before anything moves."""
        try:
            entries, escaped = staged_entries(staging)
            journal = self._journal_path(staging)
            write_bytes_atomic(journal, json.dumps([str(relative) for relative, _ in entries]).encode())
            published: list[str] = []
            try:
                for relative, link in entries:
                    self._move_into_place(staging / STAGED_OUTPUTS / relative, relative, link)
                    published.append(str(relative))
            except BaseException:
                for done in published:  # no output of an unrecorded chunk stays in the dump
                    (self.dump / done).unlink(missing_ok=True)
                journal.unlink(missing_ok=True)
                raise
        except OSError as exc:
            where = exc.filename2 or exc.filename or staging  # the final path that could not be written
            raise OutputError(str(where), f"{type(exc).__name__}: {exc.strerror or exc}") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return Published(published, escaped)

    def _move_into_place(self, source: Path, relative: PurePath, link: str | None) -> None:
        target = self.dump / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if link is not None:
            temporary = temporary_path(target)
            os.symlink(link, temporary)
            os.replace(temporary, target)
            return
        with open(source, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(source, target)

    def _journal_path(self, staging: Path) -> Path:
        """`publishing/<sample>/<staging folder's name>`: says which chunk, process and thread publish."""
        return self.folder / "publishing" / staging.parent.name / staging.name

    def _journals(self, sample: str, key: str) -> list[Path]:
        return list((self.folder / "publishing" / sample).glob(f"{glob.escape(key)}{TEMPORARY_SEPARATOR}*"))

    def _finish_abandoned(self, journals: list[Path]) -> int:
        """Remove what dead processes published without recording (their chunk's record does not list it)."""
        now, removed = time.time(), 0
        for journal in journals:
            if not is_stale(journal, now):
                continue
            try:
                targets = json.loads(journal.read_bytes())
            except (OSError, ValueError):
                targets = []
            key = journal.name.rsplit(TEMPORARY_SEPARATOR, 3)[0]
            record = read_marker(self.folder / "chunks" / journal.parent.name / f"{key}.done")
            recorded = set(record["outputs"]) if record else set()
            for target in (self.dump / t for t in targets if isinstance(t, str) and t not in recorded):
                if os.path.lexists(target) and not target.is_dir():
                    target.unlink()
                    removed += 1
            journal.unlink(missing_ok=True)
        return removed

    def record_chunk(self, item, result: dict[str, Any], outputs: list[str]) -> None:
        """After the chunk's processor returned and its outputs are in place: remember it, the input it read
        and what it wrote (size, mtime and checksum of each output, so a damaged output is noticed)."""
        import cloudpickle
        import lz4.frame

        record = {
            "fingerprint": self.fingerprint,
            "input": {
                "sample": item.dataset,
                "file": item.filename,
                "entrystart": item.entrystart,
                "entrystop": item.entrystop,
                "uuid": uuid_text(item.fileuuid),
                "reading": reading_of(item),
            },
            "outputs": sorted(outputs),
            "stats": {o: file_identity(self.dump / o, with_digest=True) for o in outputs},
            "result": result,
        }
        write_bytes_atomic(self.marker(item), lz4.frame.compress(cloudpickle.dumps(record)))
        key = chunk_key(item.filename, item.entrystart, item.entrystop)
        journal = self.folder / "publishing" / item.dataset / owned_name(key, str(threading.get_ident()))
        journal.unlink(missing_ok=True)  # recorded: its outputs are the record's now

    def completed(self, item) -> dict[str, Any] | None:
        """The saved result of a chunk already done with this configuration, else None."""
        record = read_marker(self.marker(item))
        if record is None:
            return None
        if record["fingerprint"] != self.fingerprint:
            raise DispatchError(f"{self.dump}: {ANOTHER_CONFIGURATION}; {OVERWRITE_HINT}")
        recorded = record.get("input", {})
        if recorded.get("uuid") not in (None, uuid_text(item.fileuuid)) or recorded.get("reading") != reading_of(item):
            return None  # made from another file at this path, or read as another tree or dataset metadata: redo
        if changed_outputs(self.dump, record):
            return None  # an output was deleted, damaged or changed since: redo the chunk
        return record["result"]

    def discard(self, item) -> int:
        """Before a chunk is redone: remove what its earlier record lists (outputs named after another input's
        UUID would otherwise stay beside the new ones) and the record. Returns the outputs removed."""
        return _discard_marker(self.dump, self.marker(item))

    def check_plan(self, files: dict[str, dict[str, list[tuple[int, int]]]]) -> None:
        """A dump without a configuration file (written by an older version): refuse it when an earlier run
        chunked a file differently or used another configuration."""
        for sample, per_file in files.items():
            for filename, chunks in per_file.items():
                earlier = read_plan(plan_path(self.dump, sample, filename))
                if earlier is None:
                    continue
                if earlier.get("fingerprint") != self.fingerprint:
                    raise DispatchError(f"{self.dump}: {ANOTHER_CONFIGURATION} for {filename}; {OVERWRITE_HINT}")
                if _overlapping(earlier.get("chunks", []), chunks):
                    raise DispatchError(
                        f"{self.dump}: {filename} was split into other chunks by an earlier run (another --chunk?):"
                        f" its outputs would overlap; {OVERWRITE_HINT}"
                    )

    def changed_inputs(self, identities: dict[str, dict[str, Any]], files) -> list[tuple[str, str]]:
        """(sample, file) of the inputs that are not the files an earlier run processed at the same path."""
        changed = []
        for sample, per_file in files.items():
            for filename in per_file:
                earlier = (read_plan(plan_path(self.dump, sample, filename)) or {}).get("input")
                if earlier is not None and earlier != identities.get((sample, filename), earlier):
                    changed.append((sample, filename))
        return changed

    def stray_chunks(self, files, ranges: dict[str, set[tuple[int, int]]]) -> list[Path]:
        """Records of these inputs whose entry range is not one of this chunking's: left by a run with another
        --chunk (older versions let two race); their outputs duplicate events of the right chunking."""
        stray = []
        for sample, per_file in files.items():
            for filename in per_file:
                for marker in chunk_records(self.folder, sample, file_key(filename)):
                    if _range_of(marker) not in ranges.get(filename, set()):
                        stray.append(marker)
        return stray

    def remove_records(self, markers: list[Path]) -> int:
        return sum(_discard_marker(self.dump, marker) for marker in markers)

    def record_input(
        self, sample: str, filename: str, chunks: list[tuple[int, int]], identity: Any, totals: dict | None = None
    ) -> None:
        self.record_plan({sample: {filename: chunks}}, {(sample, filename): identity}, {}, {filename: totals or {}})

    def record_plan(
        self, files, identities: dict[str, dict], ranges: dict[str, set], totals: dict[str, dict] | None = None
    ) -> None:
        """Per input file, its identity, its totals (what normalisation needs: weights.input_totals) and the
        chunks planned (what `coffea-dispatch check` expects to find): those of earlier runs (--max, --limit
        plan a part) that belong to this chunking, and this run's. A damaged plan file is rewritten."""
        totals = totals or {}
        for sample, per_file in files.items():
            for filename, chunks in per_file.items():
                path = plan_path(self.dump, sample, filename)
                earlier = read_plan(path) or {}
                valid = ranges.get(filename)
                kept = {tuple(c) for c in earlier.get("chunks", []) if valid is None or tuple(c) in valid}
                planned = {
                    "file": filename,
                    "fingerprint": self.fingerprint,
                    "input": identities.get((sample, filename)),
                    "chunks": [list(c) for c in sorted(kept | {tuple(c) for c in chunks})],
                    "totals": totals.get(filename) or earlier.get("totals") or {},
                }
                if planned != earlier:  # not fsynced: check rebuilds a lost plan from the chunk records
                    write_bytes_atomic(path, (json.dumps(planned) + "\n").encode(), durable=False)

    def clear(self, files: dict[str, dict[str, list[tuple[int, int]]]]) -> int:
        """--overwrite: for the input files of this run only (other samples, and the other jobs of a batch
        submission writing to the same dump, keep theirs), delete the outputs their recorded chunks wrote, then
        the records. Returns the number of output files removed."""
        removed = 0
        for sample, per_file in files.items():
            for filename in per_file:
                removed += self.remove_records(chunk_records(self.folder, sample, file_key(filename)))
                plan_path(self.dump, sample, filename).unlink(missing_ok=True)
        return removed


def _create_if_absent(path: Path, content: bytes) -> None:
    """Write `path` only if it does not exist, atomically: a complete temporary is hard-linked to the name
    (atomic on local disks and NFS; `link` fails if the name exists). Where hard links are not supported
    (some FUSE mounts) the file is created with O_EXCL and written in place."""
    temporary = temporary_path(path)
    write_bytes_atomic(temporary, content)
    try:
        os.link(temporary, path)
    except FileExistsError:
        pass
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            return
        with os.fdopen(descriptor, "wb") as sink:
            sink.write(content)
            os.fsync(sink.fileno())
    finally:
        temporary.unlink(missing_ok=True)


def _discard_marker(dump: Path, marker: Path) -> int:
    record = read_marker(marker)
    removed = 0
    for output in record["outputs"] if record else []:
        target = dump / output
        if target.is_symlink() or target.is_file():
            target.unlink()
            removed += 1
    marker.unlink(missing_ok=True)
    return removed


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
        record = cloudpickle.loads(lz4.frame.decompress(path.read_bytes()))
    except FileNotFoundError:
        return None
    except Exception:  # a damaged record: the chunk is simply redone
        return None
    if not isinstance(record, dict) or not {"fingerprint", "outputs", "result"} <= set(record):
        return None
    return record


def plan_path(dump: Path, sample: str, filename: str) -> Path:
    """Where the dump keeps an input's plan: its identity, totals and the chunks runs planned of it."""
    return Path(dump) / LEDGER / "files" / sample / f"{file_key(filename)}.json"


def read_plan(path: Path) -> dict[str, Any] | None:
    """A file's plan (`files/<sample>/<file key>.json`); None when absent or damaged (truncated, or JSON of the
    wrong shape): it is rebuilt."""
    try:
        plan = json.loads(path.read_bytes())
    except (FileNotFoundError, ValueError):
        return None
    valid = (
        isinstance(plan, dict)
        and isinstance(plan.get("file"), str)
        and isinstance(plan.get("chunks"), list)
        and all(isinstance(c, list) and len(c) == 2 and all(isinstance(n, int) for n in c) for c in plan["chunks"])
    )
    return plan if valid else None
