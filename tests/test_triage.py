"""Why a batch job failed: its record, the scheduler's end state and its error file, read into one cause."""

from __future__ import annotations

import os
import signal

import pytest

from coffea_dispatch.batch.backend import Cause
from coffea_dispatch.batch.htcondor import HTCondor
from coffea_dispatch.batch.job import JobRecord, read_record, recording
from coffea_dispatch.batch.slurm import Slurm
from coffea_dispatch.batch.triage import triage
from coffea_dispatch.signals import Terminated

SLURM_MEMORY = """slurmstepd-vm: error: StepId=1.batch exceeded memory limit (646205440 > 209715200), being killed
slurmstepd-vm: error: Exceeded job memory limit
slurmstepd-vm: error: *** JOB 1 ON vm CANCELLED AT 2026-11-27T17:30:14 ***"""
SLURM_WALLTIME = "slurmstepd: error: *** JOB 2 ON vm CANCELLED AT 2026-11-27T17:30:02 DUE TO TIME LIMIT ***"


@pytest.mark.parametrize(
    "record, end_state, text, cause",
    [
        (None, "FAILED", SLURM_MEMORY, Cause.MEMORY),  # jobacct_gather's kill: SLURM calls it a launch failure
        (None, None, SLURM_WALLTIME, Cause.WALLTIME),
        (JobRecord(exit_code=143, signal=15), "TIMEOUT", "", Cause.WALLTIME),
        (None, "OUT_OF_MEMORY", "", Cause.MEMORY),
        (None, "PREEMPTED", "", Cause.NODE),
        (JobRecord(exit_code=1), None, "error: the workflow raised ZeroDivisionError on f.root", Cause.PROCESSOR),
        (JobRecord(exit_code=2), None, "error: f.root: cannot be opened as a ROOT file", Cause.INPUT),
        (JobRecord(exit_code=1), None, "Traceback ...\nMemoryError", Cause.MEMORY),
        (None, None, "", Cause.UNKNOWN),
    ],
)
def test_causes(record, end_state, text, cause):
    assert triage(Slurm(), record, end_state, text).cause is cause


def test_the_evidence_is_the_line_that_says_so():
    assert triage(Slurm(), None, None, SLURM_MEMORY).evidence.endswith("Exceeded job memory limit")
    assert triage(Slurm(), None, "TIMEOUT", "").evidence == "SLURM ended it as TIMEOUT"


def test_a_backend_reads_only_its_own_scheduler_words():
    assert triage(HTCondor(), None, "TIMEOUT", "").cause is Cause.UNKNOWN  # not an HTCondor state


def test_a_job_record_keeps_its_signal_and_peak_memory(tmp_path):
    path = tmp_path / "job.result.json"
    with pytest.raises(KeyboardInterrupt), recording(path) as record:
        block = bytearray(50 * 2**20)  # resident: written
        block[::4096] = b"x" * len(block[::4096])
        record.events = 1
        raise Terminated(signal.SIGTERM)
    written = read_record(path)
    assert (written.status, written.exit_code, written.signal) == ("failed", 128 + signal.SIGTERM, signal.SIGTERM)
    assert written.peak_rss_mb >= 50 and written.wall_seconds >= 0 and written.host == os.uname().nodename
