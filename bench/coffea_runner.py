"""Baseline: coffea's own Runner + FuturesExecutor on the same processor, as HiggsDNA runs it today.

Usage: python bench/coffea_runner.py SAMPLE_JSON DUMP [WORKERS] [CHUNK]
"""

from __future__ import annotations

import json
import sys
import time

from coffea import processor

from coffea_dispatch.workflows.diphoton import DiphotonNanoAODSchema, DiphotonProcessor


def main() -> None:
    samples_path, dump = sys.argv[1], sys.argv[2]
    workers = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    chunk = int(sys.argv[4]) if len(sys.argv) > 4 else 500_000
    with open(samples_path) as f:
        samples = json.load(f)
    started = time.perf_counter()
    runner = processor.Runner(
        executor=processor.FuturesExecutor(workers=workers, status=False),
        schema=DiphotonNanoAODSchema,
        chunksize=chunk,
        savemetrics=True,
    )
    output, metrics = runner(samples, treename="Events", processor_instance=DiphotonProcessor(output_location=dump))
    seconds = time.perf_counter() - started
    events = sum(v["events"] for v in output.values())
    candidates = sum(v["candidates"] for v in output.values())
    print(f"{events} events, {candidates} candidates, {seconds:.3f} s")


if __name__ == "__main__":
    main()
