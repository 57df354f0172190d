"""User processors given to the analysis JSON as `user_processors:ClassName` (tests/ is on sys.path)."""

from __future__ import annotations

import faulthandler
import os
import time

import awkward as ak
import numpy as np
from coffea import processor

from coffea_dispatch.higgsdna.diphoton import DiphotonProcessor


class CountPhotons(processor.ProcessorABC):
    """A typical user processor: takes **kwargs, reads all branches (no input_branches declared)."""

    def __init__(self, **options):
        self.options = options

    def process(self, events):
        return {events.metadata["dataset"]: {"events": len(events), "photons": int(ak.sum(ak.num(events.Photon)))}}

    def postprocess(self, accumulator):
        return accumulator


class StrictSignature(processor.ProcessorABC):
    """Accepts only the arguments it names: coffea-dispatch must not pass it anything else."""

    def __init__(self, output_location=None, year=None):
        self.output_location = output_location
        self.year = year

    def process(self, events):
        return {"year": {str(self.year): len(events)}}

    def postprocess(self, accumulator):
        return accumulator


class NeedsUnknownArgument(processor.ProcessorABC):
    def __init__(self, calibration_file):
        self.calibration_file = calibration_file

    def process(self, events):
        return {}

    def postprocess(self, accumulator):
        return accumulator


class Explodes(processor.ProcessorABC):
    def __init__(self, **options):
        pass

    def process(self, events):
        return {"ratio": 1 / 0}

    def postprocess(self, accumulator):
        return accumulator


class NotAProcessor:
    pass


KILLER_FILE = "Background_1"  # the generated file whose first chunk kills the workers


def kills_here(events) -> bool:
    return KILLER_FILE in events.metadata["filename"] and events.metadata["entrystart"] == 0


class AbortsOnOneChunk(DiphotonProcessor):
    """The base workflow, except that one chunk crashes the process (like a segfault in a C extension)."""

    def process(self, events):
        if kills_here(events):
            # the forked Dask worker inherited pytest's faulthandler: a passing run prints no thread dump
            faulthandler.disable()
            os.abort()
        return super().process(events)


class HogsMemoryOnOneChunk(DiphotonProcessor):
    """The base workflow, except that one chunk needs ~1.6 GB more memory than the rest."""

    def process(self, events):
        if kills_here(events):
            hog = np.ones(int(1.6 * 1024**3) // 8)
            time.sleep(1.5)  # long enough for the Nanny's memory monitor to see it
            del hog
        return super().process(events)


# fault injection: the tests point these at files of their own (the processors run in forked workers,
# subprocesses and SLURM jobs, which all inherit the environment)
CHUNK_LOG = "COFFEA_DISPATCH_TEST_CHUNK_LOG"
KILL_FLAG = "COFFEA_DISPATCH_TEST_KILL_FLAG"


def log_chunk(events) -> None:
    """Append the chunk to $COFFEA_DISPATCH_TEST_CHUNK_LOG: which chunks a run really processed."""
    log = os.environ.get(CHUNK_LOG)
    if log:
        line = f"{events.metadata['filename']} {events.metadata['entrystart']} {events.metadata['entrystop']}\n"
        with open(log, "a") as sink:
            sink.write(line)


class SlowDiphoton(DiphotonProcessor):
    """The base workflow, 0.3 s slower per chunk (time to kill a run in the middle), logging its chunks."""

    def process(self, events):
        time.sleep(0.3)
        output = super().process(events)
        log_chunk(events)
        return output


class KillsItsWorkerOnce(DiphotonProcessor):
    """The base workflow, except that the process running the first chunk of KILLER_FILE SIGKILLs itself, the
    first time only: the flag file $COFFEA_DISPATCH_TEST_KILL_FLAG records that it happened."""

    def process(self, events):
        flag = os.environ.get(KILL_FLAG)
        if flag and kills_here(events):
            try:
                os.close(os.open(flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                pass
            else:
                os.kill(os.getpid(), 9)
        return super().process(events)


class ReportsProxy(processor.ProcessorABC):
    """Returns the X509_USER_PROXY each chunk's process saw: the grid proxy must reach every worker."""

    def __init__(self, **options):
        pass

    def process(self, events):
        return {"proxy": {os.environ.get("X509_USER_PROXY", "none"): 1}, "pids": {os.getpid()}}

    def postprocess(self, accumulator):
        return accumulator


_done_once: set[str] = set()


def once_per_process(what: str) -> bool:
    """True the first time `what` is asked in this process: a job does its heavy part once, not per chunk."""
    first = what not in _done_once
    _done_once.add(what)
    return first


class SleepsPastItsWalltime(DiphotonProcessor):
    """The base workflow after one long sleep per process: a batch job with a short --walltime is killed in it.
    With COFFEA_DISPATCH_TEST_SLEEP_ONCE (a file path) only the first run sleeps (it creates the file): a rerun
    is quick, as after a fix."""

    def process(self, events):
        marker = os.environ.get("COFFEA_DISPATCH_TEST_SLEEP_ONCE")
        if marker and os.path.exists(marker):
            return super().process(events)
        if once_per_process("sleep"):
            if marker:
                open(marker, "w").close()
            time.sleep(float(os.environ.get("COFFEA_DISPATCH_TEST_SLEEP", "300")))
        return super().process(events)


class HoldsMemory(DiphotonProcessor):
    """The base workflow after holding COFFEA_DISPATCH_TEST_HOLD_MB of resident memory for 3 s, once per
    process: a batch job with a smaller --memory is killed for it, and completes with more."""

    def process(self, events):
        if once_per_process("memory"):
            block = np.ones(int(os.environ.get("COFFEA_DISPATCH_TEST_HOLD_MB", "1000")) * 2**17)  # 8-byte floats
            time.sleep(3)
            del block
        return super().process(events)


class KillsItsWorkerWhileSwitched(DiphotonProcessor):
    """The base workflow, except that the process running the first chunk of KILLER_FILE SIGKILLs itself for
    as long as the file $COFFEA_DISPATCH_TEST_KILL_SWITCH exists (what the kernel's OOM killer does to a chunk
    that needs too much memory, until the user changes something)."""

    def process(self, events):
        switch = os.environ.get(KILL_SWITCH)
        if switch and os.path.exists(switch) and kills_here(events):
            os.kill(os.getpid(), 9)
        return super().process(events)


KILL_SWITCH = "COFFEA_DISPATCH_TEST_KILL_SWITCH"


class WritesItsOwnFiles(processor.ProcessorABC):
    """A processor with HiggsDNA's contract (it writes its own parquet files and returns little), keeping the
    output folder under names of its own: `self.outdir`, and a path below it in a settings dict. Subclasses
    change how files are named or what else is written."""

    def __init__(self, output_location=None, **options):
        self.outdir = output_location
        tables = os.path.join(output_location, "{dataset}", "tables") if output_location else None
        self.settings = {"tables": tables, "version": 1}

    def file_name(self, events) -> str:
        meta = events.metadata
        return f"{os.path.basename(meta['filename'])}_{meta['entrystart']}-{meta['entrystop']}.parquet"

    def process(self, events):
        dataset = events.metadata["dataset"]
        selected = events[ak.num(events.Photon) >= 2]
        if self.settings["tables"] is not None:
            folder = self.settings["tables"].format(dataset=dataset)
            os.makedirs(folder, exist_ok=True)
            self.write(selected, os.path.join(folder, self.file_name(events)))
        return {dataset: {"events": len(events), "selected": len(selected)}}

    def write(self, events, path: str) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = {k: ak.to_numpy(events[k]) for k in ("run", "luminosityBlock", "event")}
        pq.write_table(pa.table(columns), path)

    def postprocess(self, accumulator):
        return accumulator


class WritesRandomNames(WritesItsOwnFiles):
    """Two files per chunk, named at random: nothing in a name tells which chunk wrote it."""

    def file_name(self, events) -> str:
        import uuid

        return f"{uuid.uuid4().hex}.parquet"

    def write(self, events, path: str) -> None:
        half = len(events) // 2
        super().write(events[:half], path)
        super().write(events[half:], path.replace(".parquet", "-b.parquet"))


class LinksItsOutput(WritesItsOwnFiles):
    """Also a symbolic link to its file, by absolute path (what os.symlink(os.path.abspath(...)) gives)."""

    def write(self, events, path: str) -> None:
        super().write(events, path)
        os.symlink(os.path.abspath(path), path.replace(".parquet", ".latest"))


class LinksOutsideItsOutputs(WritesItsOwnFiles):
    def write(self, events, path: str) -> None:
        super().write(events, path)
        os.symlink("/etc/hostname", path.replace(".parquet", ".host"))


class WritesBesideItsOutputFolder(WritesItsOwnFiles):
    """Also a file in `output_location/..`, outside the output folder."""

    def write(self, events, path: str) -> None:
        super().write(events, path)
        with open(os.path.join(self.outdir, "..", f"escaped-{events.metadata['entrystart']}.txt"), "w") as note:
            note.write("not an output")


class OneNameForEveryChunk(WritesItsOwnFiles):
    """Names its file after the dataset only: every chunk overwrites the one before."""

    def file_name(self, events) -> str:
        return "all.parquet"


class KeepsItsFolderReadOnly(WritesItsOwnFiles):
    """Keeps the output folder where it cannot be replaced (a read-only mapping)."""

    def __init__(self, output_location=None, **options):
        import types

        super().__init__(output_location)
        self.settings = types.MappingProxyType(dict(self.settings))


class FillsTheDiskAtTheEnd(DiphotonProcessor):
    """The base workflow; its postprocess (after every chunk is recorded) fills the disk of the dump's parent
    folder once, as another process on a shared disk might."""

    def postprocess(self, accumulator):
        parent = os.path.join(self.output_location, "..")
        if not os.path.exists(os.path.join(parent, "filled-once")):
            os.close(os.open(os.path.join(parent, "filled-once"), os.O_CREAT | os.O_WRONLY))
            with open(os.path.join(parent, "filler"), "wb", buffering=0) as filler:
                try:
                    while True:
                        filler.write(b"\0" * 2**20)
                except OSError:
                    pass
        return super().postprocess(accumulator)


SLOW_CHUNK = "COFFEA_DISPATCH_TEST_SLOW_CHUNK"  # "FILE_SUFFIX SECONDS": that file's first chunk sleeps so long


class SlowFirstChunk(DiphotonProcessor):
    """The base workflow; the first chunk of the file named by $COFFEA_DISPATCH_TEST_SLOW_CHUNK sleeps, and every
    chunk logs when it started and ended (after the entry range) to $COFFEA_DISPATCH_TEST_CHUNK_LOG."""

    def process(self, events):
        started = time.time()
        suffix, _, seconds = os.environ.get(SLOW_CHUNK, "").partition(" ")
        if suffix and events.metadata["filename"].endswith(suffix) and events.metadata["entrystart"] == 0:
            time.sleep(float(seconds))
        output = super().process(events)
        log = os.environ.get(CHUNK_LOG)
        if log:
            meta = events.metadata
            with open(log, "a") as sink:
                sink.write(f"{meta['filename']} {meta['entrystart']} {meta['entrystop']} {started} {time.time()}\n")
        return output
