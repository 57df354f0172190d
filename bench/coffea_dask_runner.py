"""Baseline: coffea's Runner + DaskExecutor on a LocalCluster used directly, on the same processor.

Usage: python bench/coffea_dask_runner.py SAMPLE_JSON DUMP WORKERS CHUNK
"""

from __future__ import annotations

import json
import sys
import time

from coffea import processor
from distributed import Client, LocalCluster

from coffea_dispatch.higgsdna.diphoton import DiphotonNanoAODSchema, DiphotonProcessor


def main() -> None:
    samples_path, dump, workers, chunk = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    with open(samples_path) as f:
        samples = json.load(f)
    started = time.perf_counter()
    with LocalCluster(n_workers=workers, threads_per_worker=1) as cluster, Client(cluster) as client:
        runner = processor.Runner(
            executor=processor.DaskExecutor(client=client, status=False),
            schema=DiphotonNanoAODSchema,
            chunksize=chunk,
        )
        output = runner(samples, treename="Events", processor_instance=DiphotonProcessor(output_location=dump))
    events = sum(v["events"] for v in output.values())
    print(f"{events} events, {time.perf_counter() - started:.3f} s")


if __name__ == "__main__":
    main()
