"""`coffea-dispatch samples`: dataset names in, a sample JSON out, as HiggsDNA's fetch_datasets.py writes it
(by default), or in coffea's or PocketCoffea's form with each sample's metadata (--format: formats.py,
metadata.py).

The input is HiggsDNA's `datasets.txt` (`name  dataset-or-path` per line, `#` comments; a name given twice
collects both lists, as HiggsDNA does; the same entry twice under one name is noted and asked once). Each
entry is a DAS dataset (wildcards allowed; `/USER` datasets are read from prod/phys03), an XRootD folder or
glob (`root://host//store/user/...`), a rucio DID (`cms:/A/B/NANOAODSIM`), or a local folder or glob
(`--mode local`, or a path that is not a DAS name). Sources are asked in parallel, with timeouts and retries,
the grid proxy checked first; each line has a deadline (--deadline), and a Ctrl-C or SIGTERM ends the wait at
once, however long a server takes to answer; every line that fails is named at once, one line each. With
--count-events a file that cannot be read is named and left out of the JSON (--keep-unreadable keeps it).
The sample JSON keeps one plain path per file (HiggsDNA reads it unchanged); every other replica of a file
goes beside it, in `<name>.replicas.json`, which our runs read to fall back on.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coffea_dispatch.datasets.formats import FORMATS, sample_text
from coffea_dispatch.datasets.metadata import SampleFacts, das_name, read_eras, read_xsec, sample_metadata
from coffea_dispatch.datasets.replicas import FALLBACK, rucio_files
from coffea_dispatch.datasets.sources import (
    REDIRECTORS,
    ListedFile,
    Sites,
    das_datasets,
    das_files,
    dbs_datasets,
    dbs_files,
    find_dasgoclient,
    list_local,
    list_xrootd,
)
from coffea_dispatch.errors import BadInputFile, DispatchError
from coffea_dispatch.inputs.analysis import check_sample_name, replicas_path
from coffea_dispatch.inputs.describe import Answers, Description, FileDescriber, describe_inputs, merged_answers
from coffea_dispatch.inputs.files import configure_xrootd, register_replicas
from coffea_dispatch.inputs.metadata_cache import cache_at
from coffea_dispatch.inputs.proxy import RENEW, find_proxy, seconds_left
from coffea_dispatch.output import write_bytes_atomic
from coffea_dispatch.signals import DeadlinePassed, call_with_deadline, map_with_deadline

DAS_QUERY = "dataset="
INSTANCES = ("prod/global", "prod/phys01", "prod/phys02", "prod/phys03")


@dataclass(frozen=True)
class Request:
    name: str
    entry: str
    where: str  # "datasets.txt:3": what a message names


@dataclass
class SamplesOptions:
    """HiggsDNA's fetch_datasets.py options, and how patient to be with the sources."""

    where: str = "Americas"
    xrootd: str | None = None
    fallback: tuple[str, ...] = (REDIRECTORS["Yolo"],)  # redirectors tried after the first, in order
    dbs_instance: str = "prod/global"
    mode: str = "grid"
    recursive: bool = False
    file_extension: tuple[str, ...] = (".root",)
    timeout: int = 15  # seconds per query (one XRootD request, one dasgoclient or rucio call)
    deadline: int = 45  # seconds one query to a source (its retries included), or one file's event count, may take
    retries: int = 2
    voms: str | None = None
    dbs_url: str | None = None  # DBS's reader (without dasgoclient); default: cmsweb's, for dbs_instance
    sites: Sites = field(default_factory=Sites)  # rucio: the sites allowed, blocked, preferred
    parallel: int = 8
    count_events: bool = False  # files whose source gives no event count are described (metadata cache)
    keep_unreadable: bool = False  # with count_events: a file that cannot be read stays in the JSON
    metadata_cache: str | None = None  # default: the user's cache
    format: str = "higgsdna"  # formats.FORMATS: the form of the JSON written
    xsec: str | None = None  # a file of cross-sections (pb) per sample or DAS name
    eras: str | None = None  # a file of year [era] per sample or DAS name (else read from DAS names)
    fallback_redirector: str | None = None  # rucio: a file no allowed site holds is read through it
    sum_weights: bool = False  # every file is described (metadata cache): sums of generator weights known


@dataclass
class Listed:
    """One line's answer: the files a dataset name or a folder stands for."""

    request: Request
    files: list[ListedFile] = field(default_factory=list)

    @property
    def size(self) -> int | None:
        sizes = [f.size for f in self.files]
        return None if None in sizes else sum(sizes)

    @property
    def events(self) -> int | None:
        events = [f.events for f in self.files]
        return None if None in events or not events else sum(events)


UNANSWERED = "not read within"  # a file --count-events gave up at the deadline: slow, not known to be unreadable


@dataclass
class SamplesResult:
    listed: list[Listed]
    samples: dict[str, list[str]]
    replicas: dict[str, list[str]]
    written: Path | None = None
    unreadable: list[tuple[str, str, str]] = field(default_factory=list)  # (sample, file, why), with count_events
    unanswered: list[tuple[str, str, str]] = field(default_factory=list)  # not counted within --deadline: kept
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)  # per sample (--format coffea, pocketcoffea)
    notes: list[str] = field(default_factory=list)  # what the user should know and is not an error


def _text_lines(source: Path) -> list[str]:
    """The list's lines, read as UTF-8 whatever the locale says; a byte that is not is one line naming where
    (a list saved as Latin-1 by an editor, a name pasted with an accent)."""
    try:
        data = source.read_bytes()
    except OSError as error:
        raise DispatchError(f"{source}: cannot read the dataset list ({error.strerror})") from None
    try:
        return data.decode("utf-8").splitlines()
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        raise DispatchError(
            f"{source}:{line}: byte 0x{data[error.start]:02x} at column {column} is not UTF-8 text: save the list "
            f"as UTF-8 (e.g. iconv -f latin1 -t utf-8), or remove the character"
        ) from None


def read_requests(path: str | Path) -> list[Request]:
    """HiggsDNA's datasets.txt; a line that is not `name entry` is one error naming the file and line."""
    source = Path(path)
    lines = _text_lines(source)
    requests = []
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        parts = text.split()
        where = f"{source}:{number}"
        if len(parts) != 2:
            raise DispatchError(f"{where}: expected '<sample name> <dataset or path>', got {text!r}")
        requests.append(Request(check_sample_name(parts[0], Path(where)), parts[1], where))
    if not requests:
        raise DispatchError(f"{source}: lists no dataset (lines are '<sample name> <dataset or path>')")
    return requests


def kind_of(entry: str, mode: str) -> str:
    if entry.startswith(DAS_QUERY):
        return "das"
    if entry.startswith("cms:"):
        return "rucio"
    if "://" in entry:
        return "xrootd"
    if mode == "grid" and das_name(entry):
        return "das"
    return "local"


def _prefix(options: SamplesOptions) -> str:
    if options.xrootd:
        return options.xrootd
    if options.where not in REDIRECTORS:
        raise DispatchError(f"--where {options.where}: choose from {', '.join(REDIRECTORS)} (or give --xrootd)")
    return REDIRECTORS[options.where]


def check_proxy(voms: str | None) -> None:
    """DAS answers only with a grid proxy: one line naming voms-proxy-init when it is missing or expired."""
    proxy = find_proxy(voms)
    if proxy is None:
        raise DispatchError(f"DAS queries need a grid proxy and none was found: run {RENEW}, or give --voms PATH")
    left = seconds_left(proxy)
    if left is not None and left <= 0:
        raise DispatchError(f"grid proxy {proxy} has expired: renew it with {RENEW}")


def _list(request: Request, options: SamplesOptions) -> list[ListedFile]:
    """One line's files; each query to its source (with its retries) within --deadline."""
    kind = kind_of(request.entry, options.mode)

    def within(query: Callable[[], Any]) -> Any:
        return call_with_deadline(query, options.deadline)

    try:
        if kind == "local":
            return list_local(request.entry, options.recursive, options.file_extension)
        if kind == "xrootd":
            return within(
                lambda: list_xrootd(request.entry, options.recursive, options.file_extension, options.timeout)
            )
        if kind == "rucio":
            return within(
                lambda: rucio_files(
                    request.entry, options.sites, options.retries, options.timeout, options.fallback_redirector
                )
            )
        return _das(request.entry.removeprefix(DAS_QUERY).split()[0], options, within)
    except DispatchError as error:
        raise DispatchError(f"{request.where} ({request.name}): {error.message}") from None
    except DeadlinePassed:
        raise DispatchError(
            f"{request.where} ({request.name}): {request.entry}: no answer within {options.deadline} s: check that "
            "the server is up (or give a longer --deadline)"
        ) from None


def _das(pattern: str, options: SamplesOptions, within: Callable[[Callable[[], Any]], Any]) -> list[ListedFile]:
    """A DAS name (wildcards allowed): through dasgoclient where it is installed, else DBS's REST API; the
    datasets a wildcard matches are asked one after the other, each within the deadline."""
    prefixes, instance, retries = [_prefix(options), *options.fallback], options.dbs_instance, options.retries
    files = []
    if find_dasgoclient() is not None:
        for dataset in within(lambda: das_datasets(pattern, instance, options.timeout, retries)):
            files += within(lambda d=dataset: das_files(d, instance, prefixes, options.timeout, retries))
        return files
    proxy = str(find_proxy(options.voms) or "") or None
    for dataset in within(lambda: dbs_datasets(pattern, instance, proxy, options.dbs_url, retries)):
        files += within(lambda d=dataset: dbs_files(d, instance, prefixes, proxy, options.dbs_url, retries))
    return files


def check_options(options: SamplesOptions) -> None:
    """The options no parser checked (SamplesOptions comes from Python too): one line each, before any query."""
    if options.format not in FORMATS:
        raise DispatchError(f"--format {options.format}: choose from {', '.join(FORMATS)}")
    if options.dbs_instance not in INSTANCES:
        raise DispatchError(f"--dbs-instance {options.dbs_instance}: choose from {', '.join(INSTANCES)}")
    for flag, seconds in (("--timeout", options.timeout), ("--deadline", options.deadline)):
        if seconds < 1:
            raise DispatchError(f"{flag} {seconds}: must be at least 1 (seconds)")


def unique_requests(requests: list[Request]) -> tuple[list[Request], list[str]]:
    """The requests with a line repeating an earlier one (same name, same entry) left out, and a note for
    each: asked twice, its files were counted twice in the table (and the JSON kept them once)."""
    first: dict[tuple[str, str], Request] = {}
    notes = []
    for request in requests:
        earlier = first.setdefault((request.name, request.entry), request)
        if earlier is not request:
            notes.append(
                f"{request.where} ({request.name}): {request.entry} is listed already ({earlier.where}): asked once"
            )
    return list(first.values()), notes


def _listed_or_error(request: Request, options: SamplesOptions) -> list[ListedFile] | DispatchError:
    try:
        return _list(request, options)
    except DispatchError as error:
        return error


def fetch(requests: list[Request], options: SamplesOptions) -> list[Listed]:
    """Every request's files, asked in parallel; every line that failed is named, one line each, in the
    file's order. A line whose source has not answered within the deadline is one: the server may accept a
    connection and never answer, and XRootD's client, pycurl and dasgoclient each keep their own limits."""
    check_options(options)
    kinds = {kind_of(r.entry, options.mode) for r in requests}
    if "das" in kinds:
        _prefix(options)
    if kinds & {"das", "rucio"}:
        check_proxy(options.voms)
    found = map_with_deadline(lambda r: _listed_or_error(r, options), requests, math.inf, options.parallel)
    failed = [answer.message for answer in found if isinstance(answer, DispatchError)]
    if failed:
        raise DispatchError("\n".join(failed))
    return [Listed(request, files) for request, files in zip(requests, found, strict=True)]


def assemble(listed: list[Listed]) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """The sample JSON (a name given twice collects both lists) and the replicas beside it."""
    samples: dict[str, list[str]] = {}
    replicas: dict[str, list[str]] = {}
    for answer in listed:
        files = samples.setdefault(answer.request.name, [])
        for listed_file in answer.files:
            if listed_file.path in files:
                continue
            files.append(listed_file.path)
            if listed_file.replicas:
                replicas[listed_file.path] = listed_file.replicas
    empty = [name for name, files in samples.items() if not files]
    if empty:
        where = next(a.request.where for a in listed if a.request.name == empty[0])
        raise DispatchError(f"{where} ({empty[0]}): no file found (check the path, --recursive, --file-extension)")
    return samples, replicas


def count_events(listed: list[Listed], options: SamplesOptions) -> dict[str, str]:
    """Events of the files whose source did not say (every file's with --sum-weights), with their sums of
    generator weights (simulation) or their kind (data), from the metadata cache or described in threads
    (and then cached, so the first run over the JSON reads none of them again); the files that cannot be
    read (or not within the deadline), with why."""
    files = [f for answer in listed for f in answer.files if f.events is None or options.sum_weights]
    configure_xrootd(options.timeout)
    register_replicas({f.path: [f.path, *f.replicas] for f in files if f.replicas})
    cache = cache_at(options.metadata_cache)

    def late(name: str, error: DeadlinePassed) -> Answers:
        return {"bad": {name: f"{UNANSWERED} {options.deadline} s (--deadline)"}}

    def in_threads(names: list[str], describer: FileDescriber) -> Answers:
        return merged_answers(map_with_deadline(describer, names, options.deadline, options.parallel, late))

    describer = FileDescriber("Events", options.timeout, options.retries)
    described = describe_inputs([f.path for f in files], describer, cache, in_threads)
    unreadable = {}
    for listed_file in files:
        description = described.get(listed_file.path)
        if isinstance(description, Description):
            listed_file.events = description.entries
            listed_file.sumw = description.totals.get("sumw")
            listed_file.kind = "mc" if "sumw" in description.totals else "data" if "lumis" in description.totals else ""
        elif isinstance(description, BadInputFile):
            unreadable[listed_file.path] = description.reason
    return unreadable


def leave_out(listed: list[Listed], unreadable: dict[str, str]) -> None:
    """Take the unreadable files out of their lines (a run over the JSON would fail on them); a sample left
    with none is one error naming its first file and why (every sample has a file: `assemble` checked)."""
    readable: dict[str, int] = {}
    for answer in listed:
        name = answer.request.name
        readable[name] = readable.get(name, 0) + sum(f.path not in unreadable for f in answer.files)
    for name in (name for name, count in readable.items() if count == 0):
        answer = next(a for a in listed if a.request.name == name and a.files)
        first = answer.files[0].path
        raise DispatchError(
            f"{answer.request.where} ({name}): no file can be read ({first}: {unreadable[first]}); fix the files, "
            "or give --keep-unreadable to write them anyway"
        )
    for answer in listed:
        answer.files = [f for f in answer.files if f.path not in unreadable]


def write_samples(target: Path, text: str, replicas: dict, overwrite: bool) -> Path:
    """Atomically; an existing sample JSON (or replicas file) is replaced only with `overwrite`."""
    beside = replicas_path(target)
    for path in (target, beside):
        if path.exists() and not overwrite:
            raise DispatchError(f"{path}: exists; use --overwrite to replace it, or choose another -o")
    write_bytes_atomic(target, text.encode())
    if replicas:
        write_bytes_atomic(beside, (json.dumps(replicas, indent=1) + "\n").encode())
    else:
        beside.unlink(missing_ok=True)
    return target


def build_samples(
    datasets: str | Path,
    output: str | Path | None = None,
    *,
    overwrite: bool = False,
    dry_run: bool = False,
    options: SamplesOptions | None = None,
) -> SamplesResult:
    """Read HiggsDNA's datasets.txt, list every dataset's files, write the sample JSON (by default beside the
    list, `.txt` -> `.json`, as HiggsDNA does) unless `dry_run`."""
    options = options or SamplesOptions()
    check_options(options)
    tables = read_tables(options)  # a bad table is an error before any query
    if Path(datasets).is_dir():  # a folder of files: one sample, named after it
        requests, notes = [folder_request(Path(datasets), options)], []
        options = dataclasses.replace(options, mode="local")
    else:
        requests, notes = unique_requests(read_requests(datasets))
    listed = fetch(requests, options)
    assemble(listed)  # a line with no file is an error before any file is read
    counting = options.count_events or options.sum_weights
    problems = count_events(listed, options) if counting else {}
    named = [(a.request.name, f.path, problems[f.path]) for a in listed for f in a.files if f.path in problems]
    unreadable = {path: why for path, why in problems.items() if not why.startswith(UNANSWERED)}
    if not options.keep_unreadable:  # a file merely slow to answer stays: a run over the JSON reads or names it
        leave_out(listed, unreadable)
    samples, replicas = assemble(listed)
    result = SamplesResult(listed, samples, replicas, unreadable=[n for n in named if n[1] in unreadable])
    result.unanswered = [n for n in named if n[1] not in unreadable]
    result.metadata, mixed = samples_metadata(listed, options, *tables)
    result.notes = [*notes, *fallback_notes(listed, options), *unused_names(tables, listed), *mixed]
    text = sample_text(options.format, samples, result.metadata)
    if not dry_run:
        target = Path(output) if output is not None else default_output(Path(datasets))
        result.written = write_samples(target, text, replicas, overwrite)
    return result


def folder_request(folder: Path, options: SamplesOptions) -> Request:
    """`-i FOLDER`: the files in it (--file-extension's, .root by default; --recursive for its subfolders) as one
    sample named after the folder, what an analyst pointing at a folder of ROOT files expects. A folder of sample
    folders is not one sample: --recursive would merge signal and background, so it is refused unless asked."""
    name = folder.resolve().name
    if not name:
        raise DispatchError(f"{folder}: a folder with no name to give its sample: give a datasets.txt instead")
    if not options.recursive and not _holds_files(folder, options.file_extension):
        inner = sorted(p.name for p in folder.iterdir() if p.is_dir() and _holds_files(p, options.file_extension, True))
        if inner:
            raise DispatchError(
                f"{folder}: no file in it, but {len(inner)} folder(s) of files ({', '.join(inner[:5])}"
                f"{', ...' if len(inner) > 5 else ''}): write a datasets.txt with one line per sample "
                f"('{inner[0]} {folder / inner[0]}') and give it to -i; or --recursive for one sample '{name}'"
            )
    where = f"{folder} (a folder: one sample, named after it)"
    return Request(check_sample_name(name, folder), str(folder), where)


def _holds_files(folder: Path, extensions: tuple[str, ...], recursive: bool = False) -> bool:
    wanted = tuple(e.lower() for e in extensions)
    found = folder.rglob("*") if recursive else folder.iterdir()
    return any(p.is_file() and (not wanted or p.name.lower().endswith(wanted)) for p in found)


def default_output(datasets: Path) -> Path:
    """Where the sample JSON goes without -o: beside the list, `.txt` -> `.json`, as HiggsDNA does; beside a
    folder given as input, named after it (`data/` -> `data.json`)."""
    if datasets.is_dir():
        resolved = datasets.resolve()
        return resolved.parent / f"{resolved.name}.json"
    return datasets.with_suffix(".json")


def read_tables(options: SamplesOptions) -> tuple[dict[str, float], dict[str, tuple[str, str | None]]]:
    """The user's cross-sections (--xsec) and years/eras (--eras), read before any query."""
    return (read_xsec(options.xsec) if options.xsec else {}), (read_eras(options.eras) if options.eras else {})


def samples_metadata(
    listed: list[Listed], options: SamplesOptions, xsec: dict, eras: dict
) -> tuple[dict[str, dict], list[str]]:
    """Each sample's metadata (every line under its name together) and the notes on it, for the forms that carry
    it: HiggsDNA's carries none, and a name listed for two years collects both lists there, as in HiggsDNA. In
    coffea's a year (or isMC) the lines disagree on is left out with a note; PocketCoffea's, which reads one
    year per sample, refuses it."""
    if options.format == "higgsdna":
        return {}, []
    facts: dict[str, SampleFacts] = {}
    for answer in listed:
        sample = facts.setdefault(answer.request.name, SampleFacts(answer.request.name))
        sample.files += [f for f in answer.files if f.path not in {g.path for g in sample.files}]
        if kind_of(answer.request.entry, options.mode) in ("das", "rucio"):
            sample.entries.append(answer.request.entry)
    notes: list[str] | None = None if options.format == "pocketcoffea" else []
    metadata = {name: sample_metadata(sample, xsec, eras, notes) for name, sample in facts.items()}
    return metadata, notes or []


def fallback_notes(listed: list[Listed], options: SamplesOptions) -> list[str]:
    """A note per line some of whose files no allowed site holds: read through --fallback-redirector."""
    notes = []
    for answer in listed:
        through = sum(1 for f in answer.files if f.sites and f.sites[0].startswith(FALLBACK))
        if through:
            notes.append(
                f"{answer.request.where} ({answer.request.name}): {through} of {len(answer.files)} files are held "
                f"at no allowed site: read through {options.fallback_redirector}"
            )
    return notes


def unused_names(tables: tuple[dict, dict], listed: list[Listed]) -> list[str]:
    """A name in --xsec or --eras that no sample or dataset has: a typo would leave a sample without it."""
    known = {a.request.name for a in listed} | {f.dataset for a in listed for f in a.files if f.dataset}
    known |= {das_name(a.request.entry) for a in listed}
    flags = ("--xsec", "--eras")
    return [f"{flag}: {key} is no sample or dataset listed here" for flag, table in zip(flags, tables, strict=True)
            for key in table if key not in known]  # fmt: skip
