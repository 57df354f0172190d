"""A 64-slot Dask cluster simulated on this machine: `coffea-dispatch run --executor dask/local -s 4 -j 16`
against coffea's Runner + DaskExecutor on a LocalCluster of the same shape (4 processes x 16 threads), with a
processor that sleeps for a time drawn for each chunk (sleeping needs no CPU, so 64 threads stand in for 64
slots, and the heavy tail of remote reads becomes a heavy tail of sleeps).

Each chunk's sleep is drawn from its file's name and entry range (`sleep_seconds`: a log-normal around 2.25 s;
a fraction of the chunks take 20-30 s in the straggler shapes), so both tools get exactly the same work. The
ideal wall time of a shape is max(sum of sleeps / 64, longest chunk) plus the tool's own wall time on a
trivial run (one file, one chunk, no sleep); efficiency = ideal / measured. Ours runs cold (a new metadata
cache: every file is new) and warm (the same cache again: files described, chunks timed); the Runner keeps no
cache. Every contender is a fresh command; the table gives medians of --repeat runs.

Usage: python bench/simulated_cluster.py [--repeat 3] [--shapes NAME ...] [--data DIR]
       (internal: python bench/simulated_cluster.py runner SAMPLES_JSON CHUNK)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from unittest import mock

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
SLOTS, PROCESSES, THREADS = 64, 4, 16
MEAN_SECONDS, SIGMA = 2.25, 0.6
SCALE, SLOW_FRACTION, SLOW_FIRST, LOG = "SIM_SCALE", "SIM_SLOW_FRACTION", "SIM_SLOW_FIRST", "SIM_LOG"


def _uniform(*key: object) -> float:
    digest = hashlib.sha256(":".join(map(str, key)).encode()).digest()
    return (int.from_bytes(digest[:8], "big") + 0.5) / 2**64


def sleep_seconds(filename: str, entrystart: int) -> float:
    """The chunk's sleep, from its file's name and first entry and the shape's settings (environment)."""
    name = os.path.basename(filename)
    scale = float(os.environ.get(SCALE, "1"))
    slow_fraction = float(os.environ.get(SLOW_FRACTION, "0"))
    if (os.environ.get(SLOW_FIRST) == name and entrystart == 0) or _uniform("slow", name, entrystart) < slow_fraction:
        return 20.0 + 10.0 * _uniform("long", name, entrystart)
    z = NormalDist().inv_cdf(_uniform("sleep", name, entrystart))
    return scale * MEAN_SECONDS * math.exp(SIGMA * z - SIGMA**2 / 2)


def _processor_class():
    from coffea import processor

    class Sleeps(processor.ProcessorABC):
        """Reads nothing, sleeps for the chunk's drawn time, counts its entries."""

        def process(self, events):
            started = time.time()
            time.sleep(sleep_seconds(events.metadata["filename"], events.metadata["entrystart"]))
            if os.environ.get(LOG):  # when each chunk ran, to see where slots idle
                with open(os.environ[LOG], "a") as log:
                    meta = events.metadata
                    log.write(f"{meta['filename']} {meta['entrystart']} {started} {time.time()}\n")
            return {"entries": len(events), "chunks": 1}

        def postprocess(self, accumulator):
            return accumulator

    return Sleeps


if __name__ != "__main__":  # imported by the workers as `simulated_cluster:Sleeps`
    Sleeps = _processor_class()


@dataclass(frozen=True)
class Shape:
    name: str
    files: int
    chunks_per_file: int
    scale: float = 1.0
    slow_fraction: float = 0.0
    slow_first: bool = False

    def environment(self) -> dict[str, str]:
        env = {SCALE: str(self.scale), SLOW_FRACTION: str(self.slow_fraction)}
        return env | ({SLOW_FIRST: "input_00000.root"} if self.slow_first else {})


CHUNK = 100  # entries per chunk: a file of 40 chunks has 4,000 entries
SHAPES = [
    Shape("1,000 files x 1 chunk", 1000, 1),
    Shape("1,000 files x 1 chunk, sleeps x 4", 1000, 1, scale=4),
    Shape("16 files x 40 chunks", 16, 40),
    Shape("16 files x 40 chunks + 1% of chunks 20-30 s", 16, 40, slow_fraction=0.01),
    Shape("the same, one slow chunk is a file's first", 16, 40, slow_fraction=0.01, slow_first=True),
    Shape("4 big files x 160 chunks", 4, 160),
    Shape("5,000 files x 1 chunk", 5000, 1),
]
TRIVIAL = Shape("trivial", 1, 1, scale=0)


def inputs(data: Path, shape: Shape) -> list[str]:
    """The shape's input files: distinct copies (each its own ROOT UUID) of one generated file."""
    from coffea_dispatch.synthetic.generator import SampleSpec, distinct_copy, make_sample

    entries = CHUNK * shape.chunks_per_file
    source = data / f"source_{entries}.root"
    if not source.exists():
        make_sample(source, SampleSpec(events=entries, seed=3))
    folder = data / f"inputs_{entries}"
    folder.mkdir(parents=True, exist_ok=True)
    files = [folder / f"input_{n:05d}.root" for n in range(shape.files)]
    for path in files:
        if not path.exists():
            distinct_copy(source, path)
    return [str(f) for f in files]


def ideal_seconds(files: list[str], shape: Shape) -> float:
    with mock.patch.dict(os.environ, shape.environment()):
        sleeps = [sleep_seconds(f, n * CHUNK) for f in files for n in range(shape.chunks_per_file)]
    return max(sum(sleeps) / SLOTS, max(sleeps))


def timed(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-3000:]}")
    return seconds


def ours(work: Path, files: list[str], cache: Path) -> list[str]:
    (work / "samples.json").write_text(json.dumps({"Sim": files}))
    analysis = {"samplejson": "samples.json", "workflow": "simulated_cluster:Sleeps"}
    (work / "analysis.json").write_text(json.dumps(analysis))
    command = [str(BIN / "coffea-dispatch"), "run", "--json-analysis", str(work / "analysis.json")]
    command += ["--executor", "dask/local", "-s", str(PROCESSES), "-j", str(THREADS), "--schema", "base"]
    return command + ["--chunk", str(CHUNK), "--metadata-cache", str(cache), "--no-progress", "--no-plot"]


def runner(work: Path, files: list[str]) -> list[str]:
    (work / "runner_samples.json").write_text(json.dumps({"Sim": files}))
    return [sys.executable, str(HERE / "simulated_cluster.py"), "runner", str(work / "runner_samples.json")]


def run_coffea_runner(samples_path: str) -> None:
    """coffea's Runner + DaskExecutor on a LocalCluster of the same shape, as a user would write it."""
    from coffea import processor
    from coffea.nanoevents import BaseSchema
    from distributed import Client, LocalCluster

    import simulated_cluster  # by name, as the workers import it

    samples = json.loads(Path(samples_path).read_text())
    with (
        LocalCluster(n_workers=PROCESSES, threads_per_worker=THREADS, processes=True) as cluster,
        Client(cluster) as client,
    ):
        run = processor.Runner(
            executor=processor.DaskExecutor(client=client, status=False), schema=BaseSchema, chunksize=CHUNK
        )
        output = run(samples, treename="Events", processor_instance=simulated_cluster.Sleeps())
    print(f"{output['chunks']} chunks, {output['entries']} entries")


def measure(shape: Shape, data: Path, repeat: int) -> dict[str, float]:
    """Median wall seconds of ours cold, ours warm and the Runner on `shape`."""
    files = inputs(data, shape)
    env = (
        os.environ
        | shape.environment()
        | {"PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))}
    )
    walls: dict[str, list[float]] = {"cold": [], "warm": [], "runner": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for _ in range(repeat):
            cache = work / "cache"
            shutil.rmtree(cache, ignore_errors=True)
            walls["cold"].append(timed(ours(work, files, cache), env))
            walls["warm"].append(timed(ours(work, files, cache), env))
            walls["runner"].append(timed(runner(work, files), env))
    return {k: statistics.median(v) for k, v in walls.items()}


def main() -> None:
    if sys.argv[1:2] == ["runner"]:
        return run_coffea_runner(sys.argv[2])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--shapes", nargs="*", help="substrings of the shape names to run (default: all)")
    parser.add_argument("--data", default=str(Path(tempfile.gettempdir()) / "coffea-dispatch-simulated"))
    args = parser.parse_args()
    data = Path(args.data)
    data.mkdir(parents=True, exist_ok=True)
    trivial = measure(TRIVIAL, data, args.repeat)
    print(f"trivial run: ours {trivial['cold']:.1f} s cold, {trivial['warm']:.1f} s warm; ", end="")
    print(f"Runner {trivial['runner']:.1f} s")
    print("\n| shape | ideal (ours) | ours cold (eff.) | ours warm (eff.) | ideal (Runner) | coffea Runner (eff.) |")
    print("|---|---:|---:|---:|---:|---:|", flush=True)
    for shape in SHAPES:
        if args.shapes and not any(s in shape.name for s in args.shapes):
            continue
        work = ideal_seconds(inputs(data, shape), shape)
        wall = measure(shape, data, args.repeat)
        ideal_cold, ideal_warm, ideal_runner = (work + trivial[k] for k in ("cold", "warm", "runner"))
        print(
            f"| {shape.name} | {ideal_cold:.1f} s | {wall['cold']:.1f} s ({ideal_cold / wall['cold']:.2f}) | "
            f"{wall['warm']:.1f} s ({ideal_warm / wall['warm']:.2f}) | {ideal_runner:.1f} s | "
            f"{wall['runner']:.1f} s ({ideal_runner / wall['runner']:.2f}) |",
            flush=True,
        )


if __name__ == "__main__":
    main()
