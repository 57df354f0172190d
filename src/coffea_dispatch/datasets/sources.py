"""Where a dataset's files are listed: a local folder or glob, an XRootD folder, DAS (through dasgoclient).

Each source answers with `ListedFile`s: the path a sample JSON names, the other replicas of that file (tried
in order when it fails), and its size and events where the source says them. Every failure is one line that
names what was asked and what the source answered. Each query has a timeout (--timeout) the source's client
is told; the caller waits for a whole line no longer than its deadline, whatever a client does with that.
"""

from __future__ import annotations

import fnmatch
import getpass
import glob
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from coffea_dispatch.errors import DispatchError
from coffea_dispatch.inputs.files import configure_xrootd

GLOB_CHARACTERS = "*?["
# HiggsDNA's fetch_datasets.py: the redirector of the region the jobs run in (--where), else --xrootd
REDIRECTORS = {
    "Americas": "root://cmsxrootd.fnal.gov/",
    "Eurasia": "root://xrootd-cms.infn.it/",
    "Yolo": "root://cms-xrd-global.cern.ch/",
}
DASGOCLIENT = ("dasgoclient", "/cvmfs/cms.cern.ch/common/dasgoclient")
DBS_READER = "https://cmsweb.cern.ch/dbs/{instance}/DBSReader"  # DBS's REST API, where dasgoclient is missing
EXTRA = "pip install 'coffea-dispatch[datasets]'"
PRIVATE_INSTANCE = "prod/phys03"  # datasets ending in /USER are published there


@dataclass
class ListedFile:
    path: str  # what the sample JSON names (the first replica)
    replicas: list[str] = field(default_factory=list)  # the other replicas, in order of preference
    size: int | None = None  # bytes
    events: int | None = None
    sites: tuple[str, ...] = ()  # where the path and each replica are read from (rucio: RSEs; else the server)
    dataset: str | None = None  # the DAS dataset the file is of (a wildcard's match), None for folders
    sumw: float | None = None  # sum of generator weights, where the file was described (simulation)
    kind: str = ""  # "mc" or "data", where the file was described (genWeight, or run and luminosity blocks)


def site_of(url: str) -> str:
    """Where a file is read from, for the sites table: the server of a URL, `local` for a path."""
    if "://" not in url:
        return "local"
    server, _ = _split_url(url)
    return server


def has_glob(text: str) -> bool:
    return any(c in text for c in GLOB_CHARACTERS)


def _extension_ok(name: str, extensions: tuple[str, ...]) -> bool:
    return not extensions or name.lower().endswith(tuple(e.lower() for e in extensions))


def list_local(entry: str, recursive: bool, extensions: tuple[str, ...]) -> list[ListedFile]:
    """A folder's files (below it too with `recursive`), or the files a glob matches, sorted; absolute paths."""
    path = Path(os.path.expanduser(entry))
    if has_glob(entry):
        names = [Path(p) for p in glob.glob(os.path.expanduser(entry), recursive=True)]
    elif path.is_dir():
        names = list(path.rglob("*") if recursive else path.iterdir())
    elif path.is_file():
        names = [path]
    else:
        raise DispatchError(f"{entry}: no such folder or file (a local dataset must be a folder, a file or a glob)")
    files = [p for p in names if p.is_file() and _extension_ok(p.name, extensions)]
    return [ListedFile(str(p.resolve()), size=p.stat().st_size, sites=("local",)) for p in sorted(files)]


def _split_url(url: str) -> tuple[str, str]:
    """`root://host:port//store/x/` -> ("root://host:port", "/store/x/")."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}", "/" + parts.path.lstrip("/")


def list_xrootd(url: str, recursive: bool, extensions: tuple[str, ...], timeout: int) -> list[ListedFile]:
    """An XRootD folder's files (`recursive`: its subfolders' too); a glob in the last part filters names. The
    client is told the timeout first: by default it retries a refused connection for minutes."""
    configure_xrootd(timeout)
    from XRootD import client
    from XRootD.client.flags import DirListFlags, StatInfoFlags

    server, path = _split_url(url)
    pattern = None
    if has_glob(path):
        path, pattern = path.rstrip("/").rsplit("/", 1)
        path = path or "/"
    filesystem = client.FileSystem(server)
    found: list[ListedFile] = []
    folders = [path]
    while folders:
        folder = folders.pop(0)
        status, listing = filesystem.dirlist(folder, DirListFlags.STAT, timeout=timeout)
        if not status.ok:
            raise DispatchError(f"{server}/{folder}: cannot be listed ({status.message.strip()})")
        for entry in sorted(listing, key=lambda e: e.name):
            full = f"{folder.rstrip('/')}/{entry.name}"
            if entry.statinfo is not None and entry.statinfo.flags & StatInfoFlags.IS_DIR:
                if recursive:
                    folders.append(full)
                continue
            if (pattern is None or fnmatch.fnmatchcase(entry.name, pattern)) and _extension_ok(entry.name, extensions):
                size = entry.statinfo.size if entry.statinfo is not None else None
                found.append(ListedFile(f"{server}/{full}", size=size, sites=(server,)))
    return sorted(found, key=lambda listed: listed.path)


def find_dasgoclient() -> str | None:
    for candidate in DASGOCLIENT:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def dasgoclient() -> str:
    found = find_dasgoclient()
    if found is None:
        raise DispatchError("DAS datasets need dasgoclient (CMS machines: /cvmfs/cms.cern.ch/common/dasgoclient)")
    return found


def service_call(what: str, call, retries: int, service: str):
    """A request to DAS, DBS or rucio, retried; one line with the service's own answer when it keeps failing."""
    answer = ""
    for _ in range(retries + 1):
        try:
            return call()
        except Exception as error:  # dbs3-client raises HTTPError, dbsClientException, pycurl.error, ...
            answer = " ".join(str(getattr(error, "message", None) or error).split())[:300]
    raise DispatchError(f"{service} {what} failed ({answer}); check the dataset name and your grid proxy")


def plain_records(text: str, field: str) -> list[dict]:
    """dasgoclient's plain answer (one name per line, what it prints without -json, and what some builds and
    wrappers print with it) as the records its JSON answer holds; only when every line is a name."""
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not all(name.startswith("/") and " " not in name for name in names):
        raise RuntimeError(f"neither JSON nor one name per line: {text.strip()[:200]!r}")
    return [{field: [{"name": name}]} for name in names]


def _dasgoclient_answer(command: list[str], timeout: int, field: str) -> list[dict]:
    """One dasgoclient call's records (`field`: what a plain answer's lines name); its last line of complaint
    (or the timeout) as the exception."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"no answer within {timeout} s") from None
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise RuntimeError(lines[-1] if lines else f"exit code {done.returncode}")
    try:
        records = json.loads(done.stdout or "[]")
    except json.JSONDecodeError:
        return plain_records(done.stdout, field)
    return records if isinstance(records, list) else []


def das_query(query: str, timeout: int, retries: int) -> list[dict]:
    """dasgoclient's JSON answer to `query` (a list of records), retried; one line when it keeps failing."""
    command = [dasgoclient(), "-json", f"-query={query}"]
    field = "file" if query.startswith("file ") else "dataset"
    return service_call(f"query '{query}'", lambda: _dasgoclient_answer(command, timeout, field), retries, "DAS")


def instance_for(dataset: str, instance: str) -> str:
    return PRIVATE_INSTANCE if dataset.endswith("/USER") else instance


def das_datasets(pattern: str, instance: str, timeout: int, retries: int) -> list[str]:
    """The datasets a name with wildcards (`/A/*/NANOAODSIM`) stands for; a name without, itself."""
    if not has_glob(pattern):
        return [pattern]
    records = das_query(f"dataset={pattern} instance={instance_for(pattern, instance)}", timeout, retries)
    names = sorted({d["name"] for r in records for d in r.get("dataset", []) if isinstance(d.get("name"), str)})
    if not names:
        raise DispatchError(f"DAS: no dataset matches {pattern} (instance {instance_for(pattern, instance)})")
    return names


def das_files(dataset: str, instance: str, prefixes: list[str], timeout: int, retries: int) -> list[ListedFile]:
    """A dataset's files, as the first prefix + logical file name; the same through the other prefixes (by
    default the CMS global redirector) are its next replicas."""
    records = das_query(f"file dataset={dataset} instance={instance_for(dataset, instance)}", timeout, retries)
    files: dict[str, ListedFile] = {}
    for record in records:
        for item in record.get("file", []):
            name = item.get("name")
            if not isinstance(name, str) or not name.startswith("/store/"):
                continue
            files[name] = _das_file(name, prefixes, item.get("size"), item.get("nevents"), dataset)
    if not files:
        raise DispatchError(f"DAS: dataset {dataset} has no files (instance {instance_for(dataset, instance)})")
    return [files[name] for name in sorted(files)]


def _das_file(name: str, prefixes: list[str], size, events, dataset: str) -> ListedFile:
    urls = list(dict.fromkeys(prefix.rstrip("/") + "/" + name for prefix in prefixes))
    sites = tuple(site_of(url) for url in urls)
    return ListedFile(urls[0], urls[1:], number(size), number(events), sites=sites, dataset=dataset)


def _dbs(instance: str, proxy: str | None, url: str | None):
    """dbs3-client's DbsApi on the instance's reader, authenticated with the grid proxy."""
    try:
        from dbs.apis.dbsClient import DbsApi
    except ImportError:
        raise DispatchError(f"DAS datasets without dasgoclient need dbs3-client: {EXTRA}") from None

    os.environ.setdefault("USER", getpass.getuser())  # DbsApi names the caller from $USER
    try:
        return DbsApi(url=url or DBS_READER.format(instance=instance), key=proxy, cert=proxy)
    except Exception as error:  # RestClient's ClientAuthException: no proxy, no CA folder
        raise DispatchError(
            f"DBS's REST API cannot be used here ({getattr(error, 'message', error)}): it needs the grid proxy and the "
            "grid's CA certificates (X509_CERT_DIR, or /etc/grid-security/certificates), or dasgoclient on PATH"
        ) from None


def dbs_datasets(pattern: str, instance: str, proxy: str | None, url: str | None, retries: int) -> list[str]:
    """What a name with wildcards stands for, from DBS's REST API."""
    if not has_glob(pattern):
        return [pattern]
    instance = instance_for(pattern, instance)
    api = _dbs(instance, proxy, url)
    found = service_call(f"datasets {pattern}", lambda: api.listDatasets(dataset=pattern), retries, "DBS")
    names = sorted({d["dataset"] for d in found if isinstance(d, dict) and isinstance(d.get("dataset"), str)})
    if not names:
        raise DispatchError(f"DBS: no dataset matches {pattern} (instance {instance})")
    return names


def dbs_files(
    dataset: str, instance: str, prefixes: list[str], proxy: str | None, url: str | None, retries: int
) -> list[ListedFile]:
    """A dataset's valid files from DBS's REST API, with their size and events."""
    instance = instance_for(dataset, instance)
    api = _dbs(instance, proxy, url)
    found = service_call(
        f"files of {dataset}", lambda: api.listFiles(dataset=dataset, detail=True, validFileOnly=1), retries, "DBS"
    )
    files = {
        f["logical_file_name"]: _das_file(
            f["logical_file_name"], prefixes, f.get("file_size"), f.get("event_count"), dataset
        )
        for f in found
        if isinstance(f, dict) and str(f.get("logical_file_name", "")).startswith("/store/")
    }
    if not files:
        raise DispatchError(f"DBS: dataset {dataset} has no valid files (instance {instance})")
    return [files[name] for name in sorted(files)]


@dataclass(frozen=True)
class Sites:
    """Which sites (rucio RSEs) may serve a file, and in which order: `prefer` first, in its order, then the
    others by rucio's priority; never a tape, volatile or unavailable replica."""

    allow: tuple[str, ...] = ()  # only these (empty: any)
    block: tuple[str, ...] = ()
    regex: str | None = None  # only sites whose name matches
    prefer: tuple[str, ...] = ()

    def allowed(self, site: str) -> bool:
        if self.allow and site not in self.allow:
            return False
        if site in self.block:
            return False
        return self.regex is None or re.search(self.regex, site) is not None

    def order(self, site: str, priority: int) -> tuple[int, int, str]:
        rank = self.prefer.index(site) if site in self.prefer else len(self.prefer)
        return rank, priority, site


def number(value) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0 else None
