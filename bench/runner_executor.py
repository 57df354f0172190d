"""What a coffea Runner user gains by changing one line: Runner + coffea_dispatch.executor("futures", workers=2)
against Runner + coffea's FuturesExecutor(workers=2), on the throughput cases (bench/throughput.py).

Each contender is the same fresh command (bench/coffea_runner.py: interpreter start, imports, preprocessing,
processing, exit), run --repeat times after one warm-up; the table gives the median wall time.

Usage: python bench/runner_executor.py [--events 1000000] [--repeat 3] [--scaling 4 10] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from throughput import WIDTHS, copies, sample_file, timed

HERE = Path(__file__).resolve().parent
EXECUTORS = {"coffea FuturesExecutor(2)": "coffea", 'coffea_dispatch.executor("futures", workers=2)': "dispatch"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--scaling", type=int, nargs="*", default=[4, 10])
    parser.add_argument("--data", default=str(Path(tempfile.gettempdir()) / "coffea-dispatch-bench"))
    args = parser.parse_args()
    data = Path(args.data)
    data.mkdir(parents=True, exist_ok=True)
    cases = [(width, branches, 1) for width, branches in WIDTHS.items()]
    cases += [(f"{n} x ~90 branches", WIDTHS["~90 branches"], n) for n in args.scaling]
    print("| file | Runner executor | median wall [s] | events/s | speed-up |\n|---|---|---:|---:|---:|")
    for case_name, branches, n_files in cases:
        root_file = sample_file(data, args.events, branches)
        with tempfile.TemporaryDirectory() as tmp:
            inputs = [root_file] if n_files == 1 else copies(root_file, n_files, Path(tmp))
            samples = Path(tmp) / "samples.json"
            samples.write_text(json.dumps({"Bench": [str(f) for f in inputs]}))
            seconds = {}
            for label, which in EXECUTORS.items():
                command = [sys.executable, str(HERE / "coffea_runner.py"), str(samples), str(Path(tmp) / which), "2"]
                command += ["500000", which]
                timed(command)  # warm the page cache; not counted
                seconds[label] = statistics.median(timed(command) for _ in range(args.repeat))
            baseline = seconds["coffea FuturesExecutor(2)"]
            for label, wall in seconds.items():
                rate = args.events * n_files / wall
                print(f"| {case_name} | {label} | {wall:.2f} | {rate:,.0f} | {baseline / wall:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
