"""What the user sees at the end of a run: the per-sample table and the diphoton mass plot."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

PLOT_NAME = "diphoton_mass.png"


def _rate(events: int, seconds: float) -> str:
    return f"{events / seconds:,.0f}" if seconds > 0 else "-"


def summary_table(run) -> Table:
    """Per sample: files, chunks, events, candidates, bad files skipped, time and rate; then the total."""
    table = Table(title=f"coffea-dispatch: {run.analysis.name} ({run.executor}, {run.workers} worker(s))")
    for column in ("sample", "files", "chunks", "events", "candidates", "bad files", "time [s]", "events/s"):
        table.add_column(column, justify="left" if column == "sample" else "right")
    for s in run.samples.values():
        table.add_row(
            s.sample,
            str(s.files),
            str(s.chunks),
            f"{s.events:,}",
            "-" if s.candidates is None else f"{s.candidates:,}",
            str(len(s.bad_files)),
            f"{s.seconds:.2f}",
            _rate(s.events, s.seconds),
        )
    candidates = [s.candidates for s in run.samples.values() if s.candidates is not None]
    table.add_section()
    table.add_row(
        "total (wall)",
        str(sum(s.files for s in run.samples.values())),
        str(sum(s.chunks for s in run.samples.values())),
        f"{run.events:,}",
        f"{sum(candidates):,}" if candidates else "-",
        str(sum(len(s.bad_files) for s in run.samples.values())),
        f"{run.wall_seconds:.2f}",
        _rate(run.events, run.wall_seconds),
    )
    return table


def print_run(run, console: Console) -> None:
    for note in run.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    console.print(summary_table(run))
    console.print("time per sample is summed over its chunks (worker time); the total is wall time", style="dim")
    for sample, files in run.bad_files.items():
        for filename, reason in files.items():
            console.print(f"[yellow]skipped[/] ({sample}) {filename}: {reason}", highlight=False, soft_wrap=True)
    for sample in run.samples.values():
        for filename, replicas in sample.served.items():
            console.print(f"replica ({sample.sample}) {filename} read from {', '.join(replicas)}", highlight=False)
    if run.resumed_chunks:
        console.print(
            f"resumed: {run.resumed_chunks} chunk(s) were already complete in the dump and were not processed again"
            " (--overwrite redoes them)",
            highlight=False,
        )
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


def _mass_histograms(output: Any) -> dict[str, Any]:
    if not isinstance(output, dict):
        return {}
    return {
        sample: content["mass"]
        for sample, content in output.items()
        if isinstance(content, dict) and hasattr(content.get("mass"), "axes")
    }


MASS_LABEL = r"$m_{\gamma\gamma}$ [GeV]"


def _import_plotting():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    return Figure, FigureCanvasAgg


def _warm_plotting() -> None:
    """Import matplotlib and draw a throwaway figure: fonts and mathtext load on the first draw."""
    import io

    figure_class, canvas_class = _import_plotting()
    figure = figure_class(figsize=(1, 1))
    canvas_class(figure)
    figure.subplots().set_xlabel(MASS_LABEL)
    figure.savefig(io.BytesIO(), format="png", dpi=10)


def prefetch_plotting() -> threading.Thread:
    """Get matplotlib ready in the background while workers process chunks (the main process is idle then).

    Call it only once no more processes will be forked: forking while a thread imports can deadlock.
    """
    thread = threading.Thread(target=_warm_plotting, name="prefetch-matplotlib", daemon=True)
    thread.start()
    return thread


def plot_mass(output: Any, dump: str | None, saved: Path | None) -> Path | None:
    """A PNG of the diphoton mass per sample, next to the parquet dump (else next to the saved accumulator)."""
    histograms = _mass_histograms(output)
    folder = Path(dump) if dump else (saved.parent if saved else None)
    if not histograms or folder is None:
        return None
    figure_class, canvas_class = _import_plotting()
    figure = figure_class(figsize=(7, 5))
    canvas_class(figure)
    axes = figure.subplots()
    for sample, histogram in histograms.items():
        axes.stairs(histogram.values(), histogram.axes[0].edges, label=sample)
    axes.set_xlabel(MASS_LABEL)
    axes.set_ylabel("weighted candidates / bin")
    axes.set_title("Diphoton mass after preselection")
    axes.legend()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / PLOT_NAME
    figure.savefig(path, dpi=100)
    return path
