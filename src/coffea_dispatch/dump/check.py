"""`coffea-dispatch check DUMP`: every planned chunk of a dump has exactly one complete output, none of its
outputs is damaged, unexpected, duplicated or made with another configuration (read from its records, `ledger.py`).

Two kinds of answer: a chunk no run has recorded yet (an interrupted or partial run: the same command finishes
it) makes a dump incomplete; anything that was written and is wrong now (a recorded output deleted or changed, a
damaged ledger file, a file no chunk wrote, events twice, another configuration) makes it damaged.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from coffea_dispatch.dump.ledger import Ledger, chunk_record, chunk_records, read_marker, read_plan
from coffea_dispatch.dump.outputs import changed_outputs
from coffea_dispatch.errors import DispatchError
from coffea_dispatch.output import LEDGER, METADATA_PREFIX, write_bytes_atomic

DAMAGE = ("deleted", "unreadable", "unexpected", "overlapping", "other_configuration")  # SampleCheck's lists


@dataclass
class SampleCheck:
    sample: str
    planned: int = 0
    complete: int = 0
    # incompleteness: what an interrupted or partial run has not done yet (rerunning the command does it)
    missing: list[tuple[str, int, int]] = field(default_factory=list)  # (input, start, stop): chunks not recorded
    unrecorded: list[str] = field(default_factory=list)  # outputs a chunk published, then died before its record
    # damage: what was written and is wrong now
    deleted: list[str] = field(default_factory=list)  # recorded chunks whose output was deleted since
    unreadable: list[str] = field(default_factory=list)  # outputs damaged since written, or not parquet; records
    unexpected: list[str] = field(default_factory=list)  # outputs no completed chunk wrote (another run's?)
    overlapping: list[str] = field(default_factory=list)  # outputs whose entry ranges overlap: events twice
    other_configuration: list[str] = field(default_factory=list)  # chunks made with another configuration
    repaired: list[str] = field(default_factory=list)  # damaged plan files rebuilt from the chunk records

    @property
    def damaged(self) -> bool:
        """Something written is wrong now: `check` exits 1 for it, with or without --strict."""
        return any(getattr(self, kind) for kind in DAMAGE)

    @property
    def ok(self) -> bool:
        """Complete and undamaged: every planned chunk has exactly one intact output."""
        return not (self.missing or self.unrecorded or self.damaged)

    def not_written(self) -> dict[str, tuple[list[tuple[int, int]], int]]:
        """Per input: the entry ranges of its missing chunks, adjacent chunks joined, and how many chunks."""
        found: dict[str, tuple[list[tuple[int, int]], int]] = {}
        for filename, start, stop in sorted(self.missing):
            ranges, count = found.get(filename, ([], 0))
            if ranges and ranges[-1][1] == start:
                ranges[-1] = (ranges[-1][0], stop)
            else:
                ranges.append((start, stop))
            found[filename] = (ranges, count + 1)
        return found


class DumpCheck(dict):
    """`check_dump`'s answer: sample -> SampleCheck, and the chunk size the dump was made with (for advice)."""

    def __init__(self, samples: dict[str, SampleCheck], chunk: int | None = None):
        super().__init__(samples)
        self.chunk = chunk


def _rebuild_plan(root: Path, plan_path: Path) -> dict[str, Any] | None:
    """A damaged plan file, rebuilt from the records of the chunks of its input (they name the input)."""
    sample, key = plan_path.parent.name, plan_path.stem
    records = [read_marker(m) for m in chunk_records(root / LEDGER, sample, key)]
    inputs = [r["input"] for r in records if r is not None and "input" in r]
    if not inputs:
        return None
    plan = {
        "file": inputs[0]["file"],
        "fingerprint": records[0]["fingerprint"],
        "input": None,
        "chunks": sorted([i["entrystart"], i["entrystop"]] for i in inputs),
    }
    write_bytes_atomic(plan_path, (json.dumps(plan) + "\n").encode())
    return plan


def check_dump(dump: str | os.PathLike) -> DumpCheck:
    """Every planned input chunk must have exactly one complete output: report what is missing, damaged
    (checksums are compared, so every output is read completely), unexpected, duplicated (overlapping entry
    ranges of one input file) or made with another configuration."""
    root = Path(dump)
    plans = sorted((root / LEDGER).glob("files/*/*.json"))
    configuration = Ledger(root, "").configuration() or {}
    if not plans and not configuration:  # a run that claimed the dump and was stopped before planning has one
        raise DispatchError(f"{root}: no record of a run here ({LEDGER}/ is missing or empty): not a --dump folder")
    checks: dict[str, SampleCheck] = {}
    referenced: dict[str, str] = {}  # output -> the chunk whose record lists it
    for plan_path in plans:
        check = checks.setdefault(plan_path.parent.name, SampleCheck(plan_path.parent.name))
        _check_planned_chunks(root, plan_path, check, configuration.get("fingerprint"), referenced)
    published = _published_unrecorded(root)
    for sample, check in checks.items():
        _check_outputs(root / sample, root, check, referenced)
        check.unrecorded = [o for o in check.unexpected if o in published]  # the rerun removes them
        check.unexpected = [o for o in check.unexpected if o not in published]
    return DumpCheck(checks, configuration.get("chunk"))


def _published_unrecorded(root: Path) -> set[str]:
    """Outputs a chunk published (its journal, `Ledger.publish`) before it was stopped or killed, without a
    record: an interrupted run's, removed by the next attempt at that chunk, not damage."""
    published: set[str] = set()
    for journal in (root / LEDGER / "publishing").glob("*/*"):
        try:
            targets = json.loads(journal.read_bytes())
        except (OSError, ValueError):
            continue
        if isinstance(targets, list):
            published.update(t for t in targets if isinstance(t, str))
    return published


def _check_planned_chunks(
    root: Path, plan_path: Path, check: SampleCheck, fingerprint: str | None, referenced: dict[str, str]
) -> None:
    """Each chunk one plan file lists: recorded, of this configuration, its outputs there and intact."""
    plan = read_plan(plan_path)
    if plan is None:
        plan = _rebuild_plan(root, plan_path)
        if plan is None:
            check.unreadable.append(f"{plan_path} is damaged and no chunk record names its input")
            return
        check.repaired.append(f"{plan_path.relative_to(root)} rebuilt from the records of {plan['file']}")
    for start, stop in plan["chunks"]:
        check.planned += 1
        name = f"{plan['file']} (entries {start}-{stop})"
        record_path = chunk_record(root, check.sample, plan["file"], start, stop)
        record = read_marker(record_path)
        if record is None and record_path.exists():  # records are written atomically: damaged since
            check.unreadable.append(f"{name}: its completion record is damaged")
            continue
        if record is None:  # not run yet: an interrupted or partial run
            check.missing.append((plan["file"], start, stop))
            continue
        if fingerprint and record["fingerprint"] != fingerprint:
            check.other_configuration.append(name)
        for output in record["outputs"]:
            if output in referenced:  # the later chunk replaced the earlier one's file
                check.overlapping.append(f"{output} written by both {referenced[output]} and {name}")
            referenced[output] = name
        _check_recorded_outputs(root, record, name, check)


def _check_recorded_outputs(root: Path, record: dict[str, Any], name: str, check: SampleCheck) -> None:
    """A recorded chunk's outputs: deleted (the chunk is missing), damaged since written, or complete."""
    changed = changed_outputs(root, record, verify=True)
    deleted = [o for o in changed if not (root / o).exists()]
    unverified = [o for o in record["outputs"] if len(record.get("stats", {}).get(o) or ()) < 3]
    broken = [o for o in unverified if o.endswith(".parquet") and o not in deleted and not _reads(root / o)]
    if deleted:
        check.deleted.append(f"{name}: output deleted ({deleted[0]})")
    elif changed or broken:
        check.unreadable.extend(f"{o} (damaged since it was written)" for o in changed if o not in broken)
        check.unreadable.extend(broken)
    else:
        check.complete += 1


def _check_outputs(folder: Path, root: Path, check: SampleCheck, referenced: dict[str, str]) -> None:
    """Every file in a sample's folder: written by a recorded chunk, readable, no two of one input's entries."""
    ranges: dict[tuple[str, str], list[tuple[int, int, str]]] = {}
    for path in sorted(_files_below(folder)):
        relative = str(path.relative_to(root))
        if relative not in referenced:
            check.unexpected.append(relative)
        if path.suffix != ".parquet" or path.is_symlink():  # a link's events are its target's
            continue
        metadata = _metadata(path)
        if metadata is None:
            if not any(u.startswith(relative) for u in check.unreadable):
                check.unreadable.append(relative)
            continue
        key = (path.parent.name, metadata.get(f"{METADATA_PREFIX}input", ""))
        start = int(metadata.get(f"{METADATA_PREFIX}entrystart", 0))
        stop = int(metadata.get(f"{METADATA_PREFIX}entrystop", 0))
        for other_start, other_stop, other in ranges.get(key, []):
            if start < other_stop and other_start < stop:
                check.overlapping.append(f"{relative} and {other}")
        ranges.setdefault(key, []).append((start, stop, relative))


def _files_below(folder: Path) -> list[Path]:
    """Every file and link below `folder` (links to folders are not followed), hidden names left out."""
    found = []
    for here, folders, files in os.walk(folder):
        names = files + [d for d in folders if os.path.islink(os.path.join(here, d))]
        found += [Path(here, n) for n in names if not n.startswith(".")]
    return found


def _metadata(path: Path) -> dict[str, str] | None:
    """The parquet footer's key/value metadata; None when it does not read. The file is opened by Python, so
    any path the OS accepts works (pyarrow rejects paths that are not valid UTF-8)."""
    try:
        with open(path, "rb") as handle:
            raw = pq.read_schema(handle).metadata or {}
    except Exception:  # truncated, random bytes, not parquet at all: the footer does not read
        return None
    return {k.decode(): v.decode() for k, v in raw.items()}


def _reads(path: Path) -> bool:
    """Does the whole parquet file read (outputs recorded without a checksum by older versions)?"""
    try:
        with open(path, "rb") as handle:
            pq.read_table(handle)
    except Exception:
        return False
    return True
