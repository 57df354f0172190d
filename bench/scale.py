"""Scale: many inputs, whole commands, coffea-dispatch against coffea's Runner on the same processor.

Cases (each contender is a fresh command, timed as a whole; median of --repeat runs after one untimed run):
  generated  --files distinct generated files of --events events and --branches branches each
  wide       --files real copies (not links) of one wide file with few events: all metadata, little physics
             (--source FILE, or a generated file of --branches branches and --events events)
  curve      for each N in --files, N real copies of --source (default: the real nano_dy.root): the cost curve

Contenders (--contenders):
  dispatch-cold   coffea-dispatch run --executor futures -j J, a fresh dump and an empty metadata cache
  dispatch-warm   the same with the metadata cache of an earlier run over the same inputs
  runner-futures  coffea's Runner + FuturesExecutor(J) (bench/coffea_runner.py)
  runner-dask     coffea's Runner + DaskExecutor on a LocalCluster of J workers (bench/coffea_dask_runner.py)
  plain           J independent plain uproot + awkward processes (tests/reference.py), the files dealt out
                  among them: what the machine can do without any framework

For coffea-dispatch runs the table also gives, from the dump's records, when the first chunk was complete
and when the last input had been described (a worker writes each input's plan record once it has read it).

Usage: python bench/scale.py generated [--files 40] [--events 50000] [--branches 1590] [-j 2] [--repeat 3]
       python bench/scale.py wide [--files 40] [--branches 2656] [--events 40]
       python bench/scale.py curve [--files 10 100 1000] [--repeat 1] [--runner-max 100]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_SOURCE = REPO.parent / "shared/data/nanoaod/nano_dy.root"
BASE_BRANCHES = 85  # what the generator writes without padding
CONTENDERS = ("dispatch-cold", "dispatch-warm", "runner-futures", "runner-dask", "plain")


@dataclass
class Timing:
    wall: list[float] = field(default_factory=list)
    first_chunk: list[float] = field(default_factory=list)
    described: list[float] = field(default_factory=list)

    @staticmethod
    def median(values: list[float]) -> str:
        return f"{statistics.median(values):.2f}" if values else ""


def generate_one(path: str, events: int, branches: int, seed: int) -> str:
    from coffea_dispatch.synthetic.generator import SampleSpec, make_sample

    if not Path(path).exists():
        partial = Path(path).with_suffix(".partial.root")
        make_sample(partial, SampleSpec(events=events, seed=seed, extra_branches=branches - BASE_BRANCHES))
        partial.rename(path)
    return path


def generated_files(data: Path, how_many: int, events: int, branches: int, distinct: bool) -> list[Path]:
    """`how_many` generated files (kept in `data` between benchmark runs), written in parallel."""
    data.mkdir(parents=True, exist_ok=True)
    seeds = range(1000, 1000 + (how_many if distinct else 1))
    paths = [str(data / f"gen_{events}ev_{branches}br_seed{seed}.root") for seed in seeds]
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        print(f"generating {len(missing)} file(s) of {events:,} events x {branches:,} branches ...", flush=True)
        with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
            list(pool.map(generate_one, missing, [events] * len(missing), [branches] * len(missing), seeds))
    return [Path(p) for p in paths]


def real_copies(source: Path, how_many: int, folder: Path) -> list[Path]:
    """Real copies, not links, each with a ROOT UUID of its own: distinct files to the operating system and to
    coffea-dispatch (which refuses two copies of one file in a sample), as a dataset's files are."""
    from coffea_dispatch.synthetic.generator import distinct_copy

    folder.mkdir(parents=True, exist_ok=True)
    return [distinct_copy(source, folder / f"input_{index:05d}.root") for index in range(how_many)]


class Case:
    """The inputs of one benchmark case and the commands that process them."""

    def __init__(self, inputs: list[Path], work: Path, workers: int):
        self.inputs, self.work, self.workers = inputs, work, workers
        self.samples = work / "samples.json"
        self.samples.write_text(json.dumps({"Bench": [str(f) for f in inputs]}))
        self.analysis = work / "analysis.json"
        self.analysis.write_text(json.dumps({"samplejson": str(self.samples), "workflow": "base"}))
        self.dump = work / "dump"

    def dispatch(self, cache: Path) -> list[str]:
        return [
            *(sys.executable, "-m", "coffea_dispatch.cli", "run", "--json-analysis", str(self.analysis)),
            *("--dump", str(self.dump), "--executor", "futures", "-j", str(self.workers)),
            *("--no-progress", "--no-plot", "--metadata-cache", str(cache)),
        ]

    def runner(self, script: str) -> list[str]:
        return [sys.executable, str(HERE / script), str(self.samples), str(self.dump), str(self.workers), "500000"]

    def plain(self) -> list[list[str]]:
        shares = [self.inputs[i :: self.workers] for i in range(self.workers)]
        return [[sys.executable, str(REPO / "tests/reference.py"), *map(str, s)] for s in shares if s]

    def run(self, contender: str, timing: Timing) -> None:
        shutil.rmtree(self.dump, ignore_errors=True)  # a fresh dump: an earlier run's records would be resumed
        cold, warm = self.work / "cold-cache", self.work / "warm-cache"
        commands = {
            "dispatch-cold": lambda: [self.dispatch(cold)],
            "dispatch-warm": lambda: [self.dispatch(warm)],
            "runner-futures": lambda: [self.runner("coffea_runner.py")],
            "runner-dask": lambda: [self.runner("coffea_dask_runner.py")],
            "plain": self.plain,
        }
        shutil.rmtree(cold, ignore_errors=True)
        started = time.time()
        processes = [
            subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for c in commands[contender]()
        ]
        for process in processes:
            _, err = process.communicate()
            if process.returncode:
                raise SystemExit(f"{contender} failed:\n{err.decode()[-2000:]}")
        timing.wall.append(time.time() - started)
        if contender.startswith("dispatch"):
            records = [p.stat().st_mtime for p in self.dump.glob(".coffea-dispatch/chunks/*/*.done")]
            plans = [p.stat().st_mtime for p in self.dump.glob(".coffea-dispatch/files/*/*.json")]
            timing.first_chunk.append(min(records) - started)
            if contender == "dispatch-cold":
                timing.described.append(max(plans) - started)


def measure(case: Case, contenders: list[str], repeat: int, prime_all: bool = True) -> dict[str, Timing]:
    """`prime_all`: one untimed run of every contender first (page cache); else of dispatch-warm only (its
    metadata cache), for the cost curve's big cases."""
    timings = {}
    for contender in contenders:
        timing = Timing()
        if prime_all or contender == "dispatch-warm":
            case.run(contender, Timing())  # page cache, and the warm metadata cache: not counted
        for _ in range(repeat):
            case.run(contender, timing)
        timings[contender] = timing
        first, described = Timing.median(timing.first_chunk) or "-", Timing.median(timing.described) or "-"
        print(
            f"{len(case.inputs):6} inputs  {contender:15} {Timing.median(timing.wall):>8} s"
            f"  first chunk {first:>6}  described {described:>6}",
            flush=True,
        )
    return timings


def table(rows: list[tuple[int, str, Timing]]) -> None:
    print("\n| inputs | command | wall [s] | first chunk done [s] | all inputs described [s] | vs Runner+Futures |")
    print("|---:|---|---:|---:|---:|---:|")
    for n, contender, timing in rows:
        runner = next((t for m, c, t in rows if m == n and c == "runner-futures"), None)
        ratio = f"{statistics.median(runner.wall) / statistics.median(timing.wall):.2f}x" if runner else ""
        first, described = Timing.median(timing.first_chunk), Timing.median(timing.described)
        print(f"| {n} | {contender} | {Timing.median(timing.wall)} | {first} | {described} | {ratio} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", choices=("generated", "wide", "curve"))
    parser.add_argument("--files", type=int, nargs="*")
    parser.add_argument("--events", type=int)
    parser.add_argument("--branches", type=int)
    parser.add_argument("--source", type=Path, help="wide, curve: copies of this file")
    parser.add_argument("-j", "--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int)
    parser.add_argument("--contenders", nargs="*", choices=CONTENDERS, default=list(CONTENDERS))
    parser.add_argument("--runner-max", type=int, default=100, help="curve: coffea's Runner up to this many inputs")
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "coffea-dispatch-bench")
    args = parser.parse_args()
    files = args.files or ([10, 100, 1000] if args.case == "curve" else [40])
    repeat = args.repeat or (1 if args.case == "curve" else 3)
    rows = []
    for n_files in files:
        with tempfile.TemporaryDirectory(dir=args.data.parent) as tmp:
            work = Path(tmp)
            if args.case == "generated":
                inputs = generated_files(args.data, n_files, args.events or 50_000, args.branches or 1590, True)
            else:
                source = args.source
                if source is None and args.case == "wide":
                    source = generated_files(args.data, 1, args.events or 40, args.branches or 2656, False)[0]
                inputs = real_copies(source or DEFAULT_SOURCE, n_files, work / "inputs")
            contenders = args.contenders
            if args.case == "curve" and n_files > args.runner_max:
                contenders = [c for c in contenders if not c.startswith("runner")]
            case = Case(inputs, work, args.workers)
            for contender, timing in measure(case, contenders, repeat, args.case != "curve").items():
                rows.append((n_files, contender, timing))
    table(rows)


if __name__ == "__main__":
    main()
