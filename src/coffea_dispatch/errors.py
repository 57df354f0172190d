"""User-facing errors: one clear line, a fixed exit code, never a bare traceback."""

from __future__ import annotations

EXIT_BAD_INPUT = 2


class DispatchError(Exception):
    """Bad input or an unrecoverable condition the user can fix; the CLI prints the message alone."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __reduce__(self):
        # keep the class (and so the exit code) when the error crosses a process boundary
        return (type(self), (self.message,))


class PathError(DispatchError):
    """An error about one file: keeps `path` and `reason` when it crosses a process boundary."""

    def __init__(self, path: str, reason: str, message: str):
        super().__init__(message)
        self.path = path
        self.reason = reason

    def __reduce__(self):
        return (type(self), (self.path, self.reason))


class BadInputFile(PathError):
    """A ROOT input that cannot be opened or lacks what the workflow needs; skippable with --skipbadfiles."""

    def __init__(self, path: str, reason: str):
        super().__init__(path, reason, f"{path}: {reason}")


class MissingBranch(BadInputFile):
    """The file is readable but a branch the workflow needs is absent (e.g. reduced NanoAOD without photons)."""

    def __init__(self, path: str, branch: str, workflow: str):
        super().__init__(
            path,
            f"has no branch '{branch}', which the '{workflow}' workflow needs "
            "(use a NanoAOD file that has it, or --skipbadfiles to skip such files)",
        )
        self.branch = branch
        self.workflow = workflow

    def __reduce__(self):
        return (type(self), (self.path, self.branch, self.workflow))


class StalePlan(PathError):
    """A worker opened an input and found it is not the file the run planned from (its metadata cache entry was
    wrong, or the file was replaced while the run went on): the chunk is not run, the entry is dropped."""

    def __init__(self, path: str, reason: str):
        super().__init__(
            path, reason, f"{path}: {reason}; its metadata cache entry was dropped: rerun the same command"
        )


class RefusedOutput(DispatchError):
    """A processor wrote something that cannot be published as it is (a link out of its outputs, a FIFO)."""


class OutputError(PathError):
    """Writing an output failed (disk full, no permission, a file where a folder should be).

    Never confused with an unreadable input: --skipbadfiles must not turn a full disk into lost events.
    """

    def __init__(self, path: str, reason: str):
        super().__init__(path, reason, f"cannot write {path}: {reason} (free space or fix the folder, then rerun)")


class KilledWorkerError(DispatchError):
    """A chunk (a coffea WorkItem) killed the Dask workers that ran it (crash or memory) more often than Dask
    allows. Defined here, not beside the Dask executor: the run catches it without importing Dask."""

    def __init__(self, item, worker_memory_bytes: int | None):
        where = f" (entries {item.entrystart}-{item.entrystop})" if hasattr(item, "entrystart") else ""
        super().__init__(f"{item.filename}{where} killed the Dask workers that ran it (KilledWorker)")
        self.item = item
        self.worker_memory_bytes = worker_memory_bytes

    def __reduce__(self):
        return (type(self), (self.item, self.worker_memory_bytes))
