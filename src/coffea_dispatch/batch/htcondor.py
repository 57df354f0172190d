"""HTCondor: job arrays (vanilla_lxplus), dask-jobqueue's HTCondorCluster (dask/condor), dask-lxplus's
CernCluster (dask/lxplus) and parsl's CondorProvider (parsl/condor).

With cluster_per_sample (the default) each sample is one cluster, `AN-<sample>.sub` with `queue N`, and
`AN-<sample>.sh` runs job `$1` (`arguments = $(ProcId)`); otherwise every job is its own cluster. The queue
(`--queue`) is CERN's JobFlavour, which also bounds how long a job may run.
"""

from __future__ import annotations

import dataclasses
import getpass
import json
import re
import shlex
import shutil
import socket
import subprocess
from typing import Any

from coffea_dispatch.batch.backend import BatchBackend, Cause, EndReport, Groups, JobState
from coffea_dispatch.batch.network import first_free_port, query
from coffea_dispatch.batch.submission import (
    Job,
    Resources,
    Submission,
    number_in_script,
    resource_groups,
    write_job_file,
    write_scripts,
)
from coffea_dispatch.errors import DispatchError
from coffea_dispatch.options import ARRAYS, Option, memory_gb

RETRIES = 2  # automatic re-runs of a failing job before it is held
RELEASES = 3  # held jobs are released automatically at most this many starts, then stay held
DEFAULT_FLAVOUR = "workday"
# JobFlavour -> maximum job duration (CERN batch documentation)
JOB_FLAVOUR_SECONDS = {
    "espresso": 20 * 60,
    "microcentury": 3600,
    "longlunch": 2 * 3600,
    "workday": 8 * 3600,
    "tomorrow": 24 * 3600,
    "testmatch": 3 * 24 * 3600,
    "nextweek": 7 * 24 * 3600,
}
FLAVOURS = tuple(JOB_FLAVOUR_SECONDS)  # shortest first: a job killed at its limit goes one step up
# HoldReasonCode -> cause (HTCondor's CONDOR_HOLD_CODE): 34 JobOutOfResources (over request_memory), 46/47 the
# job's allowed_job_duration/allowed_execute_duration, 12/13 output/input file transfer failures
HOLD_CODES = {34: Cause.MEMORY, 46: Cause.WALLTIME, 47: Cause.WALLTIME, 12: Cause.NODE, 13: Cause.NODE}
POLICY_HOLD_CODES = (3, 26)  # a job's or the system's periodic policy: its subcode may carry one of the above
END_ATTRIBUTES = ("ClusterId", "Args", "JobStatus", "HoldReason", "HoldReasonCode", "HoldReasonSubCode",
                  "RemoveReason", "MemoryUsage", "ResidentSetSize")  # fmt: skip
NOT_RELEASED = " && ".join(
    f"(HoldReasonCode =!= {code})" for code, cause in HOLD_CODES.items() if cause is not Cause.NODE
)
PEAK_USAGE = re.compile(r"peak usage: (\d+) megabytes", re.IGNORECASE)
# condor_q's JobStatus numbers
JOB_STATUS_NAMES = {
    "1": "IDLE",
    "2": "RUNNING",
    "3": "REMOVED",
    "4": "COMPLETED",
    "5": "HELD",
    "6": "TRANSFERRING",
    "7": "SUSPENDED",
}
MAX_MATERIALIZE = Option(
    ("--max-materialize", "--vlxp-max-materialize"),
    dest="max_materialize",
    type=int,
    metavar="N",
    group=ARRAYS,
    to_jobs=False,
    help="HTCondor: keep at most N jobs of a cluster in the queue at once",
)


class HTCondor(BatchBackend):
    name = "HTCondor"
    array_executor = "vanilla_lxplus"
    dask_executors = ("dask/condor", "dask/lxplus")
    parsl_executors = ("parsl/condor",)
    submit_command = "condor_submit"
    queue_command = "condor_q"
    cancel_command = "condor_rm"
    # HTCondor reruns a job in place (max_retries) over its record while it is idle, running or transferring
    native_states = {
        "IDLE": JobState.PENDING,
        "RUNNING": JobState.RUNNING,
        "TRANSFERRING": JobState.RUNNING,
        "SUSPENDED": JobState.SUSPENDED,
        "HELD": JobState.HELD,
        "REMOVED": JobState.CANCELLED,
        "COMPLETED": JobState.COMPLETED,
    }
    options = (MAX_MATERIALIZE,)
    # hold and remove reasons (condor_q/condor_history), lower case; the hold codes above are read first
    end_messages = {
        "gone over memory limit": Cause.MEMORY,
        "memory usage exceeded request_memory": Cause.MEMORY,
        "exceeded allowed job duration": Cause.WALLTIME,
        "exceeded allowed execute duration": Cause.WALLTIME,
        "wall time exceeded": Cause.WALLTIME,  # CERN: "Job removed by SYSTEM_PERIODIC_REMOVE due to wall time ..."
        "transfer input files failure": Cause.NODE,
        "transfer output files failure": Cause.NODE,
    }

    def check_options(self, values: dict[str, Any]) -> None:
        materialize = values.get("max_materialize")
        if materialize is not None and materialize < 1:
            raise DispatchError(f"--max-materialize must be at least 1, got {materialize}")

    def write_files(self, submission: Submission) -> Groups:
        """The .sh and .sub files of a new submission."""
        written = []
        for stem, jobs in write_scripts(submission, submission.jobs).items():
            sub = submission.jobs_folder / f"{stem}.sub"
            write_job_file(sub, submit_file(submission, stem, f"queue {len(jobs)}", submission.resources(jobs[0])))
            written.append((sub, jobs))
        return written

    def resubmit_files(self, submission: Submission, jobs: list[Job], attempt: int) -> Groups:
        """Submit files that rerun `jobs` with the scripts already written (`queue job in (...)`): one per script
        and resources, `<stem>.resubmit<attempt>.sub` (`...resubmit<attempt>.<k>.sub` for a script's k-th)."""
        written = []
        seen: dict[str, int] = {}
        for (stem, resources), group in resource_groups(submission, jobs).items():
            seen[stem] = seen.get(stem, 0) + 1
            suffix = "" if seen[stem] == 1 else f".{seen[stem]}"
            sub = submission.jobs_folder / f"{stem}.resubmit{attempt}{suffix}.sub"
            numbers = ", ".join(str(number_in_script(submission, job)) for job in group)
            text = submit_file(submission, stem, f"queue job in ({numbers})", resources, job_macro="$(job)")
            write_job_file(sub, text)
            written.append((sub, group))
        return written

    def submit_commands(self, submission: Submission, groups: Groups) -> list[list[str]]:
        return [[self.submit_command, *spool_option(submission), str(sub)] for sub, _ in groups]

    def parse_submit_output(self, output: str) -> str | None:
        """ "3 job(s) submitted to cluster 123." -> "123"."""
        for line in output.splitlines():
            before, found, cluster = line.partition("submitted to cluster")
            if found and cluster.strip(" .").isdigit():
                return cluster.strip(" .")
        return None

    def queue_query(self, submission: Submission) -> list[str] | None:
        clusters = sorted({job.cluster for job in submission.jobs if job.cluster})
        return [self.queue_command, *clusters, "-af", "ClusterId", "Args", "JobStatus"] if clusters else None

    def parse_queue(self, submission: Submission, text: str) -> dict[str, str]:
        """`condor_q -af ClusterId Args JobStatus` lines: the job number is the script argument (ProcId for a new
        cluster, $(job) for a resubmission), so (cluster, argument) names the job."""
        by_argument = {(job.cluster, str(number_in_script(submission, job))): job.name for job in submission.jobs}
        states = {}
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 3 and (parts[0], parts[1]) in by_argument:
                states[by_argument[parts[0], parts[1]]] = JOB_STATUS_NAMES.get(parts[2], parts[2])
        return states

    def jobs_query(self, job_ids: list[str]) -> list[str] | None:
        return [self.queue_command, *job_ids, "-af", "JobStatus", "HoldReason"]

    def parse_jobs(self, text: str) -> list[str]:
        """`condor_q -af JobStatus HoldReason` lines: "1 undefined" -> "IDLE", "5 why ..." -> "HELD (why ...)"."""
        said = []
        for line in text.splitlines():
            status, _, reason = (part.strip() for part in line.strip().partition(" "))
            if status:
                state = JOB_STATUS_NAMES.get(status, status)
                said.append(f"{state} ({reason})" if reason and reason != "undefined" else state)
        return said

    def cancel_commands(self, submission: Submission, jobs: list[Job]) -> list[list[str]]:
        """One condor_rm per cluster, its jobs picked by their script argument."""
        by_cluster: dict[str, list[str]] = {}
        for job in jobs:
            by_cluster.setdefault(str(job.cluster), []).append(str(number_in_script(submission, job)))
        commands = []
        for cluster, numbers in by_cluster.items():
            chosen = " || ".join(f'Args == "{number}"' for number in numbers)
            commands.append([self.cancel_command, "-constraint", f"ClusterId == {cluster} && ({chosen})"])
        return commands

    def max_job_seconds(self, walltime_seconds: int, queue: str | None) -> int:
        """Its JobFlavour's limit: HTCondor at CERN ends a job there, whatever --walltime says."""
        return JOB_FLAVOUR_SECONDS.get(queue or DEFAULT_FLAVOUR, JOB_FLAVOUR_SECONDS[DEFAULT_FLAVOUR])

    def time_limit(self, resources: Resources) -> str:
        return f"JobFlavour {resources.queue or DEFAULT_FLAVOUR}"

    def longer(self, resources: Resources) -> Resources | None:
        """The next JobFlavour (espresso -> microcentury -> ... -> nextweek); None after nextweek or for a
        queue that is not a flavour."""
        flavour = resources.queue or DEFAULT_FLAVOUR
        if flavour not in FLAVOURS or flavour == FLAVOURS[-1]:
            return None
        return dataclasses.replace(resources, queue=FLAVOURS[FLAVOURS.index(flavour) + 1])

    def peak_mb_in(self, text: str) -> float | None:
        peaks = PEAK_USAGE.findall(text)
        return float(max(int(mb) for mb in peaks)) if peaks else None

    def end_reports(self, submission: Submission, jobs: list[Job]) -> dict[str, EndReport]:
        """Held jobs from condor_q, removed ones from condor_history: their hold or remove reason, codes and
        MemoryUsage. A job in both (rerun after removal) is taken from the queue."""
        clusters = sorted({job.cluster for job in jobs if job.cluster})
        reports: dict[str, EndReport] = {}
        for command in ("condor_history", "condor_q"):
            if not clusters or shutil.which(command) is None:
                continue
            asked = [command, *clusters, "-json", "-attributes", ",".join(END_ATTRIBUTES)]
            done = query(asked)
            if done.returncode == 0:
                reports |= parse_end_reports(self, submission, done.stdout)
        return reports

    def fetch_logs(self, submission: Submission) -> list[str]:
        """EOS submissions are spooled: bring the jobs' output and logs back (condor_transfer_data), then remove
        the completed jobs that only waited for that from the queue."""
        if not on_eos(submission):
            return [f"{submission.folder} is not under /eos: the jobs wrote their logs in place, nothing to fetch"]
        user = getpass.getuser()
        commands = [
            ["condor_transfer_data", user],
            ["condor_rm", user, "-constraint", "JobStatus == 4"],
        ]
        if shutil.which(commands[0][0]) is None:
            raise DispatchError(
                f"condor_transfer_data is not on PATH here; on the submit node run: "
                f"{'; '.join(map(shlex.join, commands))}"
            )
        said = []
        for command in commands:
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            answer = " ".join((done.stdout + done.stderr).split())
            said.append(f"{shlex.join(command)}: {answer or 'done'}" + ("" if done.returncode == 0 else " (failed)"))
        return said

    def dask_cluster(self, executor: str, settings: Any, options: dict[str, Any]) -> Any:
        flavour = {"+JobFlavour": f'"{settings.queue}"'} if settings.queue else {}
        if executor == "dask/condor":
            from dask_jobqueue import HTCondorCluster

            return HTCondorCluster(disk=settings.disk, job_extra_directives=flavour, **options)
        from dask_lxplus import CernCluster

        # LXPLUS nodes are shared: the scheduler takes a free port, on the host name the workers can reach
        scheduler_port = first_free_port(avoid=(settings.dashboard_port,))
        options["scheduler_options"] |= {"port": scheduler_port, "host": socket.gethostname()}
        image = {"worker_image": settings.worker_image} if settings.worker_image else {}
        return CernCluster(
            disk=settings.disk, container_runtime="singularity", job_extra_directives=flavour, **image, **options
        )

    def parsl_provider(self, executor: str, settings: Any, worker_init: str, blocks: dict[str, int]) -> Any:
        from parsl.providers import CondorProvider

        return CondorProvider(
            cores_per_slot=settings.workers or 1,
            mem_per_slot=memory_gb(settings.memory),
            walltime=settings.walltime,
            worker_init=worker_init,
            scheduler_options=f'+JobFlavour = "{settings.queue}"' if settings.queue else "",
            **blocks,
        )


def submit_file(
    submission: Submission, stem: str, queue_statement: str, resources: Resources, job_macro: str = "$(ProcId)"
) -> str:
    """`queue_statement`: `queue N` for a new cluster (job number = ProcId), or `queue job in (2, 5)` to rerun
    some jobs of the same script (job number = $(job)); output and error files are named by job number."""
    jobs = submission.jobs_folder
    flavour = resources.queue or DEFAULT_FLAVOUR
    lines = [
        f"executable = {jobs / (stem + '.sh')}",
        f"arguments = {job_macro}",
        f"output = {jobs / stem}.{job_macro}.out",
        f"error = {jobs / stem}.{job_macro}.err",
        f"log = {jobs / stem}.log",
        f"request_memory = {resources.memory_mb}",
        f'+JobFlavour = "{flavour}"',
        "getenv = True",
        f"max_retries = {RETRIES}",
        # after the retries, hold instead of leaving the queue; release a few times, then stay held
        f"on_exit_hold = (ExitCode =!= 0) && (NumJobStarts > {RETRIES})",
        # ... but never a hold for memory or duration: the same request would fail the same way; resubmission
        # (status, resubmit, --wait) removes it and asks for more
        f"periodic_release = (NumJobStarts < {RETRIES + RELEASES}) && ((time() - EnteredCurrentStatus) > 600)"
        f" && {NOT_RELEASED}",
        "requirements = Machine =!= LastRemoteHost",
    ]
    materialize = submission.backend_options.get("max_materialize")
    if materialize:  # the schedd keeps at most this many jobs of the cluster in the queue
        lines.append(f"max_materialize = {materialize}")
    lines += [queue_statement, ""]
    return "\n".join(lines)


def spool_option(submission: Submission) -> list[str]:
    """Under /eos the schedd cannot write the job's output and logs: spool them (condor_transfer_data brings
    them back, see `status --fetch-logs`)."""
    return ["-spool"] if on_eos(submission) else []


def on_eos(submission: Submission) -> bool:
    return str(submission.folder).startswith("/eos/")


def class_ads(text: str) -> list[dict[str, Any]]:
    """condor_q/condor_history answers as dicts: `-json` (a list of ads), or `-long` (blank-line separated
    `Name = value` blocks, string values quoted)."""
    if text.lstrip().startswith("["):
        return json.loads(text)
    ads, ad = [], {}
    for line in [*text.splitlines(), ""]:
        name, equals, value = line.partition(" = ")
        if equals:
            value = value.strip()
            ad[name.strip()] = json.loads(value) if value.startswith('"') or value.lstrip("-").isdigit() else value
        elif not line.strip() and ad:
            ads.append(ad)
            ad = {}
    return ads


def parse_end_reports(backend: HTCondor, submission: Submission, text: str) -> dict[str, EndReport]:
    """Job name -> how the held or removed ones ended; jobs still idle or running are left out."""
    by_argument = {(job.cluster, str(number_in_script(submission, job))): job.name for job in submission.jobs}
    reports = {}
    for ad in class_ads(text) if text.strip() else []:
        name = by_argument.get((str(ad.get("ClusterId")), str(ad.get("Args", "")).strip()))
        reason = ad.get("HoldReason") or ad.get("RemoveReason")
        if name is None or not reason:
            continue
        code, subcode = int(ad.get("HoldReasonCode") or 0), int(ad.get("HoldReasonSubCode") or 0)
        cause = HOLD_CODES.get(code) or (HOLD_CODES.get(subcode) if code in POLICY_HOLD_CODES else None)
        # MemoryUsage (MB) is an expression over ResidentSetSize (KiB) in the job ad: -json and -long show it
        # unevaluated, so a number is used where there is one
        usage, resident = ad.get("MemoryUsage"), ad.get("ResidentSetSize")
        peak = float(usage) if isinstance(usage, (int, float)) and usage > 0 else None
        if peak is None and isinstance(resident, int) and resident > 0:
            peak = round(resident / 1024, 1)
        reports[name] = EndReport(cause, str(reason), peak)
    return reports
