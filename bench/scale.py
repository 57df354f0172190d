"""Many real-width inputs: where the cost is reading each file's metadata, not its events.

N copies (real copies, not links) of a real NanoAOD file (2,600+ branches, few events) are run by whole
commands, median of `--repeat`:
  - coffea-dispatch futures -j 2, cold metadata cache (a fresh --metadata-cache each time);
  - coffea-dispatch futures -j 2, warm metadata cache (the same inputs described by an earlier run);
  - coffea's Runner + FuturesExecutor(2) (bench/coffea_runner.py), which preprocesses on its workers.

Usage: python bench/scale.py [--files 10 40 100] [--repeat 3] [--source ../shared/data/nanoaod/nano_dy.root]
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
DEFAULT_SOURCE = HERE.parent.parent / "shared/data/nanoaod/nano_dy.root"


def timed(command: list[str], before=None) -> float:
    if before is not None:
        before()
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - started


def dispatch(analysis: Path, work: Path, cache: Path) -> list[str]:
    return [
        str(BIN / "coffea-dispatch"),
        *("run", "--json-analysis", str(analysis), "--dump", str(work / "dispatch"), "--overwrite"),
        *("--executor", "futures", "-j", "2", "--no-progress", "--no-plot", "--metadata-cache", str(cache)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, nargs="*", default=[10, 40, 100])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--source", default=str(DEFAULT_SOURCE))
    args = parser.parse_args()
    rows = []
    for n_files in args.files:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            inputs = []
            for index in range(n_files):
                copy = work / f"input_{index:04d}.root"
                shutil.copy(args.source, copy)
                inputs.append(str(copy))
            samples = work / "samples.json"
            samples.write_text(json.dumps({"Real": inputs}))
            analysis = work / "analysis.json"
            analysis.write_text(json.dumps({"samplejson": str(samples), "workflow": "base"}))
            cold, warm = work / "cold-cache", work / "warm-cache"
            forget = functools.partial(shutil.rmtree, cold, ignore_errors=True)
            commands = {
                "coffea-dispatch futures -j 2, cold cache": (dispatch(analysis, work, cold), forget),
                "coffea-dispatch futures -j 2, warm cache": (dispatch(analysis, work, warm), None),
                "coffea Runner + FuturesExecutor(2)": (
                    [sys.executable, str(HERE / "coffea_runner.py"), str(samples), str(work / "runner"), "2"],
                    None,
                ),
            }
            for name, (command, before) in commands.items():
                timed(command, before)  # page cache (and the warm metadata cache); not counted
                seconds = statistics.median(timed(command, before) for _ in range(args.repeat))
                rows.append((n_files, name, seconds))
                print(f"{n_files:5} files  {name:42} {seconds:6.2f} s", flush=True)
    print("\n| inputs | command | median wall [s] | vs coffea Runner |")
    print("|---:|---|---:|---:|")
    for n_files, name, seconds in rows:
        runner = next(s for n, c, s in rows if n == n_files and c.startswith("coffea Runner"))
        print(f"| {n_files} | {name} | {seconds:.2f} | {runner / seconds:.2f}x |")


if __name__ == "__main__":
    main()
