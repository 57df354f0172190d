"""What the user sees at the end of a run, of a submission's status and of `check`: rich tables and lines."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from coffea_dispatch.batch.backend import Cause
from coffea_dispatch.dump.completeness import percent


def _rate(events: int, seconds: float) -> str:
    """Events processed per second; "-" when nothing was processed (a run resumed whole)."""
    return f"{events / seconds:,.0f}" if seconds > 0 and events > 0 else "-"


def summary_table(run) -> Table:
    """Per sample: files, chunks, events (those resumed from the dump apart), candidates, bad files skipped, time
    and rate; then the total. Time and rates count what this run processed, never what it took from the dump."""
    table = Table(title=f"coffea-dispatch: {run.analysis.name} ({run.executor}, {run.workers} worker(s))")
    resumed = bool(run.resumed)
    columns = ["sample", "files", "chunks", "events", *(["resumed"] if resumed else []), "candidates", "bad files"]
    for column in [*columns, "time [s]", "events/s"]:
        table.add_column(column, justify="left" if column == "sample" else "right")
    for s in run.samples.values():
        now = run.processed(s.sample)
        earlier = [f"{s.events - now.events:,}"] if resumed else []
        candidates = "-" if s.candidates is None else f"{s.candidates:,}"
        row = [s.sample, str(s.files), str(s.chunks), f"{s.events:,}", *earlier, candidates, str(len(s.bad_files))]
        table.add_row(*row, f"{now.seconds:.2f}", _rate(now.events, now.seconds))
    candidates = [s.candidates for s in run.samples.values() if s.candidates is not None]
    table.add_section()
    table.add_row(
        "total (wall)",
        str(sum(s.files for s in run.samples.values())),
        str(sum(s.chunks for s in run.samples.values())),
        f"{run.events:,}",
        *([f"{run.resumed_events:,}"] if resumed else []),
        f"{sum(candidates):,}" if candidates else "-",
        str(sum(len(s.bad_files) for s in run.samples.values())),
        f"{run.wall_seconds:.2f}",
        _rate(run.processed_events, run.wall_seconds),
    )
    return table


def resumed_line(run) -> str | None:
    """What a resumed run took from the dump and what it processed now; None when nothing was resumed."""
    if not run.resumed_chunks:
        return None
    taken = f"resumed: {run.resumed_chunks} chunk(s)"
    if run.resumed:
        chunks_now = sum(s.chunks for s in run.samples.values()) - sum(s.chunks for s in run.resumed.values())
        taken += f", {run.resumed_events:,} events taken from the dump (not processed again; --overwrite redoes them)"
        return f"{taken}; processed now: {chunks_now} chunk(s), {run.processed_events:,} events"
    return f"{taken} were already complete in the dump and were not processed again (--overwrite redoes them)"


def print_run(run, console: Console) -> None:
    for note in run.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    console.print(summary_table(run))
    console.print(
        "time per sample is summed over the chunks this run processed (worker time); the total is wall time",
        style="dim",
    )
    for sample, files in run.bad_files.items():
        for filename, reason in files.items():
            console.print(f"[yellow]skipped[/] ({sample}) {filename}: {reason}", highlight=False, soft_wrap=True)
    for sample in run.samples.values():
        for filename, replicas in sample.served.items():
            console.print(f"replica ({sample.sample}) {filename} read from {', '.join(replicas)}", highlight=False)
    resumed = resumed_line(run)
    if resumed:
        console.print(resumed, highlight=False, soft_wrap=True)
    if run.retries:
        console.print(
            f"retries: the remaining chunks were run again {run.retries} time(s) after a KilledWorker", highlight=False
        )
    for diagnosis in run.failed_chunks:
        console.print(f"[red]failed chunk[/] {diagnosis.describe()}", highlight=False, soft_wrap=True)
        if diagnosis.traceback_text:
            console.print(diagnosis.traceback_text, end="", highlight=False, markup=False)
    if run.saved:
        console.print(f"accumulator saved to {run.saved}", highlight=False)
    if run.plot:
        console.print(f"diphoton mass plot: {run.plot}", highlight=False)
    for line in run.completeness.lines():  # last: how much of each sample's weight is missing
        style = "" if run.completeness.complete else "[yellow]"
        console.print(f"{style}{line}", highlight=False, soft_wrap=True)


def _number(value, spec: str = ",") -> str:
    return "?" if value is None else format(value, spec)


def completeness_table(completeness, title: str) -> Table:
    """Per sample: files by status, entries, the inputs' sum of generator weights and that of what was read
    of them (the normalisation), lumi blocks of data; the events' own genWeight sums are in completeness.json."""
    table = Table(title=title)
    columns = ("sample", "files read", "not read", "entries read", "genEventSumw", "of it read", "lumi blocks", "read")
    for column in columns:
        table.add_column(column, justify="left" if column in ("sample", "not read") else "right")
    for reading in completeness.values():
        counts, lumis, simulation = reading.counts(), reading.lumis(), reading.simulation
        not_read = ", ".join(f"{counts[s]} {s}" for s in ("partial", "skipped", "failed", "not run") if counts.get(s))
        table.add_row(
            reading.sample,
            f"{counts.get('read', 0)} / {len(reading.files)}",
            not_read or "-",
            f"{reading.entries_read:,} / {_number(reading.entries)}",
            _number(reading.sumw, ".4g") if simulation else "-",
            _number(reading.sumw_of_inputs_read(), ".4g") if simulation else "-",
            f"{lumis[0]:,} / {lumis[1]:,}" if lumis else "-",
            percent(reading.fraction()),
        )
    return table


def print_completeness(completeness, title: str, console: Console) -> None:
    """The table, the warnings (files whose two sums disagree) and one line per sample not complete."""
    console.print(completeness_table(completeness, title))
    for line in completeness.warnings():
        console.print(f"[yellow]warning:[/] {line}", highlight=False, soft_wrap=True)
    for line in completeness.lines():
        console.print(line, highlight=False, soft_wrap=True)


def print_validation(result, console: Console) -> None:
    table = Table(title=f"coffea-dispatch --validate: {result.analysis.name}")
    for column in ("sample", "good files", "events", "bad files"):
        table.add_column(column, justify="left" if column == "sample" else "right")
    for sample, files in result.plan.files.items():
        bad = result.plan.bad_files.get(sample, {})
        table.add_row(sample, str(len(files)), f"{result.plan.events(sample):,}", str(len(bad)))
    console.print(table)
    for sample, files in result.bad_files.items():
        for filename, reason in files.items():
            console.print(f"[red]bad[/] ({sample}) {filename}: {reason}", highlight=False, soft_wrap=True)


def status_table(submission, statuses: dict, asked: bool) -> Table:
    """Per sample: jobs done, failed and (when the queue could be asked) queued, running or gone; events."""
    table = Table(title=f"{submission.folder.name} ({submission.executor}, {len(submission.jobs)} job(s))")
    columns = ["sample", "done", "failed"]
    columns += ["queued/held", "running", "gone without record"] if asked else ["not finished"]
    for column in [*columns, "events"]:
        table.add_column(column, justify="left" if column == "sample" else "right")
    for s in statuses.values():
        waiting = [s.queued, s.running, s.gone] if asked else [s.unfinished]
        table.add_row(s.sample, *(str(n) for n in [s.done, s.failed, *waiting]), f"{s.events:,}")
    return table


def print_status(submission, statuses: dict, asked: bool, console: Console) -> None:
    """`status`: the table, then every failed or vanished job with the end of its error file."""
    console.print(status_table(submission, statuses, asked))
    if not asked:
        console.print("(the batch queue could not be asked: jobs without a record may be queued, running or gone)")
    for s in statuses.values():
        for failure in [*s.failed_jobs, *s.gone_jobs]:
            _print_failure(failure, console)


def _print_failure(failure, console: Console) -> None:
    """One failed, held or vanished job: why, what resubmission will do, and the end of its error file."""
    job, why = failure.job, failure.why
    if failure.exit_code is not None:
        what = f"[red]failed[/] job {job.name} (exit code {failure.exit_code}; cause: {why.cause.value})"
    elif failure.held:
        what = f"[red]held[/] job {job.name} (cause: {why.cause.value}; {why.evidence})"
    else:
        guess = why.cause.value if why.cause is not Cause.UNKNOWN else "memory, walltime, a cancel or a lost node?"
        what = f"[red]gone[/] job {job.name}: left the queue without a record (cause: {guess}; `resubmit --missing`)"
    console.print(f"{what}: {job.analysis_json}", highlight=False, soft_wrap=True)
    console.print(f"  resubmit: {failure.plan.action}", highlight=False, markup=False, soft_wrap=True)
    if failure.tail:
        console.print(failure.tail, highlight=False, markup=False)


# dump.check.DAMAGE, written out: importing dump.check imports pyarrow.parquet into every run's summary
CHECK_PROBLEMS = ("deleted", "unreadable", "unexpected", "overlapping", "other_configuration")
NOT_WRITTEN_LINES = 10  # files named with their missing entry ranges; past that, one line counts the rest


def print_check(dump, checks, console: Console) -> None:
    """`check`: per sample, chunks planned, complete and not written, and each kind of damage; what is not
    written grouped per input file (a long interrupted run misses thousands of chunks); then what repairs it."""
    table = Table(title=f"{dump}: every input chunk must have exactly one complete output")
    columns = ("sample", "chunks", "complete", "not written", *(kind.replace("_", " ") for kind in CHECK_PROBLEMS))
    for column in columns:
        table.add_column(column, justify="left" if column == "sample" else "right")
    for c in checks.values():
        damage = (str(len(getattr(c, k))) for k in CHECK_PROBLEMS)
        table.add_row(c.sample, str(c.planned), str(c.complete), str(len(c.missing)), *damage)
    console.print(table)
    for c in checks.values():
        for what in c.repaired:
            console.print(f"[yellow]repaired[/] ({c.sample}) {what}", highlight=False, soft_wrap=True)
        for kind in CHECK_PROBLEMS:
            for what in getattr(c, kind):
                console.print(f"[red]{kind.replace('_', ' ')}[/] ({c.sample}) {what}", highlight=False, soft_wrap=True)
    for line in not_written_lines(checks):
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    if all(c.ok for c in checks.values()):
        console.print("complete: every chunk has exactly one readable output", highlight=False)
    else:
        console.print(_check_advice(checks), highlight=False, soft_wrap=True)


def not_written_lines(checks, limit: int = NOT_WRITTEN_LINES) -> list[str]:
    """`(sample) file: entries 0-2000, 4000-10000 not written (3 chunks)` for the first `limit` files, one line
    for the others; then the outputs published without a record (the rerun of their chunk removes them)."""
    files = [(c.sample, name, found) for c in checks.values() for name, found in c.not_written().items()]
    lines = []
    for sample, name, (ranges, chunks) in files[:limit]:
        spans = ", ".join(f"{start}-{stop}" for start, stop in ranges)
        lines.append(f"not written ({sample}) {name}: entries {spans} not written ({_chunks(chunks)})")
    if len(files) > limit:
        rest = files[limit:]
        chunks = sum(found[1] for _, _, found in rest)
        lines.append(
            f"not written: and {len(rest)} more files ({_chunks(chunks)}); check --unprocessed OUT.json lists them all"
        )
    for c in checks.values():
        lines += [f"not recorded ({c.sample}) {o}: its chunk stopped before its record" for o in c.unrecorded]
    return lines


def _chunks(count: int) -> str:
    return f"{count} chunk" if count == 1 else f"{count} chunks"


def _check_advice(checks) -> str:
    """The one command that repairs what check found, or finishes what an interrupted run left."""
    if any(c.other_configuration for c in checks.values()):
        return "chunks of another configuration are mixed in: rerun the command that made this dump with --overwrite"
    same = "rerun the same command"
    if checks.chunk is not None:
        same += f" (with --chunk {checks.chunk}, the dump's chunking)"
    if any(c.overlapping for c in checks.values()):
        return f"{same}: it removes the chunks of another chunking and redoes what is missing or damaged"
    if not any(c.damaged for c in checks.values()):
        chunks = sum(len(c.missing) for c in checks.values())
        left = f"incomplete, not damaged: {chunks} chunk(s) not written yet (not run, interrupted, or failed)"
        return f"{left}; {same} to run them (resume)"
    return f"{same} to redo what is missing or damaged (resume)"


def print_samples(result, console: Console) -> None:
    """`samples`: per dataset line, its files, size and events (where the source says them); what was written."""
    table = Table(title="coffea-dispatch samples")
    for column in ("sample", "dataset or path", "files", "size [GB]", "events", "with replicas"):
        table.add_column(column, justify="left" if column in ("sample", "dataset or path") else "right")
    for listed in result.listed:
        size, events = listed.size, listed.events
        table.add_row(
            listed.request.name,
            listed.request.entry,
            f"{len(listed.files):,}",
            "?" if size is None else f"{size / 1e9:,.3f}",
            "?" if events is None else f"{events:,}",
            f"{sum(1 for f in listed.files if f.replicas):,}",
        )
    console.print(table)
    if result.written is not None:
        extra = " (other replicas beside it, in its .replicas.json)" if result.replicas else ""
        console.print(f"wrote {result.written}{extra}", highlight=False, soft_wrap=True)
    else:
        console.print("--dry-run: nothing written", highlight=False)
