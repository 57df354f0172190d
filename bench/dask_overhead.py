"""Dask overhead: `coffea-dispatch run --executor dask/local -s 2` against coffea's Runner + DaskExecutor on a
LocalCluster used directly (bench/coffea_dask_runner.py), same processor, whole commands, median of 3.

Two measurements: time per chunk with many small chunks (the per-chunk overhead), and events/s on the 1M-event
files of bench/throughput.py (90 and 1,500 branches, default --chunk 500000).

Usage: python bench/dask_overhead.py [--repeat 3] [--small-chunk 10000] [--data DIR]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from throughput import BIN, HERE, WIDTHS, sample_file, timed, write_jsons

EVENTS = 1_000_000


def commands(root_file: Path, work: Path, chunk: int) -> dict[str, list[str]]:
    samples, analysis = write_jsons([root_file], work)
    return {
        "coffea-dispatch dask/local -s 2": [
            str(BIN / "coffea-dispatch"),
            "run",
            "--json-analysis",
            str(analysis),
            "--dump",
            str(work / "dispatch"),
            "--executor",
            "dask/local",
            "-s",
            "2",
            "--chunk",
            str(chunk),
            "--no-progress",
            "--overwrite",  # every timed run does the whole work (the same --dump would resume)
            "--no-plot",
        ],
        "coffea Runner + DaskExecutor (2 workers)": [
            sys.executable,
            str(HERE / "coffea_dask_runner.py"),
            str(samples),
            str(work / "runner"),
            "2",
            str(chunk),
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--small-chunk", type=int, default=10_000)
    parser.add_argument("--data", default=str(Path(tempfile.gettempdir()) / "coffea-dispatch-bench"))
    args = parser.parse_args()
    data = Path(args.data)
    data.mkdir(parents=True, exist_ok=True)
    cases = [
        (f"{name}, --chunk {args.small_chunk}", branches, args.small_chunk)
        for name, branches in WIDTHS.items()
        if branches == 90
    ]
    cases += [(f"{name}, --chunk 500000", branches, 500_000) for name, branches in WIDTHS.items()]
    rows = []
    for case, branches, chunk in cases:
        root_file = sample_file(data, EVENTS, branches)
        with tempfile.TemporaryDirectory() as tmp:
            for name, command in commands(root_file, Path(tmp), chunk).items():
                timed(command)  # warm-up, not counted
                seconds = statistics.median(timed(command) for _ in range(args.repeat))
                n_chunks = max(1, round(EVENTS / chunk))
                rows.append((case, name, seconds, EVENTS / seconds, seconds / n_chunks))
                print(f"{case:32} {name:42} {seconds:6.2f} s", flush=True)
    print("\n| case | command | median wall [s] | events/s | wall per chunk [ms] | vs coffea |")
    print("|---|---|---:|---:|---:|---:|")
    for case, name, seconds, rate, per_chunk in rows:
        coffea = next(r for c, n, _, r, _ in rows if c == case and n.startswith("coffea Runner"))
        print(f"| {case} | {name} | {seconds:.2f} | {rate:,.0f} | {per_chunk * 1000:.0f} | {rate / coffea:.2f}x |")


if __name__ == "__main__":
    main()
