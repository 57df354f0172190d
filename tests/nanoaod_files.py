"""Real CMS NanoAOD test files without ../shared: coffea's source distribution on PyPI carries them.

A fresh clone has no ../shared/data/nanoaod; the tests that prove real files are read then take the same five
files (checked by hash) from coffea's sdist, downloaded once from the package index (PEP 691's JSON page of
$PIP_INDEX_URL, else PyPI) and cached.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import urllib.request
from pathlib import Path

SDIST_NAME = "coffea-2026.9.0.tar.gz"
SDIST_SHA256 = "7dfc1b54d9d1533c8a5bd8a5786d13272ea1a170b0817061d4478f721aedae04"
SAMPLES = "tests/samples/"
# the files ../shared/data/nanoaod holds, by their sha256 (the same bytes as in coffea 2026.9.0's tests/samples/)
NANOAOD_SHA256 = {
    "nano_dimuon.root": "eac7c0a973e054e890766ec4c61ca784d3d49e4f82ec0c8b9dfbe55c233297a9",
    "nano_dy.root": "159b17b34b4d13ea4960d36fb9b01f2a505cc1a5a8de0fb3cfa185154543c81c",
    "nano_dy_empty.root": "6357b85ab2af3c012b9be1a2839ee42ba7e74be0ee98323397bf4179bec90fb4",
    "nano_dy_rntuple.root": "b0adca6eec90dc3ec73ec139d39a0929a3e08db825ef4df5691e6c03b792a3d6",
    "nano_tt_v12.root": "bc9afdac1e5e1bf820f79e4f8d4942c893ed2accfcb2e49bb63b69727b59af3b",
}


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def complete(folder: Path) -> bool:
    files = NANOAOD_SHA256.items()
    return all((folder / name).is_file() and sha256_of(folder / name) == digest for name, digest in files)


def nanoaod_from_coffea_sdist(cache: Path) -> Path:
    """`cache`/nanoaod holding the five files, fetched from coffea's sdist unless already there."""
    target = cache / "nanoaod"
    if complete(target):
        return target
    cache.mkdir(parents=True, exist_ok=True)
    sdist = cache / SDIST_NAME
    if not sdist.is_file() or sha256_of(sdist) != SDIST_SHA256:
        download_sdist(sdist)
    target.mkdir(exist_ok=True)
    with tarfile.open(sdist) as archive:
        for member in archive.getmembers():
            name = member.name.rpartition("/")[2]
            if name in NANOAOD_SHA256 and member.name.endswith(SAMPLES + name):
                (target / name).write_bytes(archive.extractfile(member).read())
    if not complete(target):
        raise RuntimeError(f"{sdist} does not hold the expected NanoAOD files: delete {cache} and retry")
    return target


def download_sdist(destination: Path) -> None:
    """The sdist's address from the index's JSON page, its bytes checked against the pinned hash."""
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
    request = urllib.request.Request(f"{index}/coffea/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as page:
            (url,) = [f["url"] for f in json.load(page)["files"] if f["filename"] == SDIST_NAME]
        with urllib.request.urlopen(url, timeout=300) as answer:
            content = answer.read()
    except (OSError, ValueError, KeyError) as error:
        raise RuntimeError(f"cannot download {SDIST_NAME} from {index}: {error}") from error
    if hashlib.sha256(content).hexdigest() != SDIST_SHA256:
        raise RuntimeError(f"{SDIST_NAME} from {index} does not have the expected sha256")
    destination.write_bytes(content)
