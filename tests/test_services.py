"""A newcomer's `make test`: the services it cannot start are installed (as root on Debian), or named at the end
with the count of tests they kept from running and the command that installs them."""

from __future__ import annotations

import shutil
import subprocess
import sys

import slurm_cluster
import xrootd_server
from conftest import REPO, independent_of_coffea
from services import summary_lines

pytestmark = independent_of_coffea


def test_a_missing_service_is_a_named_skip_reason(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    slurm, xrootd = slurm_cluster.unavailable_reason(), xrootd_server.unavailable_reason()
    reasons = [slurm, slurm, xrootd]
    lines = summary_lines([*reasons, "real NanoAOD files not found", "coffea 0.7 only"])
    assert lines[0] == "3 test(s) did not run because a service is missing here:"
    assert lines[1].startswith("  SLURM: 2 test(s) (") and lines[2].startswith("  XRootD: 1 test(s) (")
    assert "sudo .ci/install-services" in lines[-1]
    assert summary_lines(["coffea 0.7 only"]) == []


def test_make_test_ends_by_counting_the_tests_a_missing_service_kept_from_running(tmp_path):
    """The hook, in a real pytest run where SLURM cannot be found (PATH without its commands, no daemons)."""
    probe = tmp_path / "test_probe.py"
    probe.write_text(
        "import pytest, shutil, slurm_cluster\n"
        "def test_needs_slurm(monkeypatch):\n"
        "    monkeypatch.setattr(shutil, 'which', lambda name: None)\n"
        "    pytest.skip(slurm_cluster.unavailable_reason())\n"
    )
    shutil.copy(REPO / "tests" / "conftest.py", tmp_path / "conftest.py")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(probe)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO / "tests")},
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 test(s) did not run because a service is missing here:" in done.stdout
    assert "sudo .ci/install-services" in done.stdout
