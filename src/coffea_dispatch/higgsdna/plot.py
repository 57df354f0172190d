"""The diphoton mass plot every run draws next to its outputs (CMS style, mplhep), and getting matplotlib ready
in the background while the workers process chunks. The run pipeline draws it; the command line only prints.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from coffea_dispatch.output import atomic_writer

PLOT_NAME = "diphoton_mass.png"


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
    import mplhep
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    return Figure, FigureCanvasAgg, mplhep


def _warm_plotting() -> None:
    """Import matplotlib and mplhep and draw a throwaway figure: fonts and mathtext load on the first draw."""
    import io

    figure_class, canvas_class, _ = _import_plotting()
    figure = figure_class(figsize=(1, 1))
    canvas_class(figure)
    figure.subplots().set_xlabel(MASS_LABEL)
    figure.savefig(io.BytesIO(), format="png", dpi=10)


_prefetching: list[threading.Thread] = []


def _finish_prefetch_before_fork() -> None:
    """A child forked while a thread imports inherits that import's locks, held by a thread it does not have:
    a fork (a `futures` worker started on demand) waits for the prefetch instead (under a second)."""
    for thread in _prefetching:
        if thread is not threading.current_thread():
            thread.join()


os.register_at_fork(before=_finish_prefetch_before_fork)


def prefetch_plotting() -> threading.Thread:
    """Get matplotlib ready in the background while workers process chunks (the main process is idle then)."""
    thread = threading.Thread(target=_warm_plotting, name="prefetch-matplotlib", daemon=True)
    _prefetching.append(thread)
    thread.start()
    return thread


def plot_mass(
    output: Any, dump: str | None, saved: Path | None, year: Any = None, order: Sequence[str] = ()
) -> Path | None:
    """A PNG of the diphoton mass per sample in CMS style (mplhep), next to the parquet dump (else next to the
    saved accumulator). Labelled as data only when a sample is named Data*, and with the analysis JSON's
    year when every sample has the same; no luminosity is claimed (the accumulator does not know it).
    Samples are drawn, coloured and listed in `order` (the sample JSON's): the accumulator's order is that
    in which chunks finished, and a sample's colour would change between two runs of the same analysis."""
    histograms = in_order(_mass_histograms(output), order)
    folder = Path(dump) if dump else (saved.parent if saved else None)
    if not histograms or folder is None:
        return None
    figure_class, canvas_class, hep = _import_plotting()
    import matplotlib

    with matplotlib.rc_context(hep.style.CMS):
        figure = figure_class()
        canvas_class(figure)
        axes = figure.subplots()
        for index, (sample, histogram) in enumerate(histograms.items()):
            edges = histogram.axes[0].edges
            hep.histplot(histogram.values(), edges, ax=axes, label=sample, histtype="step", color=f"C{index}")
        edges = next(iter(histograms.values())).axes[0].edges
        axes.set_xlim(edges[0], edges[-1])
        axes.set_xlabel(MASS_LABEL)
        axes.set_ylabel("Weighted candidates / bin")
        data = any(sample.lower().startswith("data") for sample in histograms)
        hep.cms.label("Preliminary", data=data, ax=axes, rlabel=_common_year(year, histograms) or "")
        axes.legend(title="after preselection")
        path = folder / PLOT_NAME
        with atomic_writer(path) as sink:  # a full disk: no partial PNG, and OutputError's one line
            figure.savefig(sink, format="png", dpi=100)
    return path


def in_order(histograms: dict[str, Any], order: Sequence[str]) -> dict[str, Any]:
    """The histograms in the samples' order; samples `order` does not name after them, by name."""
    rank = {sample: position for position, sample in enumerate(order)}
    return dict(sorted(histograms.items(), key=lambda item: (rank.get(item[0], len(rank)), item[0])))


def _common_year(year: Any, samples) -> str | None:
    """HiggsDNA gives the eras of each sample ({sample: ["2022postEE"]}, or a single string); when every sample
    drawn has the same, they label the plot (a sample without one leaves it off: the label would claim it)."""
    if isinstance(year, dict):
        years = {_eras(year[s]) if s in year else None for s in samples}
        return years.pop() if len(years) == 1 else None
    return _eras(year) if year else None


def _eras(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(str(era) for era in dict.fromkeys(value))
    return str(value)
