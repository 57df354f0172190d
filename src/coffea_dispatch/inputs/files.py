"""Opening ROOT inputs: one open file per process, reused by every chunk of that file.

coffea's Runner reopens the file and re-reads the TTree metadata for every chunk (about 1 s at NanoAOD's
1,500 branches); keeping the handle open makes later chunks of the same file nearly free. Local handles
survive fork(), so worker processes forked after planning inherit the files the planner already opened.
Every way of failing to open or read a file becomes a BadInputFile that names it; a remote open has a deadline
and ends at a Ctrl-C, even while XRootD's client waits on a server that accepts connections and never answers.
"""

from __future__ import annotations

import errno
import gc
import os
import stat
import struct
import sys
import threading
import time
import zlib
from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fnmatch import fnmatchcase

import uproot

from coffea_dispatch.errors import BadInputFile, MissingBranch
from coffea_dispatch.inputs.proxy import is_remote
from coffea_dispatch.signals import DeadlinePassed, call_with_deadline

UPROOT_TIMEOUT = 30  # seconds per request: uproot's own default, for an open given no timeout
OPEN_REQUESTS = 2  # a remote open waits this many timeouts at most: the file's open, then its header and keys
MAX_OPEN_FILES = 8  # files kept open per process while no thread reads them (besides those in use, never closed)
UPROOT_4 = uproot.__version__.startswith("4.")
# Errors that mean "this file cannot be read", as opposed to a bug in a processor.
READ_ERRORS = (OSError, EOFError, zlib.error, uproot.deserialization.DeserializationError)

# file -> (handle, local signature, what this process derived from the open file: see `derived`)
_open_files: OrderedDict[str, tuple[uproot.ReadOnlyDirectory, tuple | None, dict]] = OrderedDict()
# The threads of one process (a Dask worker's) share the handles: a file that a thread reads is never closed
# under it. `_in_use` counts the readers of each file; a handle forgotten while read waits in `_retired`.
_lock = threading.RLock()
_in_use: Counter[str] = Counter()
_retired: dict[str, list[uproot.ReadOnlyDirectory]] = {}


def is_local(filename: str) -> bool:
    return not is_remote(filename)


def _after_fork_in_child() -> None:
    """A forked child has one thread, none of the parent's readers, and must not share network connections
    with its parent (local memory maps are fine)."""
    global _lock
    _lock = threading.RLock()
    _in_use.clear()
    _retired.clear()
    for name in [n for n in _open_files if not is_local(n)]:
        del _open_files[name]


os.register_at_fork(after_in_child=_after_fork_in_child)


@contextmanager
def file_in_use(filename: str) -> Iterator[None]:
    """While the block runs, `filename` (and each of its replicas) stays open in this process, whatever other
    threads open meanwhile: a chunk's lazy arrays read the file until its processor returns."""
    names = [filename, *_replicas.get(filename, ())]
    with _lock:
        _in_use.update(names)
    try:
        yield
    finally:
        with _lock:
            _in_use.subtract(names)
            for name in names:
                if _in_use[name] <= 0:
                    del _in_use[name]
                    for handle in _retired.pop(name, ()):
                        handle.close()
            _close_idle_beyond_limit()


def _close_idle_beyond_limit() -> None:
    """Close the least recently used files no thread reads, keeping MAX_OPEN_FILES of them besides those in use
    (as many as the process has threads): a worker whose threads share more files than the bound would
    otherwise reopen them in turn, paying the TTree's metadata (0.3-0.6 s at NanoAOD's width) each time.
    Called with the lock held."""
    idle = [name for name in _open_files if not _in_use[name]]
    for name in idle[: max(0, len(idle) - MAX_OPEN_FILES)]:
        handle, *_ = _open_files.pop(name)
        handle.close()


def _retire(name: str, handle: uproot.ReadOnlyDirectory) -> None:
    """Close a handle taken out of the cache now, or when its last reader is done. Called with the lock held."""
    if _in_use[name]:
        _retired.setdefault(name, []).append(handle)
    else:
        handle.close()


def describe_error(exc: BaseException, limit: int = 300) -> str:
    """`Type: message` on one line (uproot's messages span several), cut to `limit` characters."""
    text = " ".join(str(exc).split())
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


PATH_ERRORS = {
    errno.ENOENT: "file does not exist (check the sample JSON)",
    errno.ELOOP: "is a loop of symbolic links (fix the link)",
    errno.ENOTDIR: "goes through a file as if it were a folder (check the sample JSON)",
    errno.ENAMETOOLONG: "name too long for the file system (shorten the path)",
    errno.EACCES: "permission denied (check the file's permissions)",
}
NOT_REGULAR = {
    stat.S_ISDIR: "a directory",
    stat.S_ISFIFO: "a FIFO (named pipe)",
    stat.S_ISSOCK: "a socket",
    stat.S_ISCHR: "a character device",
    stat.S_ISBLK: "a block device",
}


def _path_error(filename: str, exc: OSError) -> BadInputFile:
    return BadInputFile(filename, PATH_ERRORS.get(exc.errno, f"cannot be opened ({describe_error(exc)})"))


def _stat_regular(filename: str) -> os.stat_result:
    """A local input's stat; anything but a regular file is refused here, before opening: reading a FIFO would
    wait forever."""
    try:
        info = os.stat(filename.removeprefix("file://"))
    except OSError as exc:
        raise _path_error(filename, exc) from None
    if not stat.S_ISREG(info.st_mode):
        kind = next((name for test, name in NOT_REGULAR.items() if test(info.st_mode)), "a special file")
        raise BadInputFile(filename, f"is {kind}, not a ROOT file (check the sample JSON)")
    return info


def _local_signature(filename: str) -> tuple:
    """Identity of a local file's content while this process keeps it open: a file replaced at the same path is
    reopened, even one rewritten in place keeping its size and mtime (`cp -p`: the ctime moves, and nobody can
    set it back)."""
    info = _stat_regular(filename)
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


# the TFile header up to fUUID (uproot.reading's layout): small files, then files over 2 GB (fVersion >= 1000000)
_ROOT_HEADER_SMALL = struct.Struct(">4siiiiiiiBiiiH16s")
_ROOT_HEADER_BIG = struct.Struct(">4siiqqiiiBiqiH16s")
_BIG_FILE_VERSION = 1000000


def root_uuid_offset(header: bytes) -> int | None:
    """Where the fUUID's 16 bytes sit in a ROOT file's `header`; None when it is not a ROOT header."""
    if len(header) < _ROOT_HEADER_SMALL.size or not header.startswith(b"root"):
        return None
    big = struct.unpack_from(">i", header, 4)[0] >= _BIG_FILE_VERSION
    layout = _ROOT_HEADER_BIG if big else _ROOT_HEADER_SMALL
    return layout.size - 16 if len(header) >= layout.size else None


def root_header_uuid(header: bytes) -> str | None:
    """The fUUID a ROOT file's header carries (hex, as uproot's `fUUID.hex()`); None for anything else. ROOT
    draws it when the file is created, so a different file of the same size and mtime (`cp -p`, `rsync -a`,
    `touch -r`) has another, while a copy keeps it."""
    offset = root_uuid_offset(header)
    return header[offset : offset + 16].hex() if offset is not None else None


ROOT_HEADER_BYTES = _ROOT_HEADER_BIG.size


@dataclass(frozen=True)
class LocalFile:
    """What the main process learns of a local input without opening it as ROOT: a stat and the header's UUID
    (one small read, not the TTree's metadata)."""

    device: int
    inode: int
    size: int
    mtime_ns: int
    uuid: str | None  # None: the first bytes are not a ROOT header (the worker that opens it says why)

    @property
    def identity(self) -> dict:
        """What tells this file from another one at the same path: kept by the metadata cache and the dump."""
        return {"size": self.size, "mtime_ns": self.mtime_ns, "uuid": self.uuid}


def inspect_local(filename: str) -> LocalFile:
    info = _stat_regular(filename)
    try:
        with open(filename.removeprefix("file://"), "rb") as handle:
            header = handle.read(ROOT_HEADER_BYTES)
    except OSError as exc:
        raise _path_error(filename, exc) from None
    return LocalFile(info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, root_header_uuid(header))


def local_identity(filename: str) -> dict:
    """A local file's `LocalFile.identity`: recorded with a dump's chunks and the metadata cache's entries."""
    return inspect_local(filename).identity


REMOTE_RETRY_PAUSE = 1.0  # seconds before the first retry of a remote file; doubled for each next one


_XRD_SET_BY_US: set[str] = set()


def configure_xrootd(timeout: float) -> None:
    """Make the XRootD client honour --timeout (its own defaults retry a dead server for 15 s and wait for a
    request up to 30 min) and leave retrying to us (--retries). It looks at its timeouts every 15 s by default
    (TimeoutResolution): a 5 s timeout expired after 15; every second, it expires on time. XRD_* variables the
    user set are kept; child processes and batch jobs inherit ours; a client already running in this process
    is told too."""
    settings = {
        "RequestTimeout": int(timeout),
        "ConnectionWindow": int(timeout),
        "ConnectionRetry": 1,
        "TimeoutResolution": 1,
    }
    for key, value in settings.items():
        variable = f"XRD_{key.upper()}"
        if variable in os.environ and variable not in _XRD_SET_BY_US:
            continue
        os.environ[variable] = str(value)
        _XRD_SET_BY_US.add(variable)
        client = sys.modules.get("XRootD.client")
        if client is not None:
            client.EnvPutInt(key, value)


def retrying(filename: str, retries: int, attempt):
    """`attempt()`, again up to `retries` times with growing pauses when `filename` is remote and reading
    it failed (a server restarting, a redirector hiccup); a local file's error is final at once."""
    tries = 1 + (retries if is_remote(filename) else 0)
    for number in range(tries):
        try:
            return attempt()
        except BadInputFile as exc:
            if number == tries - 1 or isinstance(exc, MissingBranch):
                raise
            forget_file(filename)
            time.sleep(REMOTE_RETRY_PAUSE * 2**number)


# file (its first replica) -> every replica, in the order to try; set in every process that opens files
_replicas: dict[str, list[str]] = {}
_served_by: dict[str, str] = {}


def register_replicas(replicas: dict[str, list[str]]) -> None:
    _replicas.update(replicas)


def served_by(filename: str) -> str:
    """The replica this process read `filename` from (the file itself when it has no replicas)."""
    return _served_by.get(filename, filename)


def open_file(filename: str, timeout: float | None = None) -> uproot.ReadOnlyDirectory:
    """The cached handle for `filename`, opening it (the first of its replicas that opens) if needed."""
    copies = _replicas.get(filename)
    if not copies:
        return _open_one(filename, timeout)
    failures = []
    for replica in copies:
        try:
            handle = _open_one(replica, timeout)
        except BadInputFile as exc:
            failures.append(f"{replica}: {exc.reason}")
            continue
        _served_by[filename] = replica
        return handle
    raise BadInputFile(filename, f"no replica could be opened ({'; '.join(failures)})")


def _open_one(filename: str, timeout: float | None = None) -> uproot.ReadOnlyDirectory:
    """The cached uproot handle for `filename`, opening it if needed (or if the file changed on disk)."""
    signature = _local_signature(filename) if is_local(filename) else None
    with _lock:
        handle = _cached_handle(filename, signature)
        if handle is not None:
            return handle
        changed = filename in _open_files  # open, but from a file since replaced on disk
    if changed:
        forget_file(filename)
    options = {"timeout": timeout} if timeout is not None else {}
    if signature is not None and UPROOT_4 and ";" in os.path.basename(filename):
        raise BadInputFile(
            filename,
            "cannot be opened by uproot 4 (coffea 0.7), which reads ';' in a file name as URL parameters: rename "
            "the file, or use coffea 2025+ (uproot 5)",
        )
    try:
        if signature is not None:
            handle = _uproot_open(filename, options)
        else:  # XRootD's client blocks in C++: a Ctrl-C or the deadline must not wait for it
            seconds = OPEN_REQUESTS * (timeout or UPROOT_TIMEOUT)
            handle = call_with_deadline(lambda: _uproot_open(filename, options), seconds)
    except DeadlinePassed as late:
        raise BadInputFile(
            filename, f"not opened within {late.seconds:g} s: the server does not answer (--timeout)"
        ) from None
    except (*READ_ERRORS, ValueError) as exc:
        raise BadInputFile(filename, f"cannot be opened as a ROOT file ({describe_error(exc)})") from None
    return _keep_open(filename, handle, signature)


def _uproot_open(filename: str, options: dict) -> uproot.ReadOnlyDirectory:
    """uproot's open as every input is opened, in this thread or in the one a remote open is waited on from."""
    # no array cache: chunks never re-read the same entries, and the default 100 MB per open file
    # only keeps memory busy (measured: it doubles page faults when workers alternate between files)
    # {path: None}: the path is a file name only (uproot 4 would read "a;b.root:x" as object paths)
    with garbage_collection_paused():  # the file's streamers: many objects, no garbage
        return uproot.open({filename: None}, array_cache=None, **options)


def _cached_handle(filename: str, signature: tuple | None) -> uproot.ReadOnlyDirectory | None:
    """The open handle of `filename` if it was opened from the same file (`signature`), now the most recently
    used. Called with the lock held."""
    cached = _open_files.get(filename)
    if cached is None or cached[1] != signature:
        return None
    _open_files.move_to_end(filename)
    return cached[0]


def _keep_open(filename: str, handle: uproot.ReadOnlyDirectory, signature: tuple | None) -> uproot.ReadOnlyDirectory:
    """The handle to use from now on: ours, or the one another thread opened for the same file meanwhile."""
    with _lock:
        theirs = _cached_handle(filename, signature)
        if theirs is not None:
            handle.close()  # nobody has seen ours yet
            return theirs
        if filename in _open_files:
            _retire(filename, _open_files[filename][0])
        _open_files[filename] = (handle, signature, {})
        _close_idle_beyond_limit()
    return handle


def derived(filename: str) -> dict:
    """A place to keep what is worked out from `filename` while it stays open in this process (the branches a
    workflow reads, say: 0.1 s per chunk at 1,500 branches); emptied when the file is reopened. Call after
    open_file."""
    entry = _open_files.get(served_by(filename))
    return entry[2] if entry is not None else {}


def forget_file(filename: str) -> None:
    """Take `filename` (and the replica it was read from) out of the cache: the next open starts again from its
    first replica. A handle other threads still read is closed when they are done."""
    with _lock:
        names = {filename, _served_by.pop(filename, filename)}
        for name in names:
            cached = _open_files.pop(name, None)
            if cached is not None:
                _retire(name, cached[0])
    for name in names:
        if is_remote(name):
            _drop_remote_handle(name)


def _drop_remote_handle(url: str) -> None:
    """fsspec keeps remote file handles per URL beyond uproot's: after a server restart the cached one is dead
    ("I/O operation on closed file"), so a file being forgotten is dropped there too."""
    import fsspec

    try:
        filesystem, path = fsspec.core.url_to_fs(url)
        filesystem.invalidate_cache(path)
    except Exception:  # closing a handle to a dead server may fail too; it is gone either way
        pass


def is_stale_remote_handle(filename: str, exc: BaseException) -> bool:
    """The XRootD client raises ValueError on a handle its server dropped: a read failure, not a bug."""
    return isinstance(exc, ValueError) and is_remote(filename) and "closed file" in str(exc)


@contextmanager
def garbage_collection_paused() -> Iterator[None]:
    """Reading a TTree's metadata allocates some 50 objects per branch (130k at 2,656 branches), none of them
    garbage, while the trees of the other open files hold a million more: Python's cyclic collector, set off
    by the allocations, walks them all again and again. Paused while a tree is read, opening a 2,656-branch file
    took 1.7 s instead of 2.5 s on average (25 files, 8 kept open; measured). Garbage made meanwhile is
    collected later. With threads: whichever ends last leaves the collector as it found it."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def open_tree(filename: str, treename: str = "Events", timeout: float | None = None):
    """The TTree (or RNTuple) `treename` of `filename`."""
    handle = open_file(filename, timeout)
    try:
        with garbage_collection_paused():
            tree = handle[treename]
    except uproot.KeyInFileError:
        raise BadInputFile(filename, f"has no '{treename}' tree (is it a NanoAOD file?)") from None
    except READ_ERRORS as exc:
        forget_file(filename)
        raise BadInputFile(filename, f"'{treename}' cannot be read ({describe_error(exc)})") from None
    if not hasattr(tree, "num_entries"):  # uproot 4 (coffea 0.7) sees an RNTuple as an opaque object
        raise BadInputFile(
            filename,
            f"'{treename}' is an RNTuple, which uproot {uproot.__version__} cannot read (RNTuple needs uproot 5 "
            "and coffea 2025+; use the TTree version of the file)",
        )
    return tree


def branch_names(tree) -> list[str]:
    """The tree's top-level branch names, listed once per open file (a pass over every branch: 26 ms at
    1,500), though both describing the file and choosing a chunk's branches need them."""
    memo = derived(tree.file.file_path) if hasattr(tree, "file") else {}
    key = ("names", getattr(tree, "object_path", ""))
    if key not in memo:
        memo[key] = list(tree.keys(recursive=False)) if hasattr(tree, "keys") else []
    return memo[key]


def check_branch_names(filename: str, present: set[str] | frozenset[str], required: Iterable[str], workflow: str):
    """Fail with the first missing branch, named, instead of a KeyError deep inside a processor."""
    for branch in required:
        if branch not in present:
            raise MissingBranch(filename, branch, workflow)


def matching_branches(names: list[str], patterns: Iterable[str] | None) -> list[str] | None:
    """The branch `names` matching glob `patterns` (None: all branches), in the file's order."""
    if patterns is None:
        return None
    patterns = tuple(patterns)
    exact = {p for p in patterns if not any(c in p for c in "*?[")}
    globs = [p for p in patterns if p not in exact]
    return [name for name in names if name in exact or any(fnmatchcase(name, p) for p in globs)]
