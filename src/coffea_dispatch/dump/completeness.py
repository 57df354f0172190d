"""Did a run read every event it was given, and with which sum of generator weights? Per sample: the files
listed, read, partly read, skipped as bad, failed and not run; entries and generator weights of the inputs
against those of the events processed; what is left, as a sample JSON that runs.

A yield is normalised by the sum of generator weights of the events read. When files are skipped
(--skipbadfiles), a job is abandoned, --max or --limit trims a sample, or a remote file fails, the two drift
apart unless someone sums the weights of exactly what was read: every chunk counts its own events' weights
(weights.chunk_count) and every input its whole (weights.input_totals), so a run, a dump (`check`) and a
submission (`status`) all answer the same way. The dump keeps the answer as `completeness.json`
(`completeness_file.py`), which also keeps the listing (every file a run into the dump was given) and why
files were skipped, so `check` can tell "not run" from "never asked for".
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coffea_dispatch.dump.coffea_form import FORMATS, TREE, file_entry, fileset_text
from coffea_dispatch.errors import BadInputFile, DispatchError
from coffea_dispatch.inputs.analysis import sample_json_text
from coffea_dispatch.inputs.compat import file_uuid
from coffea_dispatch.inputs.describe import inspect_inputs
from coffea_dispatch.inputs.files import open_tree
from coffea_dispatch.inputs.metadata_cache import MetadataCache, chunk_name, chunk_range
from coffea_dispatch.inputs.weights import RUNS_TREE, blocks_read, input_totals
from coffea_dispatch.output import write_bytes_atomic
from coffea_dispatch.result_keys import READ_KEY

FORMAT = 1
READ, PARTIAL, SKIPPED, FAILED, NOT_RUN = "read", "partial", "skipped", "failed", "not run"
STATUSES = (READ, PARTIAL, SKIPPED, FAILED, NOT_RUN)
SUMS_AGREE = 1e-6  # relative: a file read whole whose two sums differ by more is named (skimmed or damaged)


def percent(fraction: float | None) -> str:
    """A share that never rounds to 100% or 0% unless it is exactly that."""
    if fraction is None:
        return "?"
    if 0.9999 < fraction < 1:
        return ">99.99%"
    if 0 < fraction < 0.0001:
        return "<0.01%"
    return f"{fraction:.2%}"


@dataclass
class FileReading:
    """One input: what it holds (entries, weights.input_totals) and what was read of it, chunk by chunk."""

    entries: int | None = None  # None: never described (not run, and not in the metadata cache)
    totals: dict = field(default_factory=dict)
    read: dict[str, tuple] = field(default_factory=dict)  # "start-stop" -> weights.ChunkCount
    problem: str = ""  # "skipped: why" (unusable when described) or "failed: why" (a read or a job failed)
    uuid: str = ""  # the ROOT UUID of the file read: a replaced input's earlier chunks do not count

    def read_ranges(self) -> list[tuple[int, int]]:
        """The entry ranges read, merged."""
        merged: list[list[int]] = []
        for start, stop in sorted(chunk_range(name) for name in self.read):
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], stop)
            else:
                merged.append([start, stop])
        return [(a, b) for a, b in merged]

    def missing(self) -> list[tuple[int, int]]:
        """The entry ranges not read (the whole file when its size is unknown: [(0, -1)])."""
        if self.entries is None:
            return [(0, -1)]
        gaps, position = [], 0
        for start, stop in self.read_ranges():
            if start > position:
                gaps.append((position, start))
            position = max(position, stop)
        if position < self.entries:
            gaps.append((position, self.entries))
        return gaps

    @property
    def status(self) -> str:
        if self.entries is not None and not self.missing():
            return READ  # a file of zero events too: it is read, never failed
        if self.problem:
            return SKIPPED if self.problem.startswith(SKIPPED) else FAILED
        return PARTIAL if self.read else NOT_RUN

    @property
    def entries_read(self) -> int:
        return sum(count[0] for count in self.read.values())

    @property
    def sumw_read(self) -> float | None:
        """The sum of the generator weights of the events read (None: data, or not known)."""
        sums = [count[1] for count in self.read.values() if count[1] is not None]
        return math.fsum(sums) if sums else None

    @property
    def lumis_read(self) -> set[int]:
        """The luminosity blocks all of whose events were read (weights.blocks_read)."""
        return blocks_read(self.read.values(), self.status == READ, self.totals.get("lumi_events"))

    def weight_fraction(self) -> float | None:
        """How much of this input's weight (entries, for data) was read; None when its size is unknown."""
        if self.status == READ:
            return 1.0
        if self.entries is None:
            return None
        events_sumw, read_sumw = self.totals.get("sumw_events"), self.sumw_read
        if events_sumw and read_sumw is not None:
            return read_sumw / events_sumw
        return self.entries_read / self.entries if self.entries else 0.0

    def disagreement(self) -> tuple[float, float] | None:
        """A file read whole whose Runs tree's sum differs from its events' (skimmed, or damaged)."""
        runs, events = self.totals.get("sumw"), self.sumw_read
        if self.status != READ or self.totals.get("source") != RUNS_TREE or runs is None or events is None:
            return None
        return None if math.isclose(runs, events, rel_tol=SUMS_AGREE, abs_tol=1e-9) else (runs, events)

    def to_json(self) -> dict[str, Any]:
        read = {name: [c[0], c[1], _lumis_json(c[2])] for name, c in sorted(self.read.items())}
        return {"status": self.status, "entries": self.entries, "totals": self.totals, "read": read,
                "problem": self.problem, "uuid": self.uuid}  # fmt: skip

    @classmethod
    def from_json(cls, data: Any) -> FileReading:
        if not isinstance(data, dict):
            return cls()
        read = {}
        for name, count in (data.get("read") or {}).items():
            if isinstance(count, list) and len(count) == 3:
                read[name] = (int(count[0]), count[1], _lumis_from_json(count[2]))
        entries = data.get("entries")
        return cls(
            entries if type(entries) is int else None,
            data.get("totals") if isinstance(data.get("totals"), dict) else {},
            read,
            str(data.get("problem") or ""),
            str(data.get("uuid") or ""),
        )


def _lumis_json(lumis) -> list | None:
    return [list(b) if isinstance(b, tuple) else b for b in lumis] if lumis is not None else None


def _lumis_from_json(lumis) -> tuple | None:
    return tuple(tuple(b) if isinstance(b, list) else b for b in lumis) if isinstance(lumis, list) else None


@dataclass
class SampleReading:
    """One sample's inputs, in the order they were listed, and its numbers."""

    sample: str
    files: dict[str, FileReading] = field(default_factory=dict)
    # the dataset's (coffea's fileset); None: not said (a job array's collection), {}: the run gave none
    metadata: dict[str, Any] | None = None
    trees: dict[str, str] = field(default_factory=dict)  # file -> the tree it is read from, where not Events

    def counts(self) -> Counter:
        return Counter(reading.status for reading in self.files.values())

    @property
    def complete(self) -> bool:
        return all(reading.status == READ for reading in self.files.values())

    @property
    def simulation(self) -> bool:
        return any("sumw" in reading.totals for reading in self.files.values())

    @property
    def entries(self) -> int | None:
        """Entries of every input (None when one is not known)."""
        values = [r.entries for r in self.files.values()]
        return None if None in values else sum(values)

    @property
    def entries_read(self) -> int:
        return sum(r.entries_read for r in self.files.values())

    @property
    def sumw(self) -> float | None:
        """The sum of generator weights of every input (None when one is not known)."""
        values = [r.totals.get("sumw") for r in self.files.values() if r.entries != 0]
        return None if None in values or not values else math.fsum(values)

    @property
    def sumw_read(self) -> float | None:
        sums = [r.sumw_read for r in self.files.values() if r.sumw_read is not None]
        return math.fsum(sums) if sums else None

    def sumw_of_inputs_read(self) -> float | None:
        """What to normalise with: each input's sum of generator weights times the part of it that was read."""
        parts = []
        for reading in self.files.values():
            fraction = reading.weight_fraction()
            if fraction:
                parts.append(reading.totals.get("sumw", 0.0) * fraction)
        return math.fsum(parts) if self.simulation else None

    def fraction(self) -> float | None:
        """The part of the sample read: of its generator weight (simulation), of its entries (data)."""
        if self.complete:
            return 1.0
        if self.simulation:
            total, read = self.sumw, self.sumw_of_inputs_read()
            return None if total is None or read is None else (read / total if total else 0.0)
        total = self.entries
        return None if total is None else (self.entries_read / total if total else 1.0)

    def lumis(self) -> tuple[int, int] | None:
        """Data: (luminosity blocks read, in the inputs); None for simulation or when not known."""
        if self.simulation or not any("lumis" in r.totals for r in self.files.values()):
            return None
        read = sum(len(r.lumis_read) for r in self.files.values())
        return read, sum(r.totals.get("lumis", 0) for r in self.files.values())

    def warnings(self) -> list[str]:
        lines = []
        for filename, reading in self.files.items():
            differ = reading.disagreement()
            if differ is not None:
                lines.append(
                    f"{filename}: read whole, but its Runs tree's genEventSumw is {differ[0]:.6g} and its events' "
                    f"genWeight sum to {differ[1]:.6g}: a skimmed or damaged input (normalise with the Runs value "
                    "only if the file is a skim of that many events)"
                )
        return lines

    def to_json(self) -> dict[str, Any]:
        counts = self.counts()
        summary: dict[str, Any] = {
            "complete": self.complete,
            "fraction": self.fraction(),
            "files": {"listed": len(self.files), **{status: counts.get(status, 0) for status in STATUSES}},
            "entries": {"inputs": self.entries, "processed": self.entries_read},
        }
        if self.simulation:
            summary["genEventSumw"] = {
                "inputs": self.sumw,
                "of_inputs_read": self.sumw_of_inputs_read(),
                "events_processed": self.sumw_read,
            }
        lumis = self.lumis()
        if lumis is not None:
            summary["lumi_blocks"] = {"inputs": lumis[1], "processed": lumis[0]}
        summary["warnings"] = self.warnings()
        summary["inputs"] = {name: reading.to_json() for name, reading in self.files.items()}
        if self.metadata:
            summary["metadata"] = self.metadata
        if self.trees:
            summary["trees"] = self.trees
        return summary

    def missing_known(self) -> float:
        """The generator weight (entries, for data) of the inputs of known size that was not read."""
        missing = 0.0
        for reading in self.files.values():
            fraction = reading.weight_fraction()
            if fraction is not None:
                whole = reading.totals.get("sumw", 0.0) if self.simulation else reading.entries
                missing += whole * (1 - fraction)
        return missing

    def line(self) -> str:
        """One compact line for a sample that is not complete: what is not read, and how much that weighs."""
        counts = self.counts()
        parts = [f"{counts[s]} {s}" for s in STATUSES[1:] if counts.get(s)]
        what = "genEventSumw" if self.simulation else "entries"
        unknown = sum(1 for r in self.files.values() if r.entries is None)
        fraction, total = self.fraction(), self.sumw if self.simulation else self.entries
        if unknown or fraction is None or total is None:
            share = (
                f"at least {self.missing_known():.6g} of its {what} missing, and all of {unknown} file(s) of unknown "
                "size (never described: unreadable, or not run; --validate describes readable ones)"
            )
        else:
            share = f"{percent(1 - fraction)} of its {what} missing ({self.missing_known():.6g} of {total:.6g})"
        return f"{self.sample}: {counts.get(READ, 0)} of {len(self.files)} file(s) read, {', '.join(parts)}; {share}"


class Completeness(dict):
    """sample -> SampleReading: a run's, a dump's or a submission's answer."""

    @property
    def complete(self) -> bool:
        return all(sample.complete for sample in self.values())

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "complete": self.complete, "samples": {n: s.to_json() for n, s in self.items()}}

    @classmethod
    def from_json(cls, data: Any) -> Completeness:
        found = cls()
        samples = data.get("samples") if isinstance(data, dict) else None
        for name, sample in (samples or {}).items():
            inputs = sample.get("inputs") if isinstance(sample, dict) else None
            files = {f: FileReading.from_json(r) for f, r in (inputs or {}).items() if isinstance(f, str)}
            metadata = sample.get("metadata") if isinstance(sample, dict) else None
            trees = sample.get("trees") if isinstance(sample, dict) else None
            trees = {f: t for f, t in trees.items() if isinstance(t, str)} if isinstance(trees, dict) else {}
            found[name] = SampleReading(name, files, metadata if isinstance(metadata, dict) else {}, trees)
        return found

    def lines(self) -> list[str]:
        """The summary's lines: one per sample not complete (or one saying all inputs were read)."""
        if self.complete:
            return ["completeness: all inputs read"]
        return [f"completeness: {sample.line()}" for sample in self.values() if not sample.complete]

    def warnings(self) -> list[str]:
        return [line for sample in self.values() for line in sample.warnings()]

    def unprocessed(self, format: str = "higgsdna", chunksize: int | None = None) -> dict[str, Any]:
        """What is left, as a sample JSON: HiggsDNA's format (a file read in part is an object with the entry
        ranges still to read), or `format="coffea"`: coffea's preprocessed fileset (`coffea_form.py`), each
        file's entries left as its steps, cut at `chunksize` (the run's) when given; a file left whose size is
        not known is opened for it (`describe_unknown`), as coffea's preprocess would."""
        if format not in FORMATS:
            raise DispatchError(f"unprocessed: format {format!r} is not one of {', '.join(FORMATS)}")
        if format == "coffea":
            return self._unprocessed_coffea(chunksize)
        left: dict[str, list] = {}
        for name, sample in self.items():
            for filename, reading in sample.files.items():
                if reading.status == READ:
                    continue
                tree = {"treename": sample.trees[filename]} if filename in sample.trees else {}
                if reading.read and reading.entries is not None:
                    entry = {"file": filename, "entries": [list(r) for r in reading.missing()], **tree}
                    left.setdefault(name, []).append(entry)
                else:
                    left.setdefault(name, []).append({"file": filename, **tree} if tree else filename)
        # a dataset with coffea's metadata is coffea's {"files": [...], "metadata": ...}: run again with it
        return {
            name: {"files": files, "metadata": self[name].metadata} if self[name].metadata else files
            for name, files in left.items()
        }

    def _unprocessed_coffea(self, chunksize: int | None) -> dict[str, Any]:
        describe_unknown(self)  # coffea's steps need each file's entries and uuid: files never described are opened
        left: dict[str, Any] = {}
        for name, sample in self.items():
            files = {
                filename: file_entry(
                    reading.missing(), reading.entries, reading.uuid, chunksize, sample.trees.get(filename, TREE)
                )
                for filename, reading in sample.files.items()
                if reading.status != READ
            }
            if files:
                left[name] = {"files": files, **({"metadata": sample.metadata} if sample.metadata else {})}
        return left

    def merged_into(
        self, earlier: Completeness, planned: dict[str, set[str]], redone: Iterable[str] = ()
    ) -> Completeness:
        """This run's answer over the dump's earlier one: an earlier sample or file this run did not plan is
        kept; a file it planned keeps the earlier chunks this run did not plan (--max) unless it was replaced
        (another ROOT UUID) or `redone` (--overwrite removed all its earlier chunks)."""
        redone = set(redone)
        merged = Completeness(
            {name: SampleReading(name, dict(s.files), s.metadata, dict(s.trees)) for name, s in earlier.items()}
        )
        for name, sample in self.items():
            target = merged.setdefault(name, SampleReading(name))
            if sample.metadata is not None:  # the run's own, even none: an earlier run's is not the latest's
                target.metadata = sample.metadata
            target.trees.update(sample.trees)
            for filename, reading in sample.files.items():
                before = target.files.get(filename)
                chunks = None if filename in redone else planned.get(filename, set())
                target.files[filename] = _merge_file(before, reading, chunks)
        return merged


def _merge_file(before: FileReading | None, now: FileReading, planned: set[str] | None) -> FileReading:
    """`planned`: the chunks this run had the last word on (None: all of them, as after --overwrite)."""
    if before is None or planned is None:
        return now
    if now.uuid and before.uuid and now.uuid != before.uuid:
        return now
    kept = {name: count for name, count in before.read.items() if name not in planned}
    problem = now.problem if (now.problem or planned or now.read) else before.problem
    return FileReading(
        now.entries if now.entries is not None else before.entries,
        now.totals or before.totals,
        {**kept, **now.read},
        problem,
        now.uuid or before.uuid,
    )


def from_run(
    listing: dict[str, list[str]],
    stats: dict[str, Any],
    known: dict[str, tuple[int, dict, str]],
    problems: dict[str, dict[str, str]],
) -> Completeness:
    """A run's answer: `listing` (sample -> every file it was given), the chunks' stats (READ_KEY), what is
    known of each input (file -> entries, totals, ROOT UUID) and why files were skipped or failed."""
    found = Completeness()
    for sample, filenames in listing.items():
        read = (stats.get(sample) or {}).get(READ_KEY, {})
        reading = found[sample] = SampleReading(sample)
        for filename in filenames:
            entries, totals, uuid = known.get(filename, (None, {}, ""))
            reading.files[filename] = FileReading(
                entries, totals, dict(read.get(filename, {})), problems.get(sample, {}).get(filename, ""), uuid
            )
    return found


def known_from_cache(filenames: Iterable[str], cache: MetadataCache, treename: str) -> dict[str, tuple]:
    """Entries, totals and UUID of inputs no run here described, from the metadata cache (a local file only
    while its size, mtime and header match; a remote one as cached): what a file not run would add."""
    known = {}
    for filename, fact in inspect_inputs(list(filenames)).items():  # local files' stat and header, in threads
        if isinstance(fact, BadInputFile):  # gone, or unreadable: nothing known
            continue
        cached = cache.lookup(filename, treename, fact.identity if fact is not None else {})
        if cached is not None:
            known[filename] = (cached.entries, cached.totals, cached.uuid)
    return known


def plan_ranges(items: Iterable) -> dict[str, set[str]]:
    """file -> the chunk names a run planned (what it has the last word on)."""
    planned: dict[str, set[str]] = {}
    for item in items:
        planned.setdefault(item.filename, set()).add(chunk_name(item.entrystart, item.entrystop))
    return planned


def unprocessed_json(
    completeness: Completeness,
    target: str | Path,
    overwrite: bool = False,
    format: str = "higgsdna",
    chunksize: int | None = None,
) -> Path | None:
    """Write what is left as a sample JSON (`Completeness.unprocessed`; None when nothing is left); an existing
    file is never replaced unless `overwrite`."""
    left = completeness.unprocessed(format, chunksize)
    if not left:  # nothing to write: an existing file of that name is no obstacle
        return None
    path = Path(target)
    if path.exists() and not overwrite:
        raise DispatchError(f"{path}: exists; choose another file name for --unprocessed (nothing was written)")
    text = sample_json_text(left) if format == "higgsdna" else fileset_text(left)
    write_bytes_atomic(path, text.encode())
    return path


DESCRIBE_TIMEOUT = 30  # seconds for a file's site to answer: a site down is one file left undescribed, not a hang


def describe_unknown(completeness: Completeness) -> list[str]:
    """Open each input left whose size is not known (never described: not run, nor in the metadata cache) for its
    entries, ROOT UUID and totals, as coffea's `preprocess` would; returns those that did not open (their coffea
    entry keeps the tree alone, for `preprocess` to count)."""
    unopened = []
    for sample in completeness.values():
        for filename, reading in sample.files.items():
            if reading.entries is not None or reading.problem.startswith(SKIPPED):
                continue
            try:
                tree = open_tree(filename, sample.trees.get(filename, TREE), DESCRIBE_TIMEOUT)
                reading.entries, reading.uuid = int(tree.num_entries), file_uuid(tree).hex()
                reading.totals = reading.totals or input_totals(filename, tree)
            except Exception:  # unreadable here (gone, or a site down): coffea's preprocess will say
                unopened.append(filename)
    return unopened
