"""What a sample's metadata says, for the coffea and PocketCoffea forms of a sample JSON.

A processor normalises simulation by cross-section / sum of generator weights, picks corrections by year and
era, and treats data and simulation apart: coffea's Runner hands the dataset's `metadata` to every chunk as
`events.metadata`, PocketCoffea's processors read `isMC`, `year`, `era` and `xsec` from it. The numbers come
from where they are known: events from DAS/DBS (or counted), the sum of generator weights from the files
themselves (the metadata cache: `--count-events`/`--sum-weights`), data or simulation from the DAS name's
tier (or the files), year and era from the DAS name (or the user's `--eras` table), the cross-section from
the user's `--xsec` file. A value not known is left out, never guessed: a processor asking for it fails
naming the key, rather than running with a wrong weight.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coffea_dispatch.datasets.sources import ListedFile
from coffea_dispatch.errors import DispatchError

DATA_ERA = re.compile(r"^Run(20\d\d)([A-Z])")  # /Muon/Run2022C-22Sep2023-v1/NANOAOD
MC_LEGACY = re.compile(r"UL(\d\d)")  # RunIISummer20UL18NanoAODv9: 2018 (the campaign's own 20 is not it)
MC_CAMPAIGN = re.compile(r"(?:RunII|Run3)[A-Za-z]+?(\d\d)")  # Run3Summer22EENanoAODv12, RunIIAutumn18NanoAODv7


DAS_NAME = re.compile(r"^/[^/\s]+/[^/\s]+/[A-Z0-9*?-]+$")  # /Primary/Processed/TIER, wildcards allowed


def das_name(entry: str) -> str | None:
    """The DAS dataset name a DAS or rucio line of datasets.txt names (`dataset=...`, `cms:...`)."""
    words = entry.removeprefix("dataset=").split()
    name = words[0].removeprefix("cms:") if words else ""
    return name if DAS_NAME.match(name) else None


def is_simulation(dataset: str) -> bool | None:
    """From the data tier (`.../NANOAODSIM`: simulation, `.../NANOAOD`: data); None for `/USER` and others."""
    tier = dataset.rsplit("/", 1)[-1]
    if tier.endswith("SIM"):
        return True
    return False if tier in ("NANOAOD", "MINIAOD", "AOD") else None


def year_and_era(dataset: str) -> tuple[str | None, str | None]:
    """Year (and era, for data) from a DAS name's processed part: `Run2022C-...` -> ("2022", "C"),
    `Run3Summer22NanoAODv12-...` -> ("2022", None), `RunIISummer20UL16NanoAODAPVv9` -> ("2016", None)."""
    processed = dataset.split("/")[2] if dataset.count("/") == 3 else dataset
    for part in processed.split("-"):
        data = DATA_ERA.match(part)
        if data:
            return data.group(1), data.group(2)
        legacy = MC_LEGACY.search(part) if part.startswith("RunII") else None
        campaign = legacy or MC_CAMPAIGN.search(part)
        if campaign:
            return f"20{campaign.group(1)}", None
    return None, None


def _table_entries(path: Path, what: str) -> list[tuple[str, str, Any]]:
    """A user table's (key, value) pairs with where each is: JSON `{key: value}`, or `key value...` lines
    (`#` comments); a line of the wrong shape is one error naming the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        why = getattr(error, "strerror", None) or error
        raise DispatchError(f"{path}: cannot read the {what} file ({why})") from None
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise DispatchError(f"{path}:{error.lineno}: not valid JSON ({error.msg})") from None
        if not isinstance(data, dict):
            raise DispatchError(f'{path}: a {what} file in JSON must be an object {{"name": value}}')
        return [(f"{path}: {key!r}", key, value) for key, value in data.items()]
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        words = line.split("#", 1)[0].split()
        if words:
            entries.append((f"{path}:{number}", words[0], words[1:]))
    return entries


def read_xsec(path: str | Path) -> dict[str, float]:
    """`--xsec FILE`: a cross-section (pb) per sample name or DAS name; JSON `{"name": 1.23}` or `name 1.23`."""
    table = {}
    for where, key, value in _table_entries(Path(path), "cross-section"):
        words = value if isinstance(value, list) else [value]
        try:
            xsec = float(words[0]) if len(words) == 1 and not isinstance(words[0], bool) else math.nan
        except (TypeError, ValueError):
            xsec = math.nan
        if not math.isfinite(xsec) or xsec <= 0:
            raise DispatchError(
                f"{where}: expected '<sample or DAS name> <cross-section in pb>' with a positive number, got "
                f"{' '.join(map(str, [key, *words]))!r}"
            )
        table[key] = xsec
    return table


def read_eras(path: str | Path) -> dict[str, tuple[str, str | None]]:
    """`--eras FILE`: year and era per sample name or DAS name; `name 2022 [C]` lines, or JSON
    `{"name": "2022"}` / `{"name": {"year": "2022", "era": "C"}}`."""
    table = {}
    for where, key, value in _table_entries(Path(path), "eras"):
        if isinstance(value, dict) and set(value) <= {"year", "era"} and "year" in value:
            words = [value["year"], *([value["era"]] if value.get("era") is not None else [])]
        else:
            words = value if isinstance(value, list) else [value]
        if not 1 <= len(words) <= 2 or not all(isinstance(w, str | int) and str(w).strip() for w in words):
            raise DispatchError(
                f"{where}: expected '<sample or DAS name> <year> [era]' (e.g. 'Data 2022 C'), got {key!r} {value!r}"
            )
        table[key] = (str(words[0]), str(words[1]) if len(words) == 2 else None)
    return table


@dataclass
class SampleFacts:
    """What is known of one sample (every line of datasets.txt under its name)."""

    name: str
    files: list[ListedFile] = field(default_factory=list)
    entries: list[str] = field(default_factory=list)  # its datasets.txt entries

    @property
    def das_names(self) -> list[str]:
        named = [f.dataset for f in self.files if f.dataset] + [das_name(e) for e in self.entries]
        return sorted({n for n in named if n and not any(c in n for c in "*?[")})

    def total(self, values: list) -> Any:
        return None if not values or any(v is None for v in values) else sum(values)


MIXED_HOW = "give each its own sample name"


def _one(values: set, what: str, name: str, notes: list[str] | None, how: str = MIXED_HOW) -> Any:
    """The one value a sample's datasets agree on. Several: PocketCoffea's form (`notes` None) needs one per
    sample (its processors read one year, one isMC), so refused in one line; coffea's leaves the key out with a
    note (HiggsDNA's and coffea's forms let one name collect datasets of two years)."""
    if len(values) <= 1:
        return next(iter(values), None)
    mixed = f"sample '{name}' mixes {what} {', '.join(sorted(map(str, values)))}"
    if notes is None:
        raise DispatchError(f"--format pocketcoffea: {mixed}, and PocketCoffea reads one per sample: {how}")
    notes.append(f"{mixed}: left out of its metadata ({how} to have it)")
    return None


def _is_mc(facts: SampleFacts, notes: list[str] | None) -> bool | None:
    from_names = {is_simulation(n) for n in facts.das_names} - {None}
    from_files = {f.kind == "mc" for f in facts.files if f.kind}
    known = from_names or from_files
    return _one(known, "data and simulation: isMC", facts.name, notes) if known else None


def _year_era(facts: SampleFacts, eras: dict, notes: list[str] | None) -> tuple[str | None, str | None]:
    for key in (facts.name, *facts.das_names):
        if key in eras:
            return eras[key]
    parsed = [year_and_era(n) for n in facts.das_names]
    years = {y for y, _ in parsed if y}
    year = _one(years, "years", facts.name, notes, f"{MIXED_HOW}, or set one with --eras FILE")
    if len(years) > 1:  # the eras of two years are no era of the sample's
        return None, None
    found = sorted({e for _, e in parsed if e})
    return year, ",".join(found) or None


def sample_metadata(
    facts: SampleFacts, xsec: dict[str, float], eras: dict, notes: list[str] | None = None
) -> dict[str, Any]:
    """The sample's metadata, as coffea's Runner passes it to `events.metadata`: only what is known. A year or
    isMC its datasets disagree on is a note in `notes` and left out; without `notes` (PocketCoffea's form) an
    error."""
    is_mc = _is_mc(facts, notes)
    year, era = _year_era(facts, eras, notes)
    sumw = facts.total([f.sumw for f in facts.files]) if is_mc is not False else None
    found = {
        "sample": facts.name,
        "das_names": facts.das_names or None,
        "isMC": is_mc,
        "year": year,
        "era": era,
        "xsec": next((xsec[k] for k in (facts.name, *facts.das_names) if k in xsec), None),
        "nevents": facts.total([f.events for f in facts.files]),
        "sumw": sumw,
        "size": facts.total([f.size for f in facts.files]),
        "sites": sorted({f.sites[0] for f in facts.files if f.sites}) or None,
    }
    return {key: value for key, value in found.items() if value is not None}
