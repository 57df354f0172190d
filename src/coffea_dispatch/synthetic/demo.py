"""The first-five-minutes demo: generate a small signal and background dataset, write its JSONs, run it."""

from __future__ import annotations

import json
from pathlib import Path

from coffea_dispatch.pipeline.run import RunOptions, run_analysis
from coffea_dispatch.synthetic.generator import SampleSpec, make_sample

DEMO_SAMPLES = {
    "GluGluHToGG": [SampleSpec(events=0, seed=101, signal_fraction=0.9, run=1)],
    "DiPhotonJets": [
        SampleSpec(events=0, seed=201, signal_fraction=0.0, run=1),
        SampleSpec(events=0, seed=202, signal_fraction=0.0, run=1),
    ],
}


def write_demo_inputs(folder: str | Path, events: int) -> Path:
    """Generate the ROOT files (skipping those already there) and write samples.json and analysis.json."""
    root = Path(folder)
    data = root / "data"
    samples: dict[str, list[str]] = {}
    for sample, specs in DEMO_SAMPLES.items():
        samples[sample] = []
        for index, template in enumerate(specs):
            path = data / f"{sample}_{index}.root"
            if not path.exists():
                make_sample(path, SampleSpec(events, template.seed, template.signal_fraction, 0, template.run))
            samples[sample].append(str(path.relative_to(root)))
    (root / "samples.json").write_text(json.dumps(samples, indent=2) + "\n")
    analysis = {
        "samplejson": "samples.json",
        "workflow": "base",
        "metaconditions": "default",
        "taggers": [],
        "systematics": {},
        "corrections": {},
        "year": {"GluGluHToGG": ["2022postEE"]},
    }
    analysis_path = root / "analysis.json"
    analysis_path.write_text(json.dumps(analysis, indent=2) + "\n")
    return analysis_path


DEMO_CHUNK = 100_000


def demo_options(folder: str | Path, executor: str = "futures", workers: int | None = None) -> RunOptions:
    """The run the demo makes: its analysis JSON into its dump, cut in DEMO_CHUNK chunks."""
    return RunOptions(
        json_analysis=str(Path(folder) / "analysis.json"),
        dump=str(Path(folder) / "output"),
        executor=executor,
        workers=workers,
        chunk=DEMO_CHUNK,
    )


def demo_command(options: RunOptions) -> list[str]:
    """The `coffea-dispatch run` command line of the demo's run, every option that differs from the command's
    defaults included (--chunk: a dump refuses another chunking), so that running it again resumes the dump."""
    command = ["coffea-dispatch", "run", "--json-analysis", options.json_analysis, "--dump", str(options.dump)]
    command += ["--chunk", str(options.chunk)]
    if options.executor != RunOptions.executor:
        command += ["--executor", options.executor]
    if options.workers is not None:
        command += ["-j", str(options.workers)]
    return command


def run_demo(folder: str | Path, events: int = 200_000, executor: str = "futures", workers: int | None = None):
    write_demo_inputs(folder, events)
    return run_analysis(demo_options(folder, executor, workers))
