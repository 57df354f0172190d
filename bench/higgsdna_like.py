"""A HiggsDNA-like processor (tests/higgsdna_like: attribute assignment, metaconditions, taggers, one parquet per
chunk named by the partition key) through the whole `coffea-dispatch run` command against coffea's own Runner
with FuturesExecutor on the same processor, each a fresh command, median of --repeat runs.

Run it with either environment's Python (HiggsDNA's own processors need coffea 0.7; the stand-in also runs
on coffea 2025+):
    .venv-coffea07/bin/python bench/higgsdna_like.py [--files 1 4] [--events 250000] [--branches 90]
    .venv/bin/python bench/higgsdna_like.py ...
Both commands write the same files (the tests check that file by file).
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
from pathlib import Path

from coffea_dispatch.synthetic.generator import SampleSpec, make_sample

REPO = Path(__file__).resolve().parent.parent
HIGGSDNA_LIKE = REPO / "tests" / "higgsdna_like"
BIN = Path(sys.executable).parent
RUNNER = """
import json, sys
from coffea import processor
from coffea.nanoevents import NanoAODSchema
import higgs_dna.metaconditions as registered
from higgs_dna.workflows import taggers, workflows
samples, dump, workers, chunk = json.load(open(sys.argv[1])), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
meta = json.load(open(registered.__path__[0] + "/" + registered.metaconditions["Era2022_v1"]))
instance = workflows["base"](metaconditions=meta, nano_version=12, apply_trigger=True, output_location=dump,
    trigger_group=".*Diphoton30.*", taggers=[taggers["DummyTagger2"](), taggers["DummyTagger1"]()],
    year={name: ["2022preEE"] for name in samples})
runner = processor.Runner(executor=processor.FuturesExecutor(workers=workers, status=False),
    schema=NanoAODSchema, chunksize=chunk)
runner(samples, treename="Events", processor_instance=instance)
"""


def timed(command: list[str], dump: Path) -> float:
    shutil.rmtree(dump, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(HIGGSDNA_LIKE)}
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--events", type=int, default=500_000, help="events per file")
    parser.add_argument("--branches", type=int, default=90)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-higgsdna-"))
    try:
        workers = args.workers
        print(f"| files x events | coffea-dispatch futures -j {workers} | coffea Runner + Futures({workers}) |")
        print("|---|---:|---:|")
        for n_files in args.files:
            files = []
            for i in range(n_files):  # distinct files: HiggsDNA names outputs by file UUID, copies would collide
                path = work / f"file{i}.root"
                if not path.exists():
                    spec = SampleSpec(events=args.events, seed=11 + i, extra_branches=max(0, args.branches - 85))
                    make_sample(path, spec)
                files.append(str(path))
            samples = {"GluGluHToGG": files}
            (work / "samples.json").write_text(json.dumps(samples))
            analysis = {
                "samplejson": str(work / "samples.json"),
                "workflow": "base",
                "metaconditions": "Era2022_v1",
                "taggers": ["DummyTagger2", "DummyTagger1"],
                "systematics": {},
                "corrections": {},
                "year": {"GluGluHToGG": ["2022preEE"]},
            }
            (work / "analysis.json").write_text(json.dumps(analysis))
            (work / "runner.py").write_text(RUNNER)
            ours = [str(BIN / "coffea-dispatch"), "run", "--json-analysis", str(work / "analysis.json")]
            ours += ["--dump", str(work / "out"), "--executor", "futures", "-j", str(args.workers), "--overwrite"]
            ours += ["--chunk", str(args.chunk), "--nano-version", "12", "--triggerGroup", ".*Diphoton30.*"]
            ours += ["--no-progress", "--no-plot"]
            theirs = [sys.executable, str(work / "runner.py"), str(work / "samples.json"), str(work / "out")]
            theirs += [str(args.workers), str(args.chunk)]
            ours_s = statistics.median(timed(ours, work / "out") for _ in range(args.repeat))
            theirs_s = statistics.median(timed(theirs, work / "out") for _ in range(args.repeat))
            events = n_files * args.events
            print(
                f"| {n_files} x {args.events:,} | {ours_s:.2f} s ({events / ours_s:,.0f} ev/s, "
                f"{theirs_s / ours_s:.2f}x Runner) | {theirs_s:.2f} s ({events / theirs_s:,.0f} ev/s) |",
                flush=True,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
