"""The order of a run's queue: likely-long work first, so that the last work to finish is short, while the
chunks of one file stay together.

A chunk that starts last ends the run: on a cluster of 64 slots, a 25 s chunk started 20 s into a run whose
other work takes 25 s makes it last 45 s. So the queue starts with the chunks the metadata cache timed (in an
earlier run) at more than twice the typical chunk, slowest first; then new files (FileTasks, which also find the
other chunks), biggest first; then every other chunk, file by file, the files of most work first (timed, else
most entries and chunks) and each file's chunks slowest first, except the last two per slot: slowest first
whatever their file, so the run ends on short chunks. Strict slowest-first over every chunk would
interleave the files and make each worker reopen them in turn (the TTree's metadata: 0.3-0.6 s per opening at
NanoAOD's width). Only the order changes: every item runs exactly once.
"""

from __future__ import annotations

from collections import defaultdict
from statistics import median

from coffea_dispatch.inputs.metadata_cache import MetadataCache, chunk_name
from coffea_dispatch.inputs.planning import PLANNED_ENTRIES, FileTask

OUTLIER_FACTOR = 2.0  # a chunk timed at more than this times the typical one starts first, wherever its file is
TAIL_WAVES = 2  # the last chunks, two per slot, are ordered slowest first across files


def slowest_first(tasks: list[FileTask], chunks: list, cache: MetadataCache, slots: int = 1) -> list:
    """FileTasks and chunks in the order to submit them, for `slots` chunks running at once."""
    expected = _expected_seconds(chunks, cache)
    timed = [seconds for seconds in expected.values() if seconds is not None]
    typical = median(timed) if timed else None
    outliers = [c for c in chunks if typical is not None and (expected[id(c)] or 0) > OUTLIER_FACTOR * typical]
    outliers.sort(key=lambda c: -expected[id(c)])
    first = {id(c) for c in outliers}
    by_file: dict[str, list] = defaultdict(list)
    for chunk in chunks:
        if id(chunk) not in first:
            by_file[chunk.filename].append(chunk)

    def seconds(chunk) -> float:
        return expected[id(chunk)] or 0.0

    def file_order(filename: str) -> tuple:
        rest = by_file[filename]
        return (-sum(seconds(c) for c in rest), -_file_entries(rest[0]), -len(rest), filename)

    rest = [c for f in sorted(by_file, key=file_order) for c in sorted(by_file[f], key=lambda c: -seconds(c))]
    tail = max(0, len(rest) - TAIL_WAVES * slots)  # the end of the run: the shortest chunks last, whatever the file
    rest[tail:] = sorted(rest[tail:], key=lambda c: -seconds(c))
    return [*outliers, *sorted(tasks, key=lambda t: -t.identity.get("size", 0)), *rest]


def _expected_seconds(chunks: list, cache: MetadataCache) -> dict[int, float | None]:
    """Each chunk's time in an earlier run; a chunk not timed (another --chunk) from its file's seconds per
    entry, else from the median rate of the other files; None when nothing was timed."""
    timed = {f: cache.chunk_seconds(f, tree) for f, tree in {(c.filename, c.treename) for c in chunks}}
    per_file = {f: _rates(times) for f, times in timed.items()}
    rates = {f: median(found) for f, found in per_file.items() if found}
    overall = median(rates.values()) if rates else None
    expected: dict[int, float | None] = {}
    for chunk in chunks:
        known = timed[chunk.filename].get(chunk_name(chunk.entrystart, chunk.entrystop))
        rate = rates.get(chunk.filename, overall)
        estimate = rate * (chunk.entrystop - chunk.entrystart) if rate is not None else None
        expected[id(chunk)] = known if known is not None else estimate
    return expected


def _rates(times: dict[str, float]) -> list[float]:
    """Seconds per entry of each timed chunk ("start-stop" -> seconds)."""
    rates = []
    for name, seconds in times.items():
        start, _, stop = name.partition("-")
        if start.isdigit() and stop.isdigit() and int(stop) > int(start):
            rates.append(seconds / (int(stop) - int(start)))
    return rates


def _file_entries(chunk) -> int:
    """The entries of the chunk's file, as planned (a bigger file first: its chunks are more of the work)."""
    return (chunk.usermeta or {}).get(PLANNED_ENTRIES, chunk.entrystop)
