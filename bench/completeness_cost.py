"""What counting completeness costs: the sums of generator weights read when an input is described and when
each chunk runs, and the main process's completeness at the end of a run of many files.

  - describe: what describing a real-width generated file (1,500 branches) read before (open, entries, UUID,
    branch names), then the sum of its generator weights, in a fresh process each time;
  - per chunk: weights.chunk_count over one chunk, against the base workflow's time for that chunk;
  - end of run: from_run + merge with the earlier completeness.json + write + read, for N files of 4 chunks.

Usage: python bench/completeness_cost.py [--events 500000] [--files 5000] [--repeat 5] [--data DIR]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from coffea_dispatch.dump.completeness import from_run
from coffea_dispatch.dump.completeness_file import COMPLETENESS, read_completeness, record_completeness
from coffea_dispatch.synthetic.generator import SampleSpec, make_sample

BASE_BRANCHES = 85
COLD = """
import sys, time
from coffea_dispatch.inputs.files import branch_names, open_tree
from coffea_dispatch.inputs.compat import file_uuid
from coffea_dispatch.inputs.weights import input_totals
started = time.perf_counter()
tree = open_tree(sys.argv[1], "Events")
entries, uuid, names = tree.num_entries, file_uuid(tree), branch_names(tree)
described = time.perf_counter()
input_totals(sys.argv[1], tree)
print(described - started, time.perf_counter() - described)
"""
CHUNK = """
import sys, time
from coffea_dispatch.pipeline.chunk import ChunkRunner
from coffea_dispatch.inputs.files import open_tree
from coffea_dispatch.inputs.planning import FileTask
from coffea_dispatch.inputs.describe import FileDescriber
from coffea_dispatch.inputs.weights import chunk_count
from coffea_dispatch.higgsdna.diphoton import DiphotonProcessor
name, size = sys.argv[1], int(sys.argv[2])
processor = DiphotonProcessor()
runner = ChunkRunner(processor, "base", processor.nanoevents_schema)
task = FileTask("S", name, {}, FileDescriber("Events"), size, 0)
items = task.chunks(task.describe())
tree = open_tree(name, "Events")
started = time.perf_counter()  # another chunk than the one processed: nothing of it read yet
chunk_count(name, tree, items[2].entrystart, items[2].entrystop)
counted = time.perf_counter() - started
started = time.perf_counter()
runner.process(items[1])
print(time.perf_counter() - started, counted)
"""


def wide_file(folder: Path, events: int) -> Path:
    path = folder / f"completeness_{events}_1500.root"
    if not path.exists():
        print(f"generating {path} ...", flush=True)
        make_sample(path, SampleSpec(events=events, seed=26, extra_branches=1500 - BASE_BRANCHES))
    return path


def fresh(script: str, *arguments: str) -> list[float]:
    done = subprocess.run([sys.executable, "-c", script, *arguments], check=True, capture_output=True, text=True)
    return [float(x) for x in done.stdout.split()]


def end_of_run(files: int, folder: Path) -> tuple[float, float, int]:
    """Seconds for the run's completeness over `files` files of 4 chunks, and for reading it back; its size."""
    names = [f"/store/mc/Sample/file_{i:05d}.root" for i in range(files)]
    counts = {n: {f"{k * 25000}-{(k + 1) * 25000}": (25000, 12345.678 + k, None) for k in range(4)} for n in names}
    known = {n: (100_000, {"sumw": 5e4, "sumw_events": 5e4, "source": "genWeight"}, "ab" * 16) for n in names}
    started = time.perf_counter()
    found = from_run({"Sample": names}, {"Sample": {"read": counts}}, known, {})
    record_completeness(folder, found)
    path = folder / COMPLETENESS
    written = time.perf_counter() - started
    started = time.perf_counter()
    read_completeness(folder)["Sample"].fraction()
    return written, time.perf_counter() - started, path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--data", type=Path, default=None)
    args = parser.parse_args()
    data = args.data or Path(tempfile.mkdtemp(prefix="completeness-bench-"))
    data.mkdir(parents=True, exist_ok=True)
    wide = str(wide_file(data, args.events))
    runs = [fresh(COLD, wide) for _ in range(args.repeat)]
    print(f"describe, {args.events:,} events x 1,500 branches (median of {args.repeat}, fresh process each):")
    before, sums = (statistics.median(r[i] for r in runs) * 1000 for i in (0, 1))
    print(f"  entries, UUID, branch names (what describing read before): {before:7.1f} ms")
    print(f"  then the sum of generator weights, in the same process:    {sums:7.1f} ms")
    chunk = [fresh(CHUNK, wide, "100000") for _ in range(args.repeat)]
    print("one 100,000-event chunk (base workflow), median:")
    print(f"  the chunk:   {statistics.median(c[0] for c in chunk) * 1000:7.1f} ms")
    print(f"  its counts:  {statistics.median(c[1] for c in chunk) * 1000:7.1f} ms")
    with tempfile.TemporaryDirectory() as folder:
        for files in (1000, args.files):
            runs = [end_of_run(files, Path(folder)) for _ in range(3)]
            written = statistics.median(r[0] for r in runs)
            read = statistics.median(r[1] for r in runs)
            print(f"end of run, {files:,} files x 4 chunks: completeness built, merged and written {written:.2f} s, "
                  f"read back {read:.2f} s, completeness.json {runs[-1][2] / 1e6:.1f} MB")  # fmt: skip


if __name__ == "__main__":
    main()
