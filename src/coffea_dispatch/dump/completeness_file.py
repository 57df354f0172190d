"""A dump's `completeness.json` and what its chunk records say: how much of each sample the dump holds.

The file is the dump's answer kept between runs: every input a run was given (listed before its first chunk
runs, so a run killed at any point leaves `check` knowing what it never started), and per input the chunks
read. Every run rewrites it at its end, merged with what earlier runs read and with the records of chunks it
did not plan (a run killed before its end recorded chunks all the same). `check` answers from the records
alone (`from_dump`). A file the tool did not write is never touched.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from coffea_dispatch.dump.completeness import FORMAT, Completeness, FileReading, SampleReading, known_from_cache
from coffea_dispatch.dump.ledger import chunk_record, plan_path, read_marker, read_plan
from coffea_dispatch.dump.outputs import changed_outputs
from coffea_dispatch.errors import DispatchError
from coffea_dispatch.inputs.metadata_cache import MetadataCache, chunk_name
from coffea_dispatch.output import LEDGER, write_bytes_atomic
from coffea_dispatch.result_keys import READ_KEY

COMPLETENESS = "completeness.json"


def _ours(content: Any) -> bool:
    return isinstance(content, dict) and content.get("format") == FORMAT and isinstance(content.get("samples"), dict)


def _stored(dump: str | Path) -> tuple[Completeness, bool]:
    """The dump's `completeness.json`, and whether the tool may write it: absent, or one it wrote (a file it
    cannot read as its own, whoever wrote it, is left as it is)."""
    try:
        content = json.loads((Path(dump) / COMPLETENESS).read_bytes())
    except FileNotFoundError:
        return Completeness(), True
    except (OSError, ValueError):
        return Completeness(), False
    return (Completeness.from_json(content), True) if _ours(content) else (Completeness(), False)


def read_completeness(dump: str | Path) -> Completeness:
    """The dump's `completeness.json` (empty when absent or damaged: it is rebuilt from the records)."""
    return _stored(dump)[0]


def record_completeness(
    dump: str | Path, now: Completeness, planned: dict[str, set[str]] | None = None, redone: Iterable[str] = ()
) -> Completeness:
    """`now` merged into what the dump's `completeness.json` says (`Completeness.merged_into`), written back
    atomically unless that file is not the tool's; returns the merged answer. The file is read once."""
    earlier, writable = _stored(dump)
    _add_records(earlier, Path(dump), now, planned or {})
    merged = now.merged_into(earlier, planned or {}, redone)
    if writable:
        _write(dump, merged)
    return merged


def _add_records(earlier: Completeness, dump: Path, now: Completeness, planned: dict[str, set[str]]) -> None:
    """What the dump's records say of the chunks of `now`'s files that this run neither planned nor reports
    read: a run killed before it wrote completeness.json recorded chunks all the same, and an earlier
    completeness.json can name a chunk whose outputs are gone since. The records are the truth for those
    chunks; the others are not read again (a job array's jobs report every chunk they read)."""
    for name, sample in now.items():
        for filename, reading in sample.files.items():
            plan = read_plan(plan_path(dump, name, filename)) or {}
            known = planned.get(filename, set()) | set(reading.read)
            outside = [c for c in plan.get("chunks", []) if chunk_name(*c) not in known]
            if not outside:
                continue
            before = earlier.setdefault(name, SampleReading(name)).files.setdefault(filename, FileReading())
            names = {chunk_name(*c) for c in outside}
            kept = {n: count for n, count in before.read.items() if n not in names}
            before.read = {**kept, **_verified_chunks(dump, name, filename, outside)}
            identity = plan.get("input") if isinstance(plan.get("input"), dict) else {}
            before.uuid = before.uuid or str(identity.get("uuid") or "")


def record_listing(dump: str | Path, listing: dict[str, list[str]]) -> None:
    """Every input a run was given, added to completeness.json (as not run) before any chunk runs: a run killed
    before its end leaves `check` and the unprocessed JSON knowing the files it never started. Written only
    when something is new (a rerun of the same command writes nothing here)."""
    earlier, writable = _stored(dump)
    new = {s: [f for f in files if f not in earlier.get(s, SampleReading(s)).files] for s, files in listing.items()}
    if not writable or not any(new.values()):
        return
    for name, files in new.items():
        sample = earlier.setdefault(name, SampleReading(name))
        sample.files.update({f: FileReading() for f in files})
    _write(dump, earlier)


def _write(dump: str | Path, completeness: Completeness) -> None:
    write_bytes_atomic(Path(dump) / COMPLETENESS, (json.dumps(completeness.to_json(), indent=1) + "\n").encode())


def from_dump(dump: str | Path, cache: MetadataCache | None = None, treename: str = "Events") -> Completeness:
    """`check`'s answer, from the dump alone: the files listed (completeness.json; else those with a plan),
    each input's entries and totals (its plan file), the chunks whose record and outputs are intact."""
    root = Path(dump)
    if not (root / LEDGER).is_dir():  # a typo or another folder must not read as "all inputs read"
        raise DispatchError(f"{root}: no record of a run here ({LEDGER}/ is missing): not a --dump folder")
    earlier = read_completeness(root)
    listing = {name: list(sample.files) for name, sample in earlier.items()}
    plans: dict[tuple[str, str], dict] = {}
    for path in sorted((root / LEDGER).glob("files/*/*.json")):
        plan = read_plan(path)
        if plan is not None:  # a damaged plan: its chunks are missing (check says so, and rebuilds it)
            plans[(path.parent.name, plan["file"])] = plan
            if plan["file"] not in listing.setdefault(path.parent.name, []):
                listing[path.parent.name].append(plan["file"])
    found = Completeness()
    unknown = []
    for sample, filenames in listing.items():
        before_sample = earlier.get(sample, SampleReading(sample))
        reading = found[sample] = SampleReading(sample, metadata=before_sample.metadata, trees=before_sample.trees)
        for filename in filenames:
            before = earlier.get(sample, SampleReading(sample)).files.get(filename, FileReading())
            plan = plans.get((sample, filename), {})
            identity = plan.get("input") if isinstance(plan.get("input"), dict) else {}
            entries = identity.get("entries", before.entries)
            totals = plan.get("totals") if isinstance(plan.get("totals"), dict) else before.totals
            now = FileReading(entries, totals, {}, before.problem, identity.get("uuid", before.uuid))
            now.read = _verified_chunks(root, sample, filename, plan.get("chunks", []))
            if now.entries is None:
                unknown.append(filename)
            reading.files[filename] = now
    if cache is not None and unknown:
        known = known_from_cache(unknown, cache, treename)
        for sample in found.values():
            for filename, reading in sample.files.items():
                if reading.entries is None and filename in known:
                    reading.entries, reading.totals, reading.uuid = known[filename]
    return found


def _verified_chunks(root: Path, sample: str, filename: str, chunks: list) -> dict[str, tuple]:
    """The counts of the planned chunks whose record is intact and whose outputs are unchanged."""
    read = {}
    for start, stop in chunks:
        record = read_marker(chunk_record(root, sample, filename, start, stop))
        if record is None or changed_outputs(root, record):
            continue
        stats = (record["result"].get("stats") or {}).get(sample, {})
        counts = stats.get(READ_KEY, {}).get(filename, {})
        name = chunk_name(start, stop)
        read[name] = counts.get(name, (stop - start, None, None))  # a record of an older version: entries only
    return read


def check_report(path: str | Path) -> None:
    """A `report=` file may be written: absent, or a completeness report the tool wrote (another file is never
    replaced); said before a Runner call starts, not after hours of it."""
    target = Path(path)
    try:
        content = json.loads(target.read_bytes())
    except FileNotFoundError:
        return
    except (OSError, ValueError):
        content = None
    if target.is_dir() or not _ours(content):
        raise DispatchError(
            f"{target}: exists and is not a completeness report written by coffea-dispatch: choose another report= "
            "file (nothing was written)"
        )


def write_report(path: str | Path, completeness: Completeness) -> None:
    """`completeness` written at `path` as the dump's completeness.json is (atomically), unless a file there is
    not one the tool wrote."""
    check_report(path)
    write_bytes_atomic(Path(path), (json.dumps(completeness.to_json(), indent=1) + "\n").encode())
