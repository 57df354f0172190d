"""The jobs of an analysis JSON: each runs `coffea-dispatch run` on an analysis JSON of its own (the submitter's
options, its files, the iterative executor), the command a user reruns by hand to reproduce it.
"""

from __future__ import annotations

import functools
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coffea_dispatch.batch.submission import Submission, Work, accumulator_path
from coffea_dispatch.identity import identity_of


@dataclass(frozen=True)
class AnalysisJobs:
    """`batch.submission.JobSpec` for an analysis JSON (`inputs.analysis.Analysis`) run with `arguments`."""

    analysis: Any
    arguments: list[str] = field(default_factory=list)  # the user's own options (`options.job_arguments`)
    dump: str | None = None
    digest: str | None = None  # a Runner's: never an analysis JSON's
    inputs_digest: str | None = None  # `content_digest`

    @property
    def name(self) -> str:
        return self.analysis.name

    def work(self, samples: dict[str, list[str]]) -> Work:
        """Each file as a sample JSON lists it: its replicas and the entries to read of it travel with it."""
        return {sample: {f: self.analysis.sample_entry(f) for f in files} for sample, files in samples.items()}

    def content_digest(self, samples: dict[str, list[str]]) -> str | None:
        """What the jobs read beyond their files' names, the same in every process: the entries of files read in
        part, trees, steps and the samples' dataset metadata (None when there is none, as for a submission of an
        older version). A submission is continued only for the same: never with another xsec's jobs."""
        work = self.work(samples)
        plain = all(isinstance(entry, str | list) for files in work.values() for entry in files.values())
        metadata = {sample: self.analysis.metadata[sample] for sample in samples if self.analysis.metadata.get(sample)}
        return None if plain and not metadata else identity_of({"work": work, "metadata": metadata}, "work").digest

    def write_shared(self, submission: Submission) -> None:
        pass  # every job's analysis JSON is self-contained

    @functools.cached_property
    def _template(self) -> str:
        """The analysis JSON, serialized once: the jobs' differ only by their samplejson."""
        return json.dumps(self.analysis.json_content("@SAMPLEJSON@"), indent=2) + "\n"

    def analysis_text(self, sample_json_name: str) -> str:
        return self._template.replace('"@SAMPLEJSON@"', json.dumps(sample_json_name), 1)

    def command(self, analysis_json: str, record: str) -> list[str]:
        return job_argv(self.arguments, analysis_json, record)


def job_argv(base_argv: list[str], analysis_json: str | Path, record: str | Path) -> list[str]:
    """The user's own options, with the per-job analysis JSON and the iterative executor: one job, one process.
    The interpreter is named by absolute path, so the job runs in the same environment as the submitter.
    Each job saves its own accumulator beside its record (`--wait` and `merge` sum them) and draws no plot."""
    return [
        sys.executable,
        "-m",
        "coffea_dispatch.cli",
        "run",
        *base_argv,
        "--json-analysis",
        str(analysis_json),
        "--executor",
        "iterative",
        "--no-progress",
        "--no-plot",
        "--save",
        accumulator_path(record),
        "--job-record",
        str(record),
    ]


def base_arguments(command: list[str]) -> list[str]:
    """The user's own options in a job's command (what `job_argv` put between `run` and the job's own): how a
    manifest of an older version, which does not keep them, says what its jobs run with."""
    return command[4 : command.index("--json-analysis")] if "--json-analysis" in command else []
