"""Baseline: coffea's own Runner + FuturesExecutor on the same processor, as HiggsDNA runs it today; with
EXECUTOR=dispatch, the same script with the one line a Runner user changes: coffea_dispatch.executor("futures").

Usage: python bench/coffea_runner.py SAMPLE_JSON DUMP [WORKERS] [CHUNK] [coffea|dispatch]
"""

from __future__ import annotations

import json
import sys
import time

from coffea import processor

from coffea_dispatch.higgsdna.diphoton import DiphotonNanoAODSchema, DiphotonProcessor


def executor_for(which: str, workers: int):
    if which == "dispatch":
        import coffea_dispatch

        return coffea_dispatch.executor("futures", workers=workers, status=False)
    return processor.FuturesExecutor(workers=workers, status=False)


def main() -> None:
    samples_path, dump = sys.argv[1], sys.argv[2]
    workers = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    chunk = int(sys.argv[4]) if len(sys.argv) > 4 else 500_000
    which = sys.argv[5] if len(sys.argv) > 5 else "coffea"
    with open(samples_path) as f:
        samples = json.load(f)
    started = time.perf_counter()
    runner = processor.Runner(
        executor=executor_for(which, workers),
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
