"""Throughput of the whole `coffea-dispatch run --executor futures -j 2` command against two baselines.

Every contender runs as a fresh command (interpreter start, imports, work, exit), three times; the table
gives the median wall time and events/s:
  - coffea-dispatch: coffea-dispatch run --executor futures -j 2 (default --chunk 500000), parquet + plot;
  - coffea Runner:   coffea's Runner + FuturesExecutor(workers=2) on the same processor (bench/coffea_runner.py);
  - plain uproot:    a single-process plain uproot + awkward implementation of the cuts (tests/reference.py).

Usage: python bench/throughput.py [--events 1000000] [--repeat 3] [--scaling 4 10] [--data DIR]
The scaling rows run N copies of the 90-branch file (each with its own ROOT UUID), to show throughput once fixed
costs amortise.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from coffea_dispatch.synthetic.generator import SampleSpec, distinct_copy, make_sample

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BIN = Path(sys.executable).parent
BASE_BRANCHES = 85  # what make-sample writes without padding
WIDTHS = {"~90 branches": 90, "~1,500 branches": 1500}


def sample_file(folder: Path, events: int, branches: int) -> Path:
    path = folder / f"bench_{events}_{branches}.root"
    if not path.exists():
        print(f"generating {path} ...", flush=True)
        make_sample(path, SampleSpec(events=events, seed=2026, extra_branches=branches - BASE_BRANCHES))
    return path


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - started


def write_jsons(root_files: list[Path], work: Path) -> tuple[Path, Path]:
    """The sample JSON and the analysis JSON (base workflow) of one benchmark case."""
    samples = work / "samples.json"
    samples.write_text(json.dumps({"Bench": [str(f) for f in root_files]}))
    analysis = work / "analysis.json"
    analysis.write_text(json.dumps({"samplejson": str(samples), "workflow": "base"}))
    return samples, analysis


def contenders(root_files: list[Path], work: Path) -> dict[str, list[str]]:
    samples, analysis = write_jsons(root_files, work)
    return {
        "coffea-dispatch futures -j 2": [
            str(BIN / "coffea-dispatch"),
            "run",
            "--json-analysis",
            str(analysis),
            "--dump",
            str(work / "dispatch"),
            "--executor",
            "futures",
            "-j",
            "2",
            "--no-progress",
            "--overwrite",  # every timed run does the whole work (the same --dump would resume)
        ],
        "coffea Runner + FuturesExecutor(2)": [
            sys.executable,
            str(HERE / "coffea_runner.py"),
            str(samples),
            str(work / "runner"),
            "2",
        ],
        "plain uproot+awkward, 1 process": [sys.executable, str(REPO / "tests/reference.py"), *map(str, root_files)],
    }


def copies(root_file: Path, how_many: int, folder: Path) -> list[Path]:
    """`how_many` distinct files made from one (byte copies with a ROOT UUID each): more input without generating
    more (links or plain copies of one file in a sample are refused: their events would count twice)."""
    return [distinct_copy(root_file, folder / f"copy{index}_{root_file.name}") for index in range(how_many)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--scaling",
        type=int,
        nargs="*",
        default=[4, 10],
        help="also run N copies of the 90-branch file (default: 4 and 10)",
    )
    parser.add_argument("--data", default=str(Path(tempfile.gettempdir()) / "coffea-dispatch-bench"))
    args = parser.parse_args()
    data = Path(args.data)
    data.mkdir(parents=True, exist_ok=True)
    rows = []
    cases = [(width, branches, 1) for width, branches in WIDTHS.items()]
    cases += [(f"{n} x ~90 branches", WIDTHS["~90 branches"], n) for n in args.scaling]
    for case_name, branches, n_files in cases:
        root_file = sample_file(data, args.events, branches)
        with tempfile.TemporaryDirectory() as tmp:
            inputs = [root_file] if n_files == 1 else copies(root_file, n_files, Path(tmp))
            events = args.events * n_files
            for name, command in contenders(inputs, Path(tmp)).items():
                timed(command)  # warm the page cache; not counted
                seconds = statistics.median(timed(command) for _ in range(args.repeat))
                rows.append((case_name, name, seconds, events / seconds))
                print(f"{case_name:18} {name:36} {seconds:6.2f} s {events / seconds:>12,.0f} events/s", flush=True)
    print("\n| file | command | median wall [s] | events/s | vs coffea Runner | vs plain |")
    print("|---|---|---:|---:|---:|---:|")
    for width_name, name, seconds, rate in rows:
        same = {n: r for w, n, _, r in rows if w == width_name}
        runner = same["coffea Runner + FuturesExecutor(2)"]
        plain = same["plain uproot+awkward, 1 process"]
        print(f"| {width_name} | {name} | {seconds:.2f} | {rate:,.0f} | {rate / runner:.2f}x | {rate / plain:.2f}x |")


if __name__ == "__main__":
    main()
