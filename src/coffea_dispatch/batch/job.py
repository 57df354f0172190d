"""What a batch job leaves behind: `<sample>-<i>.result.json`, so status works without the batch system.

Written atomically when the job's run ends, whether it succeeded or failed; a job killed from outside (memory,
walltime, a cancel) leaves no record, which status reports as not finished.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from coffea_dispatch.output import write_bytes_atomic


@dataclass
class JobRecord:
    status: str = "failed"
    exit_code: int | None = None
    events: int | None = None
    chunks: int = 0
    bad_files: dict[str, dict[str, str]] = field(default_factory=dict)  # sample -> file -> reason (--skipbadfiles)
    wall_seconds: float = 0.0
    signal: int | None = None  # the signal that stopped it (SIGTERM from the scheduler, Ctrl-C)
    peak_rss_mb: float | None = None  # the job's own process tree at its largest (rusage)
    host: str = ""
    finished: str = ""
    completeness: dict = field(default_factory=dict)  # what the job read of its files (completeness.Completeness)


def peak_rss_mb() -> float:
    """The largest resident size of this process or any of its finished children (Linux: ru_maxrss in KiB)."""
    largest = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return round(largest / 1024, 1)


def write_record(path: str | os.PathLike, record: JobRecord) -> None:
    write_bytes_atomic(path, (json.dumps(asdict(record)) + "\n").encode())


def read_record(path: str | os.PathLike) -> JobRecord | None:
    try:
        return JobRecord(**json.loads(Path(path).read_text()))
    except (FileNotFoundError, json.JSONDecodeError, TypeError):
        return None


@contextmanager
def recording(path: str | os.PathLike) -> Iterator[JobRecord]:
    """Run the body, then write the record: done only for exit code 0, failed (with the code) otherwise."""
    record = JobRecord(host=socket.gethostname())
    started = time.perf_counter()
    try:
        yield record
    except KeyboardInterrupt as interrupt:  # SIGTERM, SIGHUP or Ctrl-C: the shell's 128 + signal number
        record.signal = getattr(interrupt, "signum", signal.SIGINT)
        record.exit_code = 128 + record.signal
        raise
    except BaseException as error:  # the exit code the command line will turn this error into
        record.exit_code = getattr(error, "exit_code", 1)
        raise
    finally:
        record.status = "done" if record.exit_code == 0 else "failed"
        record.wall_seconds = round(time.perf_counter() - started, 3)
        record.peak_rss_mb = peak_rss_mb()
        record.finished = time.strftime("%Y-%m-%dT%H:%M:%S")
        write_record(path, record)
