"""Time to plan and write a vanilla_lxplus submission for 100,000 files in 50 samples (no ROOT I/O).

Usage: python bench/vanilla_plan.py [--files 100000] [--samples 50] [--repeat 3] [--folder DIR]

It plans through the one planner every job array uses (`batch.submission.plan_jobs`, with the jobs of an
analysis JSON), then writes the backend's scripts and submit files, and prints the median time and the
process's peak memory (the goal: under 10 s and 1 GB on the 2-core machine).

Every run writes its own submission under one temporary folder, deleted only after the last run: deleting
200,000 files makes this VM's ext4 disk slow for the next minute (kernel time), which is not planning time.
Try `--folder /dev/shm` to see the planning cost without the disk.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path

from coffea_dispatch.batch.analysis_jobs import AnalysisJobs
from coffea_dispatch.batch.registry import array_backend
from coffea_dispatch.batch.submission import JobRequests, plan_jobs
from coffea_dispatch.inputs.analysis import Analysis

BASE_ARGV = ["--dump", "/eos/user/a/analyst/out", "--skipCQR", "--chunk", "500000"]


def analysis(samples: dict[str, list[str]]) -> Analysis:
    """The analysis a real run would load (the real dataclass; nothing is read from disk)."""
    return Analysis(
        path=Path("bench.json"),
        samplejson=Path("samples.json"),
        samples=samples,
        workflow="base",
        metaconditions={"preselection": {"mass_min": 100}},
    )


def samples(n_files: int, n_samples: int) -> dict[str, list[str]]:
    per_sample = n_files // n_samples
    return {
        f"Sample{s:02d}": [f"root://eoscms.cern.ch//store/mc/Sample{s:02d}/nano_{i}.root" for i in range(per_sample)]
        for s in range(n_samples)
    }


def once(n_files: int, n_samples: int, root: Path) -> float:
    files = samples(n_files, n_samples)
    started = time.perf_counter()
    spec = AnalysisJobs(analysis(files), BASE_ARGV, "/eos/user/a/analyst/out")
    requests = JobRequests(memory_mb=10_000, queue="espresso")
    submission = plan_jobs(spec.work(files), spec, executor="vanilla_lxplus", requests=requests, folder=root)
    array_backend("vanilla_lxplus").write_files(submission)
    seconds = time.perf_counter() - started
    assert len(submission.jobs) == n_files and json.loads((submission.folder / "submission.json").read_text())
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--folder", default=None, help="where the submissions are written (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.folder) as tmp:
        timings = [once(args.files, args.samples, Path(tmp) / str(run)) for run in range(args.repeat)]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux
    print(
        f"{args.files:,} files in {args.samples} samples: median {statistics.median(timings):.2f} s "
        f"(runs: {', '.join(f'{t:.2f}' for t in timings)}); peak memory of the process {peak_mb:.0f} MB"
    )


if __name__ == "__main__":
    main()
