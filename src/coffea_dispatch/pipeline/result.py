"""What a run returns (`RunResult`, per sample a `SampleSummary`; `ValidationResult` for --validate), built from
the executors' results whatever the executor, and how it ends: the accumulator saved, the mass plot drawn.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coffea_dispatch.batch.submission import Submission
from coffea_dispatch.dump.completeness import (
    Completeness,
    percent,
)
from coffea_dispatch.errors import OutputError
from coffea_dispatch.higgsdna.plot import plot_mass
from coffea_dispatch.inputs.analysis import Analysis
from coffea_dispatch.inputs.planning import (
    Plan,
)
from coffea_dispatch.options import RunOptions
from coffea_dispatch.output import save_accumulator
from coffea_dispatch.pipeline.chunk import (
    BAD_FILES_KEY,
    STATS_KEY,
)


@dataclass
class SampleSummary:
    sample: str
    files: int = 0
    chunks: int = 0
    events: int = 0
    candidates: int | None = None
    bad_files: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    served: dict[str, list[str]] = field(default_factory=dict)  # a file with replicas -> the replicas read


@dataclass
class RunResult:
    """What a run produced: the processor's accumulator and the numbers for the summary table."""

    analysis: Analysis
    executor: str
    workers: int
    accumulator: Any
    samples: dict[str, SampleSummary]
    wall_seconds: float
    notes: list[str] = field(default_factory=list)
    saved: Path | None = None
    plot: Path | None = None
    failed_chunks: list = field(default_factory=list)  # executors.diagnose.Diagnosis, one per killer chunk
    retries: int = 0
    resumed_chunks: int = 0  # complete in --dump from an earlier run: not processed again
    resumed: dict[str, SampleSummary] = field(default_factory=dict)  # per sample, what those chunks hold
    submission: Submission | None = None  # a job array's folder
    waited: bool = True  # False: a job array submitted and not waited for (`merge` or `--wait` collects it)
    completeness: Completeness = field(default_factory=Completeness)  # per sample: how much of its inputs was read

    @property
    def events(self) -> int:
        return sum(s.events for s in self.samples.values())

    @property
    def bad_files(self) -> dict[str, dict[str, str]]:
        return {name: s.bad_files for name, s in self.samples.items() if s.bad_files}

    @property
    def resumed_events(self) -> int:
        """Events the dump held from an earlier run: in the accumulator, not processed by this one."""
        return sum(s.events for s in self.resumed.values())

    @property
    def processed_events(self) -> int:
        """Events this run processed itself: what its rates count (a resumed run processed only the rest)."""
        return self.events - self.resumed_events

    def processed(self, sample: str) -> SampleSummary:
        """What this run did itself for `sample`: its summary less the chunks resumed from the dump."""
        summary, earlier = self.samples[sample], self.resumed.get(sample, SampleSummary(sample))
        return SampleSummary(
            sample,
            files=summary.files,
            chunks=summary.chunks - earlier.chunks,
            events=summary.events - earlier.events,
            seconds=max(summary.seconds - earlier.seconds, 0.0),
        )

    def _read_share(self, sample: str) -> str:
        reading = self.completeness.get(sample)
        return percent(reading.fraction() if reading is not None else None)

    def _repr_html_(self) -> str:
        """The summary table in Jupyter (the command line prints the same numbers with rich)."""
        columns = ("sample", "files", "chunks", "events", "candidates", "bad files", "read")
        head = "".join(f"<th>{h}</th>" for h in columns)
        rows = "".join(
            f"<tr><td>{html.escape(s.sample)}</td><td>{s.files}</td><td>{s.chunks}</td><td>{s.events:,}</td>"
            f"<td>{'' if s.candidates is None else s.candidates}</td><td>{len(s.bad_files)}</td>"
            f"<td>{self._read_share(s.sample)}</td></tr>"
            for s in self.samples.values()
        )
        caption = f"{self.events:,} events on {html.escape(self.executor)} ({self.workers} worker(s)) in "
        caption += f"{self.wall_seconds:.1f} s"
        notes = "".join(f"<li>{html.escape(note)}</li>" for note in self.notes)
        return f"<table><caption>{caption}</caption><tr>{head}</tr>{rows}</table>" + (
            f"<ul>{notes}</ul>" if notes else ""
        )


def summaries(plan: Plan, collected: dict[str, Any], output: Any) -> dict[str, SampleSummary]:
    stats = collected.get(STATS_KEY, {})
    bad = collected.get(BAD_FILES_KEY, {})
    summaries = {}
    for sample, files in plan.files.items():
        s = stats.get(sample, {})
        bad_files = {**plan.bad_files.get(sample, {}), **dict(sorted(bad.get(sample, set())))}
        summary = SampleSummary(
            sample,
            files=len(set(files) - set(bad_files)),
            chunks=s.get("chunks", 0),
            events=s.get("events", 0),
            seconds=s.get("seconds", 0.0),
            bad_files=bad_files,
        )
        for filename, replica in sorted(s.get("served", set())):
            summary.served.setdefault(filename, []).append(replica)
        summary.candidates = candidates_in(output, sample)
        summaries[sample] = summary
    return summaries


def resumed_summaries(resumed: list[dict[str, Any]]) -> dict[str, SampleSummary]:
    """Per sample, the chunks, events and worker seconds of the chunks resumed from the dump (their saved
    results): the summary then tells what was taken from the dump from what this run processed."""
    found: dict[str, SampleSummary] = {}
    for result in resumed:
        for sample, stats in (result.get(STATS_KEY) or {}).items():
            summary = found.setdefault(sample, SampleSummary(sample))
            summary.chunks += int(stats.get("chunks", 0))
            summary.events += int(stats.get("events", 0))
            summary.seconds += float(stats.get("seconds", 0.0))
    return found


def candidates_in(output: Any, sample: str) -> int | None:
    """The base workflow's candidate count for the summary; None for processors that do not count them."""
    if isinstance(output, dict) and isinstance(output.get(sample), dict) and "candidates" in output[sample]:
        return int(output[sample]["candidates"])
    return None


def _save_accumulator(output: Any, options: RunOptions) -> Path | None:
    target = options.save or options.output
    if target is None:
        return None
    return save_accumulator(output, target)


def save_and_plot(run: RunResult, options: RunOptions) -> None:
    """The end of every run: the accumulator to -o/--save, the mass plot next to the outputs."""
    try:
        run.saved = _save_accumulator(run.accumulator, options)
        if plot_wanted(options):
            order = list(run.analysis.samples)  # colours and legend follow the sample JSON, run after run
            run.plot = plot_mass(run.accumulator, options.dump, run.saved, run.analysis.year, order)
    except OutputError as exc:  # a full disk at the very end: the chunks are safe, say so
        if options.dump:
            exc.message += "; every chunk is recorded in --dump, so the rerun only writes this"
        raise


def plot_wanted(options: RunOptions) -> bool:
    return options.plot and any((options.dump, options.save, options.output))


@dataclass
class ValidationResult:
    analysis: Analysis
    plan: Plan

    @property
    def bad_files(self) -> dict[str, dict[str, str]]:
        return {sample: files for sample, files in self.plan.bad_files.items() if files}
