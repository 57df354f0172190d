"""Command line: `coffea-dispatch run|make-sample|demo|status|...`; `run` takes HiggsDNA's run_analysis.py options.

Only argument parsing and printing live here; the work is done by `coffea_dispatch.run` and friends.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shlex
import sys
from collections.abc import Sequence

from rich.console import Console

from coffea_dispatch import signals
from coffea_dispatch.errors import DispatchError
from coffea_dispatch.signals import stopping_signals_interrupt

EXIT_OK = 0
EXIT_PROCESSOR_FAILED = 1


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """HiggsDNA's run_analysis.py options, same names and defaults, so its command lines run unchanged."""
    parser.add_argument(
        "--json-analysis",
        "--json_analysis",
        dest="json_analysis",
        required=True,
        help="analysis JSON: samplejson, workflow, metaconditions, taggers, systematics, ...",
    )
    parser.add_argument("-d", "--dump", default=None, help="folder for the per-chunk parquet outputs")
    parser.add_argument("-o", "--output", default=None, help="coffea accumulator file (written only when given)")
    parser.add_argument("--save", default=None, help="save the coffea accumulator to this file")
    parser.add_argument("--schema", default="nano", help="input schema: nano or base (default: %(default)s)")
    parser.add_argument("-f", "--format", default="root", help="input file format (default: %(default)s)")
    parser.add_argument(
        "--executor",
        default="futures",
        help="iterative, futures, dask/local, dask/condor, dask/slurm, dask/lxplus, dask/casa, dask/lpc, "
        "parsl/slurm, parsl/condor, vanilla_lxplus or vanilla_slurm (default: %(default)s)",
    )
    parser.add_argument(
        "-j", "--workers", type=int, default=None, help="worker processes (default: all cores for futures)"
    )
    parser.add_argument("-m", "--memory", default=None, help="memory per job for cluster executors, e.g. 10GB")
    parser.add_argument("--walltime", default="01:00:00", help="walltime per job (default: %(default)s)")
    parser.add_argument("--disk", default="20GB", help="disk per job (default: %(default)s)")
    parser.add_argument("-s", "--scaleout", type=int, default=None, help="minimum number of cluster jobs")
    parser.add_argument(
        "--max-scaleout",
        "--max_scaleout",
        dest="max_scaleout",
        type=int,
        default=None,
        help="maximum number of cluster jobs",
    )
    parser.add_argument("-q", "--queue", default=None, help="queue / partition / HTCondor JobFlavour")
    parser.add_argument("--voms", default=None, help="path to a grid proxy readable by the workers")
    parser.add_argument("--timeout", type=int, default=60, help="xrootd timeout in seconds (default: %(default)s)")
    parser.add_argument(
        "--redirector",
        default=None,
        help="read bare /store/... paths through this XRootD redirector, e.g. root://cms-xrd-global.cern.ch",
    )
    parser.add_argument("--validate", action="store_true", help="only open every input and report bad files")
    parser.add_argument(
        "--metadata-cache",
        default=None,
        metavar="DIR",
        help="where each input's entries, UUID and branch names are kept between runs, so a rerun opens no file "
        "before processing (default: $XDG_CACHE_HOME/coffea-dispatch/metadata)",
    )
    parser.add_argument(
        "--no-metadata-cache",
        dest="use_metadata_cache",
        action="store_false",
        help="read every input's metadata from the file itself",
    )
    parser.add_argument("--skipbadfiles", action="store_true", help="skip unreadable inputs and list them")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="redo every chunk of --dump (default: resume, skipping the chunks an earlier run completed)",
    )
    parser.add_argument("--only", default=None, help="only this sample (glob allowed) or this file")
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="first N files of each sample")
    parser.add_argument(
        "--chunk", type=int, default=500_000, metavar="N", help="events per chunk (default: %(default)s)"
    )
    parser.add_argument("--max", type=int, default=None, metavar="N", help="at most N chunks per sample")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    parser.add_argument("--job-record", dest="job_record", default=None, help=argparse.SUPPRESS)
    batch = parser.add_argument_group("batch job arrays (vanilla_lxplus, vanilla_slurm)")
    batch.add_argument(
        "--files-per-job",
        "--files_per_job",
        dest="files_per_job",
        type=int,
        default=1,
        help="input files per batch job (default: %(default)s)",
    )
    batch.add_argument(
        "--no-cluster-per-sample",
        "--vlxp-dont-cluster-per-sample",
        dest="cluster_per_sample",
        action="store_false",
        help="one submission (cluster) per job instead of one per sample",
    )
    batch.add_argument(
        "--max-materialize",
        "--vlxp-max-materialize",
        dest="max_materialize",
        type=int,
        default=None,
        metavar="N",
        help="HTCondor: keep at most N jobs of a cluster in the queue at once",
    )
    batch.add_argument(
        "--wait",
        action="store_true",
        help="block until every job ends, resubmit failures (--retries), merge, print the run summary",
    )
    batch.add_argument(
        "--retries",
        type=int,
        default=2,
        help="further attempts at a remote file that failed to open or read, and with --wait, resubmissions "
        "of failed jobs (default: %(default)s)",
    )
    batch.add_argument(
        "--poll-seconds",
        dest="poll_seconds",
        type=float,
        default=10.0,
        help="with --wait: seconds between looks at the jobs (default: %(default)s)",
    )
    dask = parser.add_argument_group("Dask")
    dask.add_argument(
        "--scheduler-address",
        dest="scheduler_address",
        default=None,
        help="attach to an existing Dask scheduler, e.g. tcp://host:8786",
    )
    dask.add_argument(
        "--dashboard-port",
        dest="dashboard_port",
        type=int,
        default=None,
        help="dashboard port (default 8787; Dask picks a free one when it is taken)",
    )
    dask.add_argument(
        "--show-tunnel",
        dest="show_tunnel",
        action="store_true",
        help="print the ssh tunnel command for the dashboard even when not on a remote host",
    )
    dask.add_argument(
        "--worker-image",
        dest="worker_image",
        default=None,
        help="dask/lxplus: container image for the workers (default: dask-lxplus's AlmaLinux 9 image)",
    )
    dask.add_argument(
        "--log-directory",
        dest="log_directory",
        default="dask-worker-logs",
        help="batch clusters: where worker job logs go (default: %(default)s)",
    )
    dask.add_argument(
        "--dask-report",
        dest="dask_report",
        default=None,
        help="write distributed's performance report (HTML) to this file",
    )
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    parser.add_argument("--no-plot", dest="plot", action="store_false", help="do not write the mass plot")
    physics = parser.add_argument_group(
        "HiggsDNA physics switches (passed to the processor; older underscore spellings accepted too)"
    )
    physics.add_argument("--skipCQR", action="store_true")
    physics.add_argument("--applyCQR", action="store_true")
    physics.add_argument("--skipJetVetoMap", action="store_true")
    physics.add_argument("--no-trigger", "--no_trigger", dest="use_trigger", action="store_false")
    physics.add_argument("--fiducialCuts", default="classical")
    physics.add_argument("--doDeco", action="store_true")
    physics.add_argument("--Smear-sigma-m", "--Smear_sigma_m", dest="Smear_sigma_m", action="store_true")
    physics.add_argument("--doFlow-corrections", "--doFlow_corrections", dest="doFlow_corrections", action="store_true")
    physics.add_argument("--output-format", "--output_format", dest="output_format", default="parquet")
    physics.add_argument(
        "--nano-version",
        "--nano_version",
        dest="nano_version",
        type=int,
        default=None,
        help="NanoAOD version of the inputs (required by HiggsDNA's workflows)",
    )
    physics.add_argument("--analysis", default="mainAnalysis")
    physics.add_argument("--triggerGroup", "--trigger-group", dest="trigger_group", default=".*DoubleEG.*")


# options a batch job does not pass on: the job sets its own analysis JSON and executor
# (nor -o/--save: every job saves its own accumulator, and the submitter sums them)
JOB_EXCLUDED_DESTS = {
    "json_analysis",
    "executor",
    "files_per_job",
    "cluster_per_sample",
    "job_record",
    "help",
    "output",
    "save",
    "max_materialize",
    "wait",
    "poll_seconds",
}
PATH_DESTS = {"dump", "output", "save", "dask_report", "voms", "metadata_cache"}


def argv_from_options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[str]:
    """Rebuild the command line from parsed options (non-default values only), for a batch job to reuse.

    Never string surgery on sys.argv: values with spaces or shell characters come back as single arguments.
    """
    argv: list[str] = []
    for action in parser._actions:
        dest = action.dest
        if dest in JOB_EXCLUDED_DESTS or not action.option_strings or not hasattr(args, dest):
            continue
        value = getattr(args, dest)
        if value == action.default:
            continue
        flag = next(s for s in action.option_strings if s.startswith("--"))
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            argv.append(flag)
        else:
            argv += [flag, os.path.abspath(value) if dest in PATH_DESTS else str(value)]
    return argv


PHYSICS_DESTS = (
    "skipCQR",
    "applyCQR",
    "skipJetVetoMap",
    "use_trigger",
    "fiducialCuts",
    "doDeco",
    "Smear_sigma_m",
    "doFlow_corrections",
    "output_format",
    "nano_version",
    "analysis",
    "trigger_group",
)


NOT_RUN_OPTIONS = {
    "command",
    "job_record",
    "files_per_job",
    "cluster_per_sample",
    "max_materialize",
    "wait",
    "poll_seconds",
}


def options_from_args(args: argparse.Namespace):
    from coffea_dispatch.run import RunOptions

    values = {k: v for k, v in vars(args).items() if k not in PHYSICS_DESTS and k not in NOT_RUN_OPTIONS}
    return RunOptions(**values, physics={k: getattr(args, k) for k in PHYSICS_DESTS})


def command_run(args: argparse.Namespace, console: Console) -> int:
    from coffea_dispatch.executors import BATCH_EXECUTORS

    if args.executor in BATCH_EXECUTORS:
        return _submit_batch(args, console)
    if args.job_record:
        from coffea_dispatch.batch.job import recording

        with recording(args.job_record) as record:
            code = _run_or_validate(args, console, record)
            record.exit_code = code
            return code
    return _run_or_validate(args, console)


def _submit_batch(args: argparse.Namespace, console: Console) -> int:
    from coffea_dispatch.batch import submit_analysis

    if args.retries < 0:
        raise DispatchError(f"--retries must be 0 or more, got {args.retries}")
    parser = argparse.ArgumentParser()
    add_run_arguments(parser)
    options = options_from_args(args)
    result = submit_analysis(
        options,
        argv_from_options(args, parser),
        files_per_job=args.files_per_job,
        cluster_per_sample=args.cluster_per_sample,
        max_materialize=args.max_materialize,
    )
    submission = result.submission
    console.print(
        f"submitted {len(submission.jobs)} job(s) as cluster(s) {', '.join(result.clusters)} from {submission.folder}",
        highlight=False,
        soft_wrap=True,
    )
    if not args.wait:
        return EXIT_OK
    return _wait_for_batch(args, options, submission, console)


def _wait_for_batch(args: argparse.Namespace, options, submission, console: Console) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from coffea_dispatch import report, run

    with Progress(
        TextColumn("jobs"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failed]} failed"),
        TimeElapsedColumn(),
        console=console,
        disable=not args.progress,
    ) as progress:
        task = progress.add_task("jobs", total=len(submission.jobs), failed=0)

        def show(done: int, failed: int, total: int) -> None:
            progress.update(task, completed=done, total=total, failed=failed)

        try:
            outcome = run.collect_batch(
                options, submission, retries=args.retries, poll_seconds=args.poll_seconds, on_progress=show
            )
        except KeyboardInterrupt as interrupt:
            progress.stop()
            console.print(
                f"stopped waiting; the jobs keep running: coffea-dispatch status {shlex.quote(str(submission.folder))}",
                highlight=False,
                soft_wrap=True,
            )
            return signals.exit_code(interrupt)
    report.print_run(outcome, console)
    return EXIT_OK


def _run_or_validate(args: argparse.Namespace, console: Console, record=None) -> int:
    from coffea_dispatch import report, run

    options = options_from_args(args)
    options.announce = lambda line: console.print(line, highlight=False, soft_wrap=True)
    if options.validate:
        result = run.validate_inputs(options)
        report.print_validation(result, console)
        return DispatchError.exit_code if result.bad_files else EXIT_OK
    outcome = run.run_analysis(options)
    report.print_run(outcome, console)
    if record is not None:
        record.events = outcome.events
        record.chunks = sum(s.chunks for s in outcome.samples.values())
        record.bad_files = outcome.bad_files
    return EXIT_PROCESSOR_FAILED if outcome.failed_chunks else EXIT_OK


def command_make_sample(args: argparse.Namespace, console: Console) -> int:
    from coffea_dispatch.samples.generator import SampleSpec, make_sample

    spec = SampleSpec(
        events=args.events, seed=args.seed, signal_fraction=args.signal_fraction, extra_branches=args.extra_branches
    )
    path = make_sample(args.output, spec)
    console.print(f"wrote {path} ({args.events:,} events, seed {args.seed})", highlight=False)
    return EXIT_OK


def command_demo(args: argparse.Namespace, console: Console) -> int:
    from coffea_dispatch import report
    from coffea_dispatch.samples.demo import run_demo

    outcome = run_demo(args.folder, events=args.events, executor=args.executor, workers=args.workers)
    report.print_run(outcome, console)
    console.print(f"demo files in {args.folder}: analysis.json, samples.json, data/, output/", highlight=False)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coffea-dispatch", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    add_run_arguments(commands.add_parser("run", help="run an analysis (same options as run_analysis.py)"))
    sample = commands.add_parser("make-sample", help="write a synthetic NanoAOD-like ROOT file")
    sample.add_argument("output", help="output .root file")
    sample.add_argument("--events", type=int, required=True)
    sample.add_argument("--seed", type=int, default=1)
    sample.add_argument("--signal-fraction", dest="signal_fraction", type=float, default=0.2)
    sample.add_argument(
        "--extra-branches",
        dest="extra_branches",
        type=int,
        default=0,
        help="add N filler branches (NanoAOD has about 1,500)",
    )
    status = commands.add_parser("status", help="what every job of a batch submission did")
    status.add_argument("folder", help="the submission folder (.higgs_dna_vanilla_lxplus/<analysis>_<time>)")
    status.add_argument(
        "--fetch-logs",
        dest="fetch_logs",
        action="store_true",
        help="EOS submissions: condor_transfer_data, then condor_rm of the completed jobs",
    )
    again = commands.add_parser("resubmit", help="run the failed jobs of a batch submission again")
    again.add_argument("folder", help="the submission folder")
    again.add_argument("--missing", action="store_true", help="also the jobs that never recorded an end")
    merge = commands.add_parser("merge", help="one parquet per sample under <dump>/merged/, normalisation summed")
    merge.add_argument("folder", help="a submission folder (its jobs must be done) or a --dump folder")
    merge.add_argument(
        "--allow-incomplete",
        dest="allow_incomplete",
        action="store_true",
        help="merge a submission even when some jobs failed or have not finished",
    )
    check = commands.add_parser("check", help="does every input chunk of a --dump have exactly one complete output?")
    check.add_argument("dump", help="the --dump folder of a run")
    demo = commands.add_parser("demo", help="generate a small dataset, run the base workflow, print the summary")
    demo.add_argument("folder", nargs="?", default="demo")
    demo.add_argument("--events", type=int, default=200_000, help="events per generated file")
    demo.add_argument("--executor", default="futures")
    demo.add_argument("-j", "--workers", type=int, default=None)
    return parser


def _run_guarded(function, args: argparse.Namespace) -> int:
    """One line on stderr for user errors; the real traceback only when the user's own code raised."""
    from coffea_dispatch.chunk import ProcessorFailure

    console = Console()
    if not console.is_terminal:  # rich assumes 80 columns in a pipe or log file: the table needs more
        console = Console(width=132)
    errors = Console(stderr=True)
    try:
        with stopping_signals_interrupt():
            return function(args, console)
    except ProcessorFailure as exc:
        errors.print(exc.traceback_text, end="", highlight=False, markup=False)
        errors.print(f"error: {exc.message}", highlight=False, markup=False, soft_wrap=True)
        return exc.exit_code
    except DispatchError as exc:
        if getattr(args, "debug", False):
            raise
        errors.print(f"error: {exc.message}", highlight=False, markup=False, soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt as interrupt:  # Ctrl-C, SIGTERM, SIGHUP
        errors.print(signals.describe(interrupt), highlight=False)
        return signals.exit_code(interrupt)


def command_status(args: argparse.Namespace, console: Console) -> int:
    from rich.table import Table

    from coffea_dispatch.batch.status import submission_status

    if args.fetch_logs:
        from coffea_dispatch.batch import backend_of
        from coffea_dispatch.batch.submission import Submission

        submission = Submission.load(args.folder)
        for line in backend_of(submission.executor).fetch_logs(submission):
            console.print(line, highlight=False, soft_wrap=True)
    submission, statuses, asked = submission_status(args.folder, ask_queue=True)
    table = Table(title=f"{submission.folder.name} ({submission.executor}, {len(submission.jobs)} job(s))")
    columns = ["sample", "done", "failed"]
    columns += ["queued/held", "running", "gone without record"] if asked else ["not finished"]
    for column in [*columns, "events"]:
        table.add_column(column, justify="left" if column == "sample" else "right")
    for s in statuses.values():
        waiting = [s.queued, s.running, s.gone] if asked else [s.unfinished]
        table.add_row(s.sample, *(str(n) for n in [s.done, s.failed, *waiting]), f"{s.events:,}")
    console.print(table)
    if not asked:
        console.print("(the batch queue could not be asked: jobs without a record may be queued, running or gone)")
    for s in statuses.values():
        for job, exit_code, tail in s.failed_jobs:
            console.print(
                f"[red]failed[/] job {job.name} (exit code {exit_code}): {job.analysis_json}",
                highlight=False,
                soft_wrap=True,
            )
            if tail:
                console.print(tail, highlight=False, markup=False)
        for job, tail in s.gone_jobs:
            console.print(
                f"[red]gone[/] job {job.name}: left the queue without a record (memory, walltime, scancel or a "
                "lost node?); `resubmit --missing` reruns it",
                highlight=False,
                soft_wrap=True,
            )
            if tail:
                console.print(tail, highlight=False, markup=False)
    complete = all(s.failed == 0 and s.unfinished == 0 for s in statuses.values())
    return EXIT_OK if complete else EXIT_PROCESSOR_FAILED


def command_merge(args: argparse.Namespace, console: Console) -> int:
    from coffea_dispatch.batch.merge import merge

    merged = merge(args.folder, allow_incomplete=args.allow_incomplete)
    for m in merged:
        console.print(
            f"{m.sample}: {m.files} file(s), {m.rows:,} rows, sum_genw_presel {m.sum_genw:.6g} -> {m.path}",
            highlight=False,
            soft_wrap=True,
        )
    if not merged:
        console.print("nothing to merge", highlight=False)
    return EXIT_OK


def command_resubmit(args: argparse.Namespace, console: Console) -> int:
    from coffea_dispatch.batch import resubmit

    result = resubmit(args.folder, missing=args.missing)
    if not result.commands:
        console.print(
            "nothing to resubmit: no failed job" + ("" if args.missing else " (--missing adds unfinished ones)"),
            highlight=False,
        )
    else:
        console.print(f"resubmitted as cluster(s) {', '.join(result.clusters)}", highlight=False)
    return EXIT_OK


CHECK_PROBLEMS = ("missing", "unreadable", "unexpected", "overlapping", "other_configuration")


def command_check(args: argparse.Namespace, console: Console) -> int:
    from rich.table import Table

    from coffea_dispatch.ledger import check_dump

    checks = check_dump(args.dump)
    table = Table(title=f"{args.dump}: every input chunk must have exactly one complete output")
    for column in ("sample", "chunks", "complete", *(kind.replace("_", " ") for kind in CHECK_PROBLEMS)):
        table.add_column(column, justify="left" if column == "sample" else "right")
    for c in checks.values():
        table.add_row(c.sample, str(c.planned), str(c.complete), *(str(len(getattr(c, k))) for k in CHECK_PROBLEMS))
    console.print(table)
    for c in checks.values():
        for what in c.repaired:
            console.print(f"[yellow]repaired[/] ({c.sample}) {what}", highlight=False, soft_wrap=True)
        for kind in CHECK_PROBLEMS:
            for what in getattr(c, kind):
                console.print(f"[red]{kind.replace('_', ' ')}[/] ({c.sample}) {what}", highlight=False, soft_wrap=True)
    if all(c.ok for c in checks.values()):
        console.print("complete: every chunk has exactly one readable output", highlight=False)
        return EXIT_OK
    console.print(_check_advice(checks), highlight=False, soft_wrap=True)
    return EXIT_PROCESSOR_FAILED


def _check_advice(checks) -> str:
    """The one command that repairs what check found."""
    if any(c.other_configuration for c in checks.values()):
        return "chunks of another configuration are mixed in: rerun the command that made this dump with --overwrite"
    same = "rerun the same command"
    if checks.chunk is not None:
        same += f" (with --chunk {checks.chunk}, the dump's chunking)"
    if any(c.overlapping for c in checks.values()):
        return f"{same}: it removes the chunks of another chunking and redoes what is missing or damaged"
    return f"{same} to redo what is missing or damaged (resume)"


COMMANDS = {
    "check": command_check,
    "run": command_run,
    "make-sample": command_make_sample,
    "demo": command_demo,
    "status": command_status,
    "merge": command_merge,
    "resubmit": command_resubmit,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return _run_guarded(COMMANDS[args.command], args)


def run_analysis_main(argv: Sequence[str] | None = None) -> int:
    """`coffea-dispatch run ...` with HiggsDNA's run_analysis.py arguments (no `run` word): for Python callers.

    No `run_analysis.py` script is installed: it would overwrite HiggsDNA's (or be overwritten by it)."""
    return main(["run", *(argv or [])])


def _exit_now(code: int) -> None:
    """Leave without tearing the interpreter down: every atexit handler runs and every stream is flushed,
    but freeing numba/LLVM and module state (about 0.2 s) is skipped. Console scripts only."""
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def console_main() -> None:
    _exit_now(main())


if __name__ == "__main__":
    console_main()
