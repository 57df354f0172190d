"""The main process's cost per chunk: peak RSS and CPU time of `coffea-dispatch run` for 1,000 to 100,000 chunks.

One generated file of N events is run with `--chunk 1` (N chunks) through a processor that reads one branch and
counts events, so the workers' cost per chunk is small and the main process's share (submitting, merging,
recording, progress) is what grows. The main process's RSS is sampled every 50 ms (psutil); its CPU time is
read just before it exits.

Usage: python bench/main_process.py [--chunks 1000 10000 100000] [-j 2] [--dump]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from coffea import processor

HERE = Path(__file__).resolve().parent


class CountEvents(processor.ProcessorABC):
    """Reads the event IDs only (NanoAODSchema requires them): a chunk costs the workers a few milliseconds."""

    input_branches = ["run", "luminosityBlock", "event"]

    def __init__(self, **options):
        pass

    def process(self, events):
        return {"events": len(events.run)}

    def postprocess(self, accumulator):
        return accumulator


def measure(analysis: Path, chunk: int, workers: int, dump: Path | None) -> tuple[float, float, float]:
    command = [
        *(sys.executable, "-m", "coffea_dispatch.cli", "run", "--json-analysis", str(analysis)),
        *("--executor", "futures", "-j", str(workers), "--chunk", str(chunk), "--no-progress", "--no-plot"),
        *(("--dump", str(dump)) if dump else ()),
    ]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))}
    started = time.perf_counter()
    child = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    main = psutil.Process(child.pid)
    peak, cpu = 0, 0.0
    while child.poll() is None:
        try:
            peak = max(peak, main.memory_info().rss)
            times = main.cpu_times()
            cpu = times.user + times.system
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    if child.wait():
        raise SystemExit(child.stderr.read().decode()[-2000:])
    return time.perf_counter() - started, peak / 2**20, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, nargs="*", default=[1000, 10_000, 100_000])
    parser.add_argument("-j", "--workers", type=int, default=2)
    parser.add_argument("--dump", action="store_true", help="also write the dump's records (one file per chunk)")
    args = parser.parse_args()
    from coffea_dispatch.synthetic.generator import SampleSpec, make_sample

    print("| chunks | wall [s] | main process peak RSS [MiB] | main process CPU [s] | CPU per chunk [ms] |")
    print("|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for chunks in args.chunks:
            source = make_sample(work / f"events_{chunks}.root", SampleSpec(events=chunks, seed=5))
            samples = work / f"samples_{chunks}.json"
            samples.write_text(json.dumps({"Counted": [str(source)]}))
            analysis = work / f"analysis_{chunks}.json"
            analysis.write_text(json.dumps({"samplejson": str(samples), "workflow": "main_process:CountEvents"}))
            wall, peak, cpu = measure(analysis, 1, args.workers, work / f"dump_{chunks}" if args.dump else None)
            print(f"| {chunks:,} | {wall:.1f} | {peak:.0f} | {cpu:.1f} | {1000 * cpu / chunks:.2f} |", flush=True)


if __name__ == "__main__":
    main()
