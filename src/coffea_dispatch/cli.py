"""Command line: `coffea-dispatch run|make-sample|demo|status|...`; `run` takes HiggsDNA's run_analysis.py options.

Only argument parsing and printing live here; the work is done by `coffea_dispatch.pipeline.run` and friends.
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import os
import shlex
import sys
from collections.abc import Sequence

from rich.console import Console

from coffea_dispatch import signals
from coffea_dispatch.arguments import (
    add_run_arguments,
    one_line_errors,
    refuse_unrecognized,
    run_options_from,
    submit_options_from,
)
from coffea_dispatch.errors import DispatchError
from coffea_dispatch.options import RunOptions, SubmitOptions
from coffea_dispatch.signals import stopping_signals_interrupt

EXIT_OK = 0
EXIT_PROCESSOR_FAILED = 1


def command_run(args: argparse.Namespace, console: Console) -> int:
    options, submit = run_options_from(args), submit_options_from(args)  # checked before a job record is written
    if args.job_record:
        from coffea_dispatch.batch.job import recording

        with recording(args.job_record) as record:
            code = _run_or_validate(options, submit, console, record)
            record.exit_code = code
            return code
    return _run_or_validate(options, submit, console)


def _run_or_validate(options: RunOptions, submit: SubmitOptions, console: Console, record=None) -> int:
    from coffea_dispatch.inputs.analysis import unknown_keys_of
    from coffea_dispatch.pipeline import report
    from coffea_dispatch.pipeline import run as pipeline

    options.announce = lambda line: console.print(line, highlight=False, soft_wrap=True)
    if options.validate:
        result = pipeline.validate_inputs(options)
        for line in unknown_keys_of(options.json_analysis):  # a run says them with its notes
            console.print(f"note: {line}", highlight=False, markup=False, soft_wrap=True)
        report.print_validation(result, console)
        return DispatchError.exit_code if result.bad_files else EXIT_OK
    outcome = pipeline.run_analysis(options, submit)
    if not outcome.waited:  # a job array submitted: `status`, `merge` or `--wait` follow it
        return EXIT_OK
    report.print_run(outcome, console)
    if record is not None:
        record.events = outcome.events
        record.chunks = sum(s.chunks for s in outcome.samples.values())
        record.bad_files = outcome.bad_files
        record.completeness = outcome.completeness.to_json()
    return EXIT_PROCESSOR_FAILED if outcome.failed_chunks else EXIT_OK


def command_make_sample(args: argparse.Namespace, console: Console) -> int:
    from coffea_dispatch.synthetic.generator import SampleSpec, make_sample

    spec = SampleSpec(
        events=args.events, seed=args.seed, signal_fraction=args.signal_fraction, extra_branches=args.extra_branches
    )
    path = make_sample(args.output, spec)
    console.print(f"wrote {path} ({args.events:,} events, seed {args.seed})", highlight=False)
    return EXIT_OK


def command_demo(args: argparse.Namespace, console: Console) -> int:
    from coffea_dispatch.pipeline import report
    from coffea_dispatch.synthetic.demo import demo_command, demo_options, run_demo

    outcome = run_demo(args.folder, events=args.events, executor=args.executor, workers=args.workers)
    report.print_run(outcome, console)
    console.print(f"demo files in {args.folder}: analysis.json, samples.json, data/, output/", highlight=False)
    options = demo_options(args.folder, args.executor, args.workers)
    for line in demo_next_steps(shlex.join(demo_command(options)), options.dump, outcome.plot):
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    return EXIT_OK


def demo_next_steps(command: str, dump: str | None, plot) -> list[str]:
    """What the demo ran, as the line that runs it again (it resumes: nothing is processed twice), and what a
    newcomer tries next."""
    dump_arg = shlex.quote(str(dump))
    lines = [
        f"ran: {command}",
        "next:",
        f"  run it again: the same line resumes from {dump_arg} (nothing is processed twice)",
        f"  coffea-dispatch check {dump_arg}: does every input chunk have exactly one output?",
        "  coffea-dispatch status <submission folder>: follows the jobs of a run on a batch system's job arrays "
        "(--executor: `coffea-dispatch run --help` lists them)",
    ]
    if plot:
        lines.append(f"  the diphoton mass plot: {plot}")
    lines.append(f"  the docs: {DOCS}; `coffea-dispatch run --help` lists every option")
    return lines


DOCS = "docs/getting-started.md in the repository (`make docs` builds the site)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coffea-dispatch", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action=VersionAction, help="print coffea-dispatch's version and exit")
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
    _add_submission_commands(commands)
    _add_check_command(commands)
    add_samples_arguments(
        commands.add_parser("samples", help="write a sample JSON from DAS datasets, XRootD and local folders")
    )
    demo = commands.add_parser("demo", help="generate a small dataset, run the base workflow, print the summary")
    demo.add_argument("folder", nargs="?", default="demo")
    demo.add_argument("--events", type=int, default=200_000, help="events per generated file")
    demo.add_argument("--executor", default="futures")
    demo.add_argument("-j", "--workers", type=int, default=None)
    for command in (parser, *commands.choices.values()):
        one_line_errors(command)
    return parser


class VersionAction(argparse.Action):
    """`--version`: `coffea-dispatch <version>`, the version read only when asked (the metadata costs ms)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        sys.stdout.write(f"coffea-dispatch {package_version()}\n")  # stdout, as argparse's own version action
        parser.exit(0)


def package_version() -> str:
    """The installed version; a source tree on sys.path without installing says how to get one."""
    import coffea_dispatch

    found = coffea_dispatch.__version__
    if found == coffea_dispatch.UNKNOWN_VERSION:
        return f"{found} (not installed: `pip install -e .` in the clone)"
    return found


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line parsed; an option no command has is refused with the one meant (`--exectuor`)."""
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        refuse_unrecognized(_subparser(parser, args.command), extras)
    return args


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[command]
    return parser


def _add_submission_commands(commands) -> None:
    """What follows a job array's submission folder: status, resubmit, submit, cancel, merge."""
    status = commands.add_parser("status", help="what every job of a batch submission did")
    status.add_argument("folder", help="the submission folder (.higgs_dna_<executor>/<analysis>_<time>)")
    _switch(
        status, "--fetch-logs", "first bring back the logs the batch system kept elsewhere (spooled EOS submissions)"
    )
    again = commands.add_parser("resubmit", help="run the failed jobs of a batch submission again")
    again.add_argument("folder", help="the submission folder")
    _switch(again, "--missing", "also the jobs that never recorded an end")
    _switch(
        again,
        "--force",
        "also rerun jobs a rerun cannot fix as they are (processor exception, unreadable local input, "
        "--max-memory or the longest queue reached), e.g. after fixing the code",
    )
    submit = commands.add_parser("submit", help="submit a submission written where the submit command was missing")
    submit.add_argument("folder", help="the submission folder (its submit.sh runs this)")
    cancel = commands.add_parser("cancel", help="remove the jobs of a batch submission from the queue")
    cancel.add_argument("folder", help="the submission folder")
    cancel.add_argument("jobs", nargs="*", help="only these jobs (<sample>-<i>); default: every job")
    merge = commands.add_parser("merge", help="one parquet per sample under <dump>/merged/, normalisation summed")
    merge.add_argument("folder", help="a submission folder (its jobs must be done) or a --dump folder")
    _switch(merge, "--allow-incomplete", "merge a submission even when some jobs failed or have not finished")


def _switch(parser: argparse.ArgumentParser, flag: str, help: str) -> None:
    """An option that is off unless given, stored under its name (`--allow-incomplete`: `allow_incomplete`)."""
    parser.add_argument(flag, dest=flag.removeprefix("--").replace("-", "_"), action="store_true", help=help)


def _add_check_command(commands) -> None:
    check = commands.add_parser("check", help="does every input chunk of a --dump have exactly one complete output?")
    check.add_argument("dump", help="the --dump folder of a run, or a job array's submission folder")
    check.add_argument(
        "--unprocessed",
        metavar="OUT.json",
        help="write what is left to run as a sample JSON (HiggsDNA's format; a file read in part with its entry "
        "ranges): a run with it into the same dump completes it",
    )
    check.add_argument(
        "--format",
        choices=["higgsdna", "coffea"],
        default="higgsdna",
        help="--unprocessed's form: higgsdna (default), or coffea (coffea's preprocessed fileset: each file's entries "
        "left as its steps, cut at the run's chunk size; coffea's apply_to_fileset reads it as written)",
    )
    check.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 when any sample is not read completely (without it, only a damaged dump exits 1: an "
        "interrupted run's chunks not written yet are incompleteness)",
    )
    check.add_argument(
        "--metadata-cache",
        dest="metadata_cache",
        default=None,
        help="where runs kept what they learned of the inputs (what files not run hold); default: the user's cache",
    )


def add_samples_arguments(parser: argparse.ArgumentParser) -> None:
    """HiggsDNA's fetch_datasets.py options (same names), the form and metadata of coffea's and PocketCoffea's
    filesets, rucio's sites: datasets/arguments.py."""
    from coffea_dispatch.datasets.arguments import add_samples_arguments as add_arguments

    add_arguments(parser)


def command_samples(args: argparse.Namespace, console: Console) -> int:
    from coffea_dispatch.datasets import build_samples
    from coffea_dispatch.datasets.arguments import samples_options
    from coffea_dispatch.datasets.coverage import coverage, coverage_table
    from coffea_dispatch.pipeline import report

    options = samples_options(args)
    result = build_samples(args.input, args.output, overwrite=args.overwrite, dry_run=args.dry_run, options=options)
    fate = "kept in the JSON (--keep-unreadable)" if args.keep_unreadable else "left out of the JSON"
    for sample, path, reason in result.unreadable:
        console.print(f"unreadable ({sample}) {path}: {reason}; {fate}", highlight=False, markup=False, soft_wrap=True)
    for sample, path, reason in result.unanswered:
        said = f"not counted ({sample}) {path}: {reason}; kept in the JSON, events unknown"
        console.print(said, highlight=False, markup=False, soft_wrap=True)
    for note in result.notes:
        console.print(f"note: {note}", highlight=False, markup=False, soft_wrap=True)
    report.print_samples(result, console)
    if args.sites_table:
        console.print(coverage_table(coverage(result.listed)))
    return EXIT_OK


def _run_guarded(function, args: argparse.Namespace) -> int:
    """One line on stderr for user errors; the real traceback only when the user's own code raised."""
    from coffea_dispatch.pipeline.chunk import ProcessorFailure

    console = Console()
    if not console.is_terminal:  # rich assumes 80 columns in a pipe or log file: the table needs more
        console = Console(width=132)
    errors = Console(stderr=True)
    try:
        with stopping_signals_interrupt(), signals.interruptible():  # whatever handler an import installed
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
    from coffea_dispatch.batch.status import refuse_dump, submission_status
    from coffea_dispatch.dump.collect import submission_completeness
    from coffea_dispatch.pipeline import report

    refuse_dump(args.folder)  # a --dump folder: `check` reads it
    if args.fetch_logs:
        from coffea_dispatch.batch.registry import array_backend
        from coffea_dispatch.batch.submission import Submission

        submission = Submission.load(args.folder)
        for line in array_backend(submission.executor).fetch_logs(submission):
            console.print(line, highlight=False, soft_wrap=True)
    submission, statuses, asked = submission_status(args.folder, ask_queue=True)
    report.print_status(submission, statuses, asked, console)
    reading = submission_completeness(submission)  # what the jobs read (a Runner's jobs say it too)
    report.print_completeness(reading, f"{submission.folder.name}: how much of each sample was read", console)
    complete = all(s.failed == 0 and s.unfinished == 0 for s in statuses.values())
    return EXIT_OK if complete else EXIT_PROCESSOR_FAILED


def command_merge(args: argparse.Namespace, console: Console) -> int:
    from coffea_dispatch.dump.collect import merge

    merged = merge(args.folder, allow_incomplete=args.allow_incomplete)
    for m in merged:
        line = f"{m.sample}: {m.files} file(s), {m.rows:,} rows, sum_genw_presel {m.sum_genw:.6g} -> {m.path}"
        if m.accumulator:
            line = f"{m.sample}: the accumulators of {m.files} job(s), summed -> {m.path}"
        console.print(line, highlight=False, soft_wrap=True)
    if not merged:
        console.print("nothing to merge", highlight=False)
    return EXIT_OK


def command_resubmit(args: argparse.Namespace, console: Console) -> int:
    from coffea_dispatch.batch.submit import resubmit

    result = resubmit(args.folder, missing=args.missing, force=args.force)
    for line in result.decision_lines():
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    kept = [d.job for d in result.decisions if not d.rerun]
    if kept:  # a rerun as they are cannot fix them: say which option reruns them anyway
        console.print(
            f"not resubmitted: {', '.join(kept)} (`coffea-dispatch resubmit --force {args.folder}` reruns them "
            "as they are, e.g. after fixing the code)",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    if result.clusters:
        console.print(f"resubmitted as cluster(s) {', '.join(result.clusters)}", highlight=False)
    elif not result.decisions:
        console.print(
            "nothing to resubmit: no failed job" + ("" if args.missing else " (--missing adds unfinished ones)"),
            highlight=False,
        )
    return EXIT_OK


def command_submit(args: argparse.Namespace, console: Console) -> int:
    from coffea_dispatch.batch.submit import submit_written

    result = submit_written(args.folder)
    if not result.clusters:
        console.print("nothing to submit: every job of this submission was submitted", highlight=False)
    else:
        console.print(f"submitted as cluster(s) {', '.join(result.clusters)}", highlight=False)
    return EXIT_OK


def command_cancel(args: argparse.Namespace, console: Console) -> int:
    from coffea_dispatch.batch.submit import cancel

    said = cancel(args.folder, jobs=args.jobs or None)
    for line in said or ["nothing to cancel: no job of this submission was submitted"]:
        console.print(line, highlight=False, soft_wrap=True)
    return EXIT_OK


def command_check(args: argparse.Namespace, console: Console) -> int:
    from coffea_dispatch.api import completeness_of
    from coffea_dispatch.batch.submission import MANIFEST
    from coffea_dispatch.dump.check import check_dump
    from coffea_dispatch.dump.collect import folder_chunk_size
    from coffea_dispatch.dump.completeness import unprocessed_json
    from coffea_dispatch.pipeline import report

    intact, written_all = True, True
    if not os.path.exists(os.path.join(args.dump, MANIFEST)):  # a dump: its integrity first
        checks = check_dump(args.dump)
        report.print_check(args.dump, checks, console)
        intact = not any(c.damaged for c in checks.values())  # chunks not written yet: incomplete, not damaged
        written_all = all(c.ok for c in checks.values())
    reading = completeness_of(args.dump, args.metadata_cache)
    report.print_completeness(reading, f"{args.dump}: how much of each sample was read", console)
    if args.unprocessed and not reading.unprocessed():  # nothing to write: an existing file is no error
        console.print(f"nothing left to run: {args.unprocessed} not written", highlight=False, soft_wrap=True)
    elif args.unprocessed:
        chunk = folder_chunk_size(args.dump)  # what is left is cut as the run cut
        written = unprocessed_json(reading, args.unprocessed, format=args.format, chunksize=chunk)  # never replaces
        console.print(f"what is left to run: {written}", highlight=False, soft_wrap=True)
    complete = (reading.complete and written_all) or not args.strict
    return EXIT_OK if intact and complete else EXIT_PROCESSOR_FAILED


COMMANDS = {
    "check": command_check,
    "run": command_run,
    "make-sample": command_make_sample,
    "demo": command_demo,
    "status": command_status,
    "merge": command_merge,
    "resubmit": command_resubmit,
    "cancel": command_cancel,
    "submit": command_submit,
    "samples": command_samples,
}


# what each command imports before it starts (coffea for `run`: most of a second), while signals are held
COMMAND_MODULES = {
    "run": ("coffea_dispatch.pipeline.run", "coffea_dispatch.pipeline.report", "coffea_dispatch.executors"),
    "check": ("coffea_dispatch.dump.ledger", "coffea_dispatch.pipeline.report", "coffea_dispatch.api"),
    "demo": ("coffea_dispatch.synthetic.demo", "coffea_dispatch.pipeline.report"),
    "make-sample": ("coffea_dispatch.synthetic.generator",),
    "samples": ("coffea_dispatch.datasets", "coffea_dispatch.pipeline.report"),
}
BATCH_MODULES = ("coffea_dispatch.batch", "coffea_dispatch.pipeline.report")


def main(argv: Sequence[str] | None = None, starting: signals.HeldSignals | None = None) -> int:
    """Parse, import what the command needs, then run it. Stopping signals that arrive before it runs (held
    by `starting`, or from here on) end it with one line too."""
    starting = starting or signals.HeldSignals()
    try:
        args = parse(argv)
        for module in ("coffea_dispatch.pipeline.chunk", *COMMAND_MODULES.get(args.command, BATCH_MODULES)):
            importlib.import_module(module)
        starting.release()
    except KeyboardInterrupt as interrupt:
        Console(stderr=True).print(signals.describe(interrupt), highlight=False)
        return signals.exit_code(interrupt)
    finally:
        starting.restore()
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


def console_main(starting: signals.HeldSignals | None = None) -> None:
    _exit_now(main(starting=starting))


if __name__ == "__main__":
    console_main()
