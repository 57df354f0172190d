"""Every command-line option, defined once: its flags, default and help sit on a dataclass field.

The run options (`RunOptions`), the executors' share of them (`ExecutorSettings`), the physics switches passed
to processors, the argument list a batch job runs with, the keywords of `coffea_dispatch.executor()` and the
parser (assembled in `arguments.py`, which knows the backends) are all derived from these fields,
as snakemake derives its CLI from an executor plugin's settings dataclass. Names and defaults are HiggsDNA's
run_analysis.py ones, so its command lines run unchanged. A batch backend adds the options only it reads
(`BatchBackend.options`). `values.py` says what values each option takes; `keywords.py` names the options as
the Python API's keywords in refusals raised below it.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any

from coffea_dispatch.errors import DispatchError
from coffea_dispatch.options.values import refusal

DEFAULT_WALLTIME = "01:00:00"
DEFAULT_JOB_MEMORY = "10GB"  # a batch job's memory request when --memory is not given
DEFAULT_JOB_MEMORY_MB = 10_000  # the same in MB, as memory_mb reads it (a constant: parsing imports dask)
DEFAULT_DASHBOARD_HOST = "127.0.0.1"  # dashboards are for the user, through an ssh tunnel
DEFAULT_MAX_MEMORY = "32GB"  # what resubmissions after memory failures may raise a job's request to, at most
DEFAULT_DASHBOARD_PORT = 8787
DEFAULT_WORKER_WAIT = "00:30:00"  # how long a batch cluster waits for its first worker (jobs pending forever)

MAIN, EXECUTION, ARRAYS, DASK = None, "executors and batch resources", "batch job arrays", "Dask"
PHYSICS = "HiggsDNA physics switches (passed to the processor; older underscore spellings accepted too)"


@dataclass(frozen=True)
class Option:
    """One command-line option and where its value goes."""

    flags: tuple[str, ...]
    dest: str = ""
    default: Any = None
    type: Callable[[str], Any] | None = None
    action: str | None = None  # store_true / store_false
    help: str | None = None
    metavar: str | None = None
    required: bool = False
    group: str | None = MAIN
    to_jobs: bool = True  # a batch job runs with it again (when not at its default)
    path: bool = False  # a batch job gets it as an absolute path
    minimum: float | None = None  # the smallest value it takes (checked once, by `check_values`)
    maximum: float | None = None  # the largest (an integer's is values.INT_LIMIT unless smaller)
    nullable: bool | None = None  # None is one of its values (unset: when its default is None)

    @property
    def label(self) -> str:
        """How a message names it: its short flags and its first long one (`-s/--scaleout`)."""
        short = [f for f in self.flags if not f.startswith("--")]
        return "/".join([*short, next((f for f in self.flags if f.startswith("--")), "")]).strip("/")

    def add_to(self, parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
        keywords: dict[str, Any] = {"dest": self.dest, "help": self.help}
        if self.action:
            keywords["action"] = self.action
        else:
            keywords |= {"default": self.default, "type": self.type, "metavar": self.metavar}
            if self.required:
                keywords["required"] = True
        parser.add_argument(*self.flags, **keywords)

    def job_arguments(self, value: Any) -> list[str]:
        """This option as a batch job's arguments: nothing at its default, else the flag (and its value)."""
        if not self.to_jobs or value == self.default:
            return []
        flag = next((f for f in self.flags if f.startswith("--")), self.flags[0])
        if self.action:
            return [flag]
        return [flag, os.path.abspath(value) if self.path else str(value)]


def option(*flags: str, default: Any = None, required: bool = False, **spec: Any) -> Any:
    """A dataclass field that is also a command-line option."""
    if spec.get("action") == "store_true":
        default = False
    elif spec.get("action") == "store_false":
        default = True
    specification = Option(flags, default=default, required=required, **spec)
    return field(default=MISSING if required else default, metadata={"option": specification})


def options_of(cls: type) -> Iterator[Option]:
    """The options a dataclass declares, each named after its field (None is a value where its annotation
    says so: `max_memory: str | None` defaults to a size, and None lifts the cap)."""
    for f in fields(cls):
        if "option" in f.metadata:
            spec = f.metadata["option"]
            nullable = spec.nullable if spec.nullable is not None else _admits_none(f.type, spec.default)
            yield replace(spec, dest=f.name, nullable=nullable)


def _admits_none(annotation: Any, default: Any) -> bool:
    text = str(annotation)
    return default is None or "None" in text or "Optional" in text


def check_values(cls: type, values: dict[str, Any]) -> None:
    """Every option of `cls` among `values` of its type and within its range, checked once before anything
    runs, is written or submitted: one line naming its flag and what it takes."""
    check_options(options_of(cls), values)


def check_options(specs: Iterable[Option], values: dict[str, Any]) -> None:
    """`check_values` for options declared one by one (a batch backend's, an executor plugin's)."""
    for spec in specs:
        if spec.dest in values:
            refused = refusal(spec, values[spec.dest])
            if refused:
                raise DispatchError(refused)


def duration_seconds(text: str, flag: str = "--walltime") -> int:
    """--walltime to seconds, read as batch schedulers read a time limit (the text went to the scheduler as it
    was, and a job's limit must not change by being parsed): MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS."""
    days, dash, clock = text.strip().rpartition("-")
    try:
        parts = [int(p) for p in clock.split(":")]
        if len(parts) > 3 or min(parts) < 0 or (days and int(days) < 0):
            raise ValueError
        if dash:  # after D-: hours first
            hours, minutes, seconds = (parts + [0, 0])[:3]
        else:  # minutes first, unless all three are given
            hours, minutes, seconds = parts if len(parts) == 3 else [0, *(parts + [0])[:2]]
        return (int(days) if days else 0) * 86400 + hours * 3600 + minutes * 60 + seconds
    except ValueError:
        raise DispatchError(f"{flag} {text!r}: expected HH:MM:SS, D-HH:MM:SS or minutes") from None


def format_duration(seconds: int) -> str:
    """Seconds to [D-]HH:MM:SS, the format of --walltime."""
    days, rest = divmod(int(seconds), 86400)
    clock = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}-{clock}" if days else clock


@dataclass(kw_only=True)
class ExecutorChoice:
    """Which executor runs the chunks."""

    executor: str = option(
        "--executor", default="futures", to_jobs=False, group=EXECUTION, help="%(executors)s (default: %(default)s)"
    )


@dataclass(kw_only=True)
class ProcessOptions:
    """How many chunks one worker runs at once (processes of a local pool, threads of a Dask worker)."""

    workers: int | None = option(
        "-j",
        "--workers",
        type=int,
        minimum=1,
        group=EXECUTION,
        help="worker processes (default: all cores for futures)",
    )


@dataclass(kw_only=True)
class ClusterSize:
    """How many workers a cluster has, and the memory of each (a LocalCluster's workers, a batch system's jobs)."""

    memory: str | None = option(
        "-m", "--memory", group=EXECUTION, help=f"memory per job for cluster executors (default {DEFAULT_JOB_MEMORY})"
    )
    scaleout: int | None = option(
        "-s", "--scaleout", type=int, minimum=1, group=EXECUTION, help="minimum number of cluster jobs"
    )
    max_scaleout: int | None = option(
        "--max-scaleout", "--max_scaleout", type=int, minimum=1, group=EXECUTION, help="maximum number of cluster jobs"
    )


@dataclass(kw_only=True)
class BatchResources(ClusterSize):
    """What each job asks a batch system for."""

    walltime: str = option(
        "--walltime", default=DEFAULT_WALLTIME, group=EXECUTION, help="walltime per job (default: %(default)s)"
    )
    disk: str = option("--disk", default="20GB", group=EXECUTION, help="disk per job (default: %(default)s)")
    queue: str | None = option(
        "-q", "--queue", group=EXECUTION, help="queue, partition or job class of the batch system"
    )
    voms: str | None = option("--voms", path=True, group=EXECUTION, help="path to a grid proxy readable by the workers")


@dataclass(kw_only=True)
class WorkerLogs:
    """Where a cluster's worker jobs (Dask's, parsl's) write their logs."""

    log_directory: str = option(
        "--log-directory",
        default="dask-worker-logs",
        path=True,
        group=DASK,
        help="batch clusters: where worker job logs go (default: %(default)s)",
    )


@dataclass(kw_only=True)
class WorkerWait:
    """How long a cluster of batch worker jobs (Dask's, parsl's) waits for its first worker: jobs accepted but
    never started (a partition whose nodes are down, more memory than any node has) would otherwise keep the run
    waiting forever."""

    worker_wait: str = option(
        "--worker-wait",
        default=DEFAULT_WORKER_WAIT,
        to_jobs=False,
        group=EXECUTION,
        help="batch clusters: how long to wait for the first worker before cancelling the worker jobs and saying "
        "what the queue says of them (HH:MM:SS or minutes; 0: no limit; default: %(default)s)",
    )


@dataclass(kw_only=True)
class DaskOptions(WorkerWait, WorkerLogs):
    """A Dask cluster's scheduler, dashboard, credentials and worker logs."""

    scheduler_address: str | None = option(
        "--scheduler-address", group=DASK, help="attach to an existing Dask scheduler, e.g. tcp://host:8786"
    )
    dashboard_port: int = option(
        "--dashboard-port",
        type=int,
        default=DEFAULT_DASHBOARD_PORT,
        minimum=0,
        maximum=65535,
        group=DASK,
        help="dashboard port (default: %(default)s; Dask picks a free one when it is taken)",
    )
    dashboard_address: str = option(
        "--dashboard-address",
        default=DEFAULT_DASHBOARD_HOST,
        group=DASK,
        help="the interface the dashboard listens on, HOST or HOST:PORT (default: %(default)s, reached through the "
        "printed ssh tunnel; another one lets anyone who can reach it see your jobs)",
    )
    credentials_directory: str | None = option(
        "--credentials-directory",
        path=True,
        group=DASK,
        help="where each run's TLS credentials for the Dask clusters it starts are kept (a folder the batch workers "
        "see; default: $XDG_CACHE_HOME/coffea-dispatch/credentials)",
    )
    show_tunnel: bool = option(
        "--show-tunnel",
        action="store_true",
        group=DASK,
        help="print the ssh tunnel command for the dashboard even when not on a remote host",
    )
    worker_image: str | None = option(
        "--worker-image", group=DASK, help="container image for the workers where the cluster runs them in one"
    )
    dask_report: str | None = option(
        "--dask-report", path=True, group=DASK, help="write distributed's performance report (HTML) to this file"
    )


@dataclass(kw_only=True)
class ExecutorOptions(DaskOptions, BatchResources, ProcessOptions, ExecutorChoice):
    """What the executors read, all kinds together (each kind declares its own share: `executors.kinds`)."""


@dataclass(kw_only=True)
class ExecutorState(ExecutorChoice):
    """What the run works out for an executor of any kind, beside its options: the base of every kind's settings."""

    status: bool = True  # draw a progress bar
    remote_inputs: bool = False  # some input is root://: batch workers need the grid proxy
    security: Any = None  # the TLS credentials of the Dask cluster being started (distributed's Security)

    @property
    def name(self) -> str:
        return self.executor


@dataclass(kw_only=True)
class ExecutorSettings(ExecutorOptions, ExecutorState):
    """Settings that hold every executor option, whatever the kind (each kind's own settings hold its share)."""


@dataclass
class RunOptions(ExecutorOptions):
    """One analysis run: `run_analysis(RunOptions("analysis.json", ...))` is what the command line does (the
    executor's options are keyword-only)."""

    json_analysis: str = option(
        "--json-analysis",
        "--json_analysis",
        required=True,
        to_jobs=False,
        path=True,
        help="analysis JSON: samplejson, workflow, metaconditions, taggers, systematics, ...",
    )
    dump: str | None = option("-d", "--dump", path=True, help="folder for the per-chunk parquet outputs")
    output: str | None = option(
        "-o", "--output", to_jobs=False, path=True, help="coffea accumulator file (written only when given)"
    )
    save: str | None = option("--save", to_jobs=False, path=True, help="save the coffea accumulator to this file")
    schema: str = option("--schema", default="nano", help="input schema: nano or base (default: %(default)s)")
    format: str = option("-f", "--format", default="root", help="input file format (default: %(default)s)")
    timeout: int = option(
        "--timeout",
        type=int,
        default=60,
        minimum=1,
        maximum=2**31 - 1,  # XRootD keeps it in a C int
        help="xrootd timeout in seconds (default: %(default)s)",
    )
    redirector: str | None = option(
        "--redirector",
        help="read bare /store/... paths through this XRootD redirector, e.g. root://cms-xrd-global.cern.ch",
    )
    retries: int = option(
        "--retries",
        type=int,
        default=2,
        minimum=0,
        help="further attempts at a remote file that failed to open or read, and with --wait, resubmissions "
        "of failed jobs (default: %(default)s)",
    )
    validate: bool = option("--validate", action="store_true", help="only open every input and report bad files")
    metadata_cache: str | None = option(
        "--metadata-cache",
        metavar="DIR",
        path=True,
        help="where each input's entries, UUID and branch names are kept between runs, so a rerun opens no file "
        "before processing (default: $XDG_CACHE_HOME/coffea-dispatch/metadata)",
    )
    use_metadata_cache: bool = option(
        "--no-metadata-cache", action="store_false", help="read every input's metadata from the file itself"
    )
    skipbadfiles: bool = option("--skipbadfiles", action="store_true", help="skip unreadable inputs and list them")
    overwrite: bool = option(
        "--overwrite",
        action="store_true",
        help="redo every chunk of --dump (default: resume, skipping the chunks an earlier run completed)",
    )
    only: str | None = option("--only", help="only this sample (glob allowed) or this file")
    limit: int | None = option("--limit", type=int, minimum=1, metavar="N", help="first N files of each sample")
    chunk: int = option(
        "--chunk", type=int, default=500_000, minimum=1, metavar="N", help="events per chunk (default: %(default)s)"
    )
    max: int | None = option("--max", type=int, minimum=1, metavar="N", help="at most N chunks per sample")
    debug: bool = option("--debug", action="store_true", help="show full tracebacks")
    progress: bool = option("--no-progress", action="store_false", help="no progress bar")
    plot: bool = option("--no-plot", action="store_false", help="do not write the mass plot")
    physics: dict[str, Any] = field(default_factory=dict)  # PhysicsSwitches by name (absent: at their default)
    executor_options: dict[str, Any] = field(default_factory=dict)  # options an executor plugin declares, by name
    # lines the user should see while the run goes on (the Dask dashboard); the CLI prints them
    announce: Callable[[str], None] | None = None

    def executor_values(self) -> dict[str, Any]:
        """What an executor's settings are built from (`executors.registry.settings_for`)."""
        return {**vars(self), **self.executor_options, "status": self.progress}


@dataclass(kw_only=True)
class PhysicsSwitches:
    """HiggsDNA's physics switches: accepted so its command lines run unchanged, passed to processors."""

    skipCQR: bool = option("--skipCQR", action="store_true", group=PHYSICS)
    applyCQR: bool = option("--applyCQR", action="store_true", group=PHYSICS)
    skipJetVetoMap: bool = option("--skipJetVetoMap", action="store_true", group=PHYSICS)
    use_trigger: bool = option("--no-trigger", "--no_trigger", action="store_false", group=PHYSICS)
    fiducialCuts: str = option("--fiducialCuts", default="classical", group=PHYSICS)
    doDeco: bool = option("--doDeco", action="store_true", group=PHYSICS)
    Smear_sigma_m: bool = option("--Smear-sigma-m", "--Smear_sigma_m", action="store_true", group=PHYSICS)
    doFlow_corrections: bool = option(
        "--doFlow-corrections", "--doFlow_corrections", action="store_true", group=PHYSICS
    )
    output_format: str = option("--output-format", "--output_format", default="parquet", group=PHYSICS)
    nano_version: int | None = option(
        "--nano-version",
        "--nano_version",
        type=int,
        group=PHYSICS,
        help="NanoAOD version of the inputs (required by HiggsDNA's workflows)",
    )
    analysis: str = option("--analysis", default="mainAnalysis", group=PHYSICS)
    trigger_group: str = option("--triggerGroup", "--trigger-group", default=".*DoubleEG.*", group=PHYSICS)


PHYSICS_SWITCHES: dict[str, Any] = {o.dest: o.default for o in options_of(PhysicsSwitches)}


def array_option(*flags: str, **spec: Any) -> Any:
    """An option of batch job arrays: in their --help group, and never passed on to the jobs themselves."""
    return option(*flags, to_jobs=False, group=ARRAYS, **spec)


@dataclass(kw_only=True)
class SubmitOptions:
    """How a batch job array is cut and followed; not passed on to its jobs."""

    files_per_job: int = array_option(
        "--files-per-job",
        "--files_per_job",
        type=int,
        default=1,
        minimum=1,
        help="input files per batch job (default: %(default)s)",
    )
    cluster_per_sample: bool = array_option(
        "--no-cluster-per-sample",
        "--vlxp-dont-cluster-per-sample",
        action="store_false",
        help="one submission (cluster) per job instead of one per sample",
    )
    wait: bool = array_option(
        "--wait",
        action="store_true",
        help="block until every job ends, resubmit failures (--retries), merge, print the run summary",
    )
    poll_seconds: float = array_option(
        "--poll-seconds",
        type=float,
        default=10.0,
        minimum=0,
        maximum=86_400,  # a look a day at least: a longer sleep overflows the clock
        help="with --wait: seconds between looks at the jobs (default: %(default)s)",
    )
    max_memory: str | None = array_option(
        "--max-memory",
        default=DEFAULT_MAX_MEMORY,
        help="the most memory a job resubmitted after a memory failure may ask for (default: %(default)s)",
    )
    job_record: str | None = option("--job-record", to_jobs=False, help=argparse.SUPPRESS)
    backend: dict[str, Any] = field(default_factory=dict)  # the options a backend declares, by name


def job_arguments(options: RunOptions) -> list[str]:
    """The run options a batch job must run with again, as arguments (non-default values only).

    Built from the values, never by string surgery on sys.argv: values with spaces or shell characters come
    back as single arguments."""
    argv: list[str] = []
    for spec in options_of(RunOptions):
        argv += spec.job_arguments(getattr(options, spec.dest))
    physics = {**PHYSICS_SWITCHES, **options.physics}
    for spec in options_of(PhysicsSwitches):
        argv += spec.job_arguments(physics[spec.dest])
    return argv


def memory_mb(memory: str | None) -> int:
    """--memory 10GB -> megabytes, the unit batch systems take memory requests in (dask's own parser)."""
    from dask.utils import parse_bytes

    try:
        megabytes = parse_bytes(memory or DEFAULT_JOB_MEMORY) // 10**6
    except ValueError:
        raise DispatchError(f"--memory {memory!r}: expected a size such as 10GB or 2000MB") from None
    return max(1, megabytes)


def memory_gb(memory: str | None) -> int:
    """--memory in whole GB, the unit of parsl's providers."""
    return max(1, -(-memory_mb(memory) // 1000))
