"""A resumed run says what it took from the dump and what it processed now; its rates count processed events
only (issue 36: a resumed run reported 600,000 events at 176k-395k events/s though nothing was processed)."""

from __future__ import annotations

import io

from rich.console import Console

from coffea_dispatch.pipeline.chunk import STATS_KEY
from coffea_dispatch.pipeline.report import print_run
from coffea_dispatch.pipeline.result import RunResult, SampleSummary, resumed_summaries


def test_a_resumed_run_counts_only_what_it_processed_in_its_rates():
    def chunk(sample: str, events: int, seconds: float) -> dict:
        return {STATS_KEY: {sample: {"chunks": 1, "events": events, "seconds": seconds}}}

    resumed = resumed_summaries([chunk("A", 100, 5.0), chunk("A", 100, 5.0), chunk("B", 80, 4.0)])
    assert resumed["A"] == SampleSummary("A", chunks=2, events=200, seconds=10.0)
    samples = {
        "A": SampleSummary("A", files=1, chunks=3, events=300, seconds=12.0),  # one chunk processed now, in 2 s
        "B": SampleSummary("B", files=1, chunks=1, events=80, seconds=4.0),  # all of it from the dump
    }
    analysis = type("Named", (), {"name": "an"})()
    run = RunResult(analysis, "futures", 1, {}, samples, wall_seconds=4.0, resumed_chunks=3, resumed=resumed)
    console = Console(file=io.StringIO(), width=200)
    print_run(run, console)
    text = console.file.getvalue()
    assert "resumed: 3 chunk(s), 280 events taken from the dump" in text
    assert "processed now: 1 chunk(s), 100 events" in text
    rows = {line.split("│")[1].strip(): line.split("│") for line in text.splitlines() if "│" in line}
    assert rows["A"][-2].strip() == "50"  # 100 events processed in 2 s of worker time, not 300 in 12 s
    assert rows["B"][-2].strip() == "-"  # nothing processed: no rate
    assert rows["total (wall)"][-2].strip() == "25"  # 100 processed events in 4 s of wall time, not 380
