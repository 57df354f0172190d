"""The real-NanoAOD tests run on a fresh clone: without ../shared, coffea's sdist gives the same files."""

import pytest

from conftest import SHARED_NANOAOD, independent_of_coffea
from nanoaod_files import NANOAOD_SHA256, nanoaod_from_coffea_sdist, sha256_of


@pytest.mark.slow
@independent_of_coffea
def test_the_real_files_come_from_coffeas_sdist_when_shared_is_absent(tmp_path):
    folder = nanoaod_from_coffea_sdist(tmp_path / "cache")
    assert sorted(p.name for p in folder.iterdir()) == sorted(NANOAOD_SHA256)
    if SHARED_NANOAOD.is_dir():  # the very bytes ../shared holds
        assert all(sha256_of(folder / name) == sha256_of(SHARED_NANOAOD / name) for name in NANOAOD_SHA256)
    (folder / "nano_dy.root").write_bytes(b"damaged")
    assert nanoaod_from_coffea_sdist(tmp_path / "cache") == folder  # repaired from the cached sdist
    assert sha256_of(folder / "nano_dy.root") == NANOAOD_SHA256["nano_dy.root"]
