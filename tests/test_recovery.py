"""Resubmission by cause: what the scheduler says of a job's end (HTCondor hold and remove reasons, sacct), and
what the rerun asks for (more memory, a longer queue, the redirector, or no rerun at all)."""

from __future__ import annotations

import json
from pathlib import Path

import htcondor2
import pytest

from coffea_dispatch.arguments import submit_options_from
from coffea_dispatch.batch import slurm as slurm_module
from coffea_dispatch.batch.analysis_jobs import AnalysisJobs
from coffea_dispatch.batch.backend import Cause
from coffea_dispatch.batch.htcondor import HTCondor, class_ads, parse_end_reports
from coffea_dispatch.batch.job import JobRecord
from coffea_dispatch.batch.recovery import GLOBAL_REDIRECTOR, apply, decide, more_memory
from coffea_dispatch.batch.slurm import Slurm, parse_sacct
from coffea_dispatch.batch.submission import JobRequests, Resources, Submission, plan_jobs
from coffea_dispatch.batch.triage import Triage, triage
from coffea_dispatch.errors import DispatchError

# condor_q -json of held jobs, as the schedd answers: the startd's cgroup memory kill (code 34), an
# allowed_job_duration hold (46), an input transfer failure (13), a policy hold whose subcode says memory (3/34)
# and our own on_exit_hold after the retries (3/0)
CONDOR_Q_JSON = """[
{ "ClusterId": 7, "Args": "0", "JobStatus": 5, "HoldReasonCode": 34, "HoldReasonSubCode": 0,
  "HoldReason": "Error from slot1_4@b9g47n1234.cern.ch: Job has gone over memory limit of 2000 megabytes. \
Peak usage: 2600 megabytes.",
  "MemoryUsage": "/Expr(( ( ResidentSetSize + 1023 ) / 1024 ))/", "ResidentSetSize": 2662400 },
{ "ClusterId": 7, "Args": "1", "JobStatus": 5, "HoldReasonCode": 46, "HoldReasonSubCode": 0,
  "HoldReason": "The job exceeded allowed job duration of 20:00" },
{ "ClusterId": 7, "Args": "2", "JobStatus": 5, "HoldReasonCode": 13, "HoldReasonSubCode": 2,
  "HoldReason": "Transfer input files failure at execution point slot1_2@b9g47n1234.cern.ch using protocol https." },
{ "ClusterId": 7, "Args": "3", "JobStatus": 5, "HoldReasonCode": 3, "HoldReasonSubCode": 34,
  "HoldReason": "Job raised a signal 9. Handling signal as if job has gone over memory limit." },
{ "ClusterId": 7, "Args": "4", "JobStatus": 5, "HoldReasonCode": 3, "HoldReasonSubCode": 0,
  "HoldReason": "The job attribute OnExitHold expression '(ExitCode =!= 0) && (NumJobStarts > 2)' evaluated to TRUE" },
{ "ClusterId": 7, "Args": "5", "JobStatus": 2 }
]
"""
# condor_history -long of a job CERN's schedd removed at its JobFlavour's limit
CONDOR_HISTORY_LONG = """ClusterId = 8
Args = "0"
JobStatus = 3
RemoveReason = "Job removed by SYSTEM_PERIODIC_REMOVE due to wall time exceeded allowed max."
ResidentSetSize = 512000

"""
SACCT = """41_0|OUT_OF_MEMORY|
41_0.batch|OUT_OF_MEMORY|2150400K
41_0.extern|COMPLETED|1024K
41_1|CANCELLED by 0|
41_1.batch|CANCELLED|1.5G
"""


@pytest.fixture
def planned(tmp_path) -> Submission:
    """A written vanilla_lxplus submission of six one-file jobs (nothing submitted, nothing read)."""
    from coffea_dispatch.inputs.analysis import load_analysis
    from conftest import write_analysis

    files = [tmp_path / f"f{i}.root" for i in range(6)]
    for file in files:
        file.write_bytes(b"root" + b"\0" * 100)
    analysis = load_analysis(write_analysis(tmp_path / "config", {"Signal": [str(f) for f in files]}))
    spec = AnalysisJobs(analysis)
    requests = JobRequests(memory_mb=2000, queue="espresso", max_memory_mb=32000)
    submission = plan_jobs(
        spec.work(analysis.samples), spec, executor="vanilla_lxplus", requests=requests, folder=tmp_path / "sub"
    )
    for job in submission.jobs:
        job.cluster = "7"
    return submission


def test_hold_reasons_of_each_kind_from_condor_q_json(planned):
    reports = parse_end_reports(HTCondor(), planned, CONDOR_Q_JSON)
    assert sorted(reports) == [f"Signal-{i}" for i in range(5)]  # the running one has no end yet
    memory, duration, transfer, policy, our_hold = (reports[f"Signal-{i}"] for i in range(5))
    assert (memory.cause, memory.peak_mb) == (Cause.MEMORY, 2600.0)  # ResidentSetSize: MemoryUsage is an expression
    assert (duration.cause, transfer.cause, policy.cause) == (Cause.WALLTIME, Cause.NODE, Cause.MEMORY)
    assert our_hold.cause is None and "OnExitHold" in our_hold.evidence  # the job's own exit code decides


def test_a_removal_at_the_flavour_limit_from_condor_history_long(planned):
    planned.jobs[0].cluster = "8"
    ads = class_ads(CONDOR_HISTORY_LONG)
    assert ads == [{"ClusterId": 8, "Args": "0", "JobStatus": 3, "RemoveReason": ads[0]["RemoveReason"],
                    "ResidentSetSize": 512000}]  # fmt: skip
    (report,) = parse_end_reports(HTCondor(), planned, CONDOR_HISTORY_LONG).values()
    why = triage(HTCondor(), None, "REMOVED", "", report)
    assert why.cause is Cause.WALLTIME and why.evidence.startswith("Job removed by SYSTEM_PERIODIC_REMOVE")
    assert why.peak_mb == 500.0


def test_the_hold_reason_outranks_the_job_record_and_carries_the_peak(planned):
    (report,) = [r for name, r in parse_end_reports(HTCondor(), planned, CONDOR_Q_JSON).items() if name == "Signal-0"]
    why = triage(HTCondor(), JobRecord(exit_code=1, peak_rss_mb=900.0), "HELD", "Traceback ...", report)
    assert (why.cause, why.peak_mb) == (Cause.MEMORY, 2600.0)


def test_sacct_states_and_max_rss(planned):
    for job in planned.jobs:
        job.cluster = "41"
    planned.cluster_per_sample = True
    reports = parse_sacct(Slurm(), planned, SACCT)
    assert (reports["Signal-0"].cause, reports["Signal-0"].peak_mb) == (Cause.MEMORY, 2100.0)
    assert (reports["Signal-1"].cause, reports["Signal-1"].evidence) == (None, "sacct: CANCELLED")
    assert reports["Signal-1"].peak_mb == 1536.0


def test_slurm_memory_kill_message_gives_the_peak():
    text = "slurmstepd: error: StepId=1.batch exceeded memory limit (646205440 > 209715200), being killed"
    assert Slurm().peak_mb_in(text) == 616.3 and triage(Slurm(), None, "FAILED", text).peak_mb == 616.3


@pytest.mark.parametrize(
    "last, peak, cap, expected",
    [
        (2000, 2600.0, None, 4096),  # 1.5 x peak = 3900 -> next GB
        (2000, None, None, 3072),  # no measurement: one GB more, rounded up
        (2000, 1000.0, None, 3072),  # never below last + 1 GB
        (30000, 30000.0, 32000, 32000),  # capped
        (32000, 40000.0, 32000, None),  # the cap is reached: no more to give
    ],
)
def test_more_memory(last, peak, cap, expected):
    assert more_memory(last, peak, cap) == expected


def _decide(submission: Submission, index: int, why: Triage, force: bool = False):
    job = submission.jobs[index]
    decision = decide(HTCondor(), submission, job, why, force=force)
    apply(submission, job, decision)
    return job, decision


def test_decisions_by_cause_reach_the_resubmitted_submit_files(planned):
    memory_job, memory = _decide(planned, 0, Triage(Cause.MEMORY, "gone over memory limit", 2600.0))
    assert memory.rerun and memory.action == "memory 2000 MB -> 4096 MB, peak 2600 MB" and memory_job.memory_mb == 4096
    slow_job, slow = _decide(planned, 1, Triage(Cause.WALLTIME, "exceeded allowed job duration"))
    assert slow.action == "walltime JobFlavour espresso -> JobFlavour microcentury" and slow_job.queue == "microcentury"
    node_job, node = _decide(planned, 2, Triage(Cause.NODE, "Transfer input files failure"))
    assert node.rerun and (node_job.memory_mb, node_job.queue) == (None, None)
    _, bug = _decide(planned, 3, Triage(Cause.PROCESSOR, "ZeroDivisionError"))
    assert not bug.rerun and "reproduce: bash " in bug.action and bug.action.endswith("AN-Signal.sh 3")
    groups = HTCondor().resubmit_files(planned, [memory_job, slow_job, node_job], attempt=2)
    requested = {}
    for sub, jobs in groups:
        description = htcondor2.Submit(sub.read_text())
        numbers = [item["job"] for item in description.itemdata()]
        requested[tuple(numbers)] = (description["request_memory"], description["MY.JobFlavour"])
        assert [str(planned.jobs.index(job)) for job in jobs] == numbers
    assert requested == {
        ("0",): ("4096", '"espresso"'),
        ("1",): ("2000", '"microcentury"'),
        ("2",): ("2000", '"espresso"'),
    }
    planned.save()
    saved = Submission.load(planned.folder)  # the history is in the manifest
    causes = [d["cause"] for job in saved.jobs for d in job.decisions]
    assert causes == ["memory", "walltime", "node failure or preemption", "processor exception"]


def test_the_end_of_each_ladder_is_not_resubmitted_unless_forced(planned):
    planned.jobs[0].queue = "nextweek"
    _, slow = _decide(planned, 0, Triage(Cause.WALLTIME, "wall time exceeded"))
    assert not slow.rerun and "JobFlavour nextweek is already the longest" in slow.action
    planned.jobs[1].memory_mb = 32000
    _, big = _decide(planned, 1, Triage(Cause.MEMORY, "gone over memory limit", 40000.0))
    assert not big.rerun and "already --max-memory" in big.action
    _, forced = _decide(planned, 1, Triage(Cause.MEMORY, "gone over memory limit", 40000.0), force=True)
    assert forced.rerun and forced.resources.memory_mb == 32000 and forced.action.startswith("rerun as asked")


def test_slurm_doubles_the_time_up_to_the_partition_limit(monkeypatch):
    monkeypatch.setattr(slurm_module, "partition_max_seconds", lambda partition: None)
    assert Slurm().longer(Resources(2000, 45 * 60, "debug")).walltime_seconds == 90 * 60
    assert Slurm().longer(Resources(2000, 20 * 3600, None)).walltime_seconds == 40 * 3600
    monkeypatch.setattr(slurm_module, "partition_max_seconds", lambda partition: 3600)
    assert Slurm().longer(Resources(2000, 45 * 60, "debug")).walltime_seconds == 3600
    assert Slurm().longer(Resources(2000, 3600, "debug")) is None


def test_bad_remote_input_gets_the_redirector_and_a_local_one_is_not_rerun(planned):
    job = planned.jobs[0]
    url = "root://eoscms.cern.ch//eos/cms/store/mc/Run3/GluGlu/NANOAODSIM/1.root"
    job.files = [url]
    Path(job.sample_json).write_text(json.dumps({"Signal": [url]}))
    _, remote = _decide(planned, 0, Triage(Cause.INPUT, "no replica could be opened"))
    assert remote.rerun and "global redirector" in remote.action
    redirected = f"{GLOBAL_REDIRECTOR.rstrip('/')}//store/mc/Run3/GluGlu/NANOAODSIM/1.root"
    assert json.loads(Path(job.sample_json).read_text()) == {"Signal": [[url, redirected]]}  # its name is unchanged
    broken = Path(planned.folder) / "broken.root"
    broken.write_bytes(b"not a ROOT file")
    planned.jobs[1].files = [str(broken)]
    _, local = _decide(planned, 1, Triage(Cause.INPUT, "cannot be opened as a ROOT file"))
    assert not local.rerun and "local input cannot be read" in local.action
    broken.write_bytes(b"root" + b"\0" * 100)  # the user fixed it
    _, fixed = _decide(planned, 1, Triage(Cause.INPUT, "cannot be opened as a ROOT file"))
    assert fixed.rerun


def test_max_memory_is_checked_before_anything_is_written(generated, tmp_path, monkeypatch):
    from coffea_dispatch.batch.submit import submit_analysis
    from coffea_dispatch.cli import build_parser
    from conftest import write_analysis

    monkeypatch.chdir(tmp_path)
    analysis = write_analysis(tmp_path / "config", generated)
    args = build_parser().parse_args(
        ["run", "--json-analysis", str(analysis), "--executor", "vanilla_slurm", "--max-memory", "lots"]
    )
    from coffea_dispatch.arguments import run_options_from

    with pytest.raises(DispatchError, match="'lots'"):
        submit_analysis(run_options_from(args), submit_options_from(args))
    assert not (tmp_path / ".higgs_dna_vanilla_slurm").exists()
