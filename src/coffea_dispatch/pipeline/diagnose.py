"""KilledWorker diagnosis: rerun the chunk that killed the workers in a fresh local process, as an expert would.

Dask only says "KilledWorker (likely a segfault or out-of-memory issue)". Rerunning that exact chunk
(file, entry range) with the same processor tells which: the real exception and traceback, the signal that
killed the process, or the memory it needs against what the workers have.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cloudpickle
from coffea.processor.executor import WorkItem

from coffea_dispatch.dump.checkpoints import Checkpoints
from coffea_dispatch.dump.relocate import relocated
from coffea_dispatch.inputs.analysis import sample_json_text
from coffea_dispatch.inputs.filesets import json_metadata
from coffea_dispatch.output import short_hash
from coffea_dispatch.pipeline.chunk import ChunkRunner, ProcessorFailure

GB = 10**9  # decimal, as Dask reads --memory 10GB
MEMORY_VERDICT_FRACTION = 0.8  # a Nanny terminates a worker at 95% of its limit; 80% already is a warning
FINE_ALONE = "runs fine alone"


@dataclass
class Diagnosis:
    """What rerunning one chunk alone showed."""

    item: WorkItem
    verdict: str
    traceback_text: str = ""
    peak_rss_bytes: int = 0
    reproduce_command: str = ""
    analysis_json: Path | None = None
    fine_alone: bool = False  # it ran to its end within the workers' memory: it died beside another chunk

    def describe(self) -> str:
        where = f"{self.item.filename} (entries {self.item.entrystart}-{self.item.entrystop})"
        lines = [f"{where} {self.verdict}"]
        if self.reproduce_command:
            lines.append(f"reproduce it alone: {self.reproduce_command}")
        return "\n".join(lines)


def _suggest_memory(peak_bytes: int) -> str:
    return f"{max(1, -(-int(peak_bytes * 1.5) // GB))}GB"


def _verdict_from_exit(status: int, peak_bytes: int, worker_memory: int | None, result: dict) -> tuple[str, str]:
    if os.WIFSIGNALED(status):
        name = signal.Signals(os.WTERMSIG(status)).name
        return f"kills the process with signal {name}", ""
    if result.get("raised"):
        return f"raises {result['raised']}", result.get("traceback", "")
    peak_gb = peak_bytes / GB
    if worker_memory and peak_bytes > MEMORY_VERDICT_FRACTION * worker_memory:
        return (
            f"needs about {peak_gb:.1f} GB (peak RSS) but workers have {worker_memory / GB:.1f} GB: "
            f"use --memory {_suggest_memory(peak_bytes)} or a smaller --chunk",
            "",
        )
    limit = f" within the workers' {worker_memory / GB:.1f} GB" if worker_memory else ""
    return (
        f"{FINE_ALONE} (peak RSS {peak_gb:.1f} GB{limit}): the workers died for another reason "
        "(node preempted, killed by the batch system, network); rerun, and check the worker logs if it recurs",
        "",
    )


def rerun_chunk(runner: ChunkRunner, item: WorkItem, worker_memory: int | None, timeout: float = 3600) -> Diagnosis:
    """Run `item` alone in a fresh `python -m coffea_dispatch.pipeline.diagnose` and judge how it ended."""
    with tempfile.TemporaryDirectory(prefix="coffea-dispatch-diagnose-") as folder:
        job, result_path = Path(folder) / "job.pkl", Path(folder) / "result.json"
        job.write_bytes(cloudpickle.dumps((_without_outputs(runner, Path(folder) / "discarded"), item)))
        process = subprocess.Popen(
            [sys.executable, "-m", "coffea_dispatch.pipeline.diagnose", str(job), str(result_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": _pythonpath()},
            preexec_fn=_no_core_file,
        )
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = status  # already reaped; keep Popen from waiting again
        result = json.loads(result_path.read_text()) if result_path.exists() else {}
    peak = usage.ru_maxrss * 1024  # kilobytes on Linux
    verdict, traceback_text = _verdict_from_exit(status, peak, worker_memory, result)
    fine = verdict.startswith(FINE_ALONE)
    return Diagnosis(item, verdict, traceback_text, peak, fine_alone=fine)


def _no_core_file() -> None:
    """A chunk that crashes its process must not leave a core file of the rerun (hundreds of MB) in the user's
    folder where core dumps are enabled: the verdict needs only its signal."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _without_outputs(runner: ChunkRunner, discarded: Path) -> ChunkRunner:
    """The same processor, told not to write into the dump (HiggsDNA's convention: output_location None; any
    other path it keeps into the dump points at `discarded`): a diagnosis must not add the failed chunk's
    output to the dump behind the user's back."""
    probe = copy.copy(runner.processor)
    if runner.output_places:
        probe = relocated(probe, runner.output_root, str(discarded), runner.output_places)
    if hasattr(probe, "output_location"):
        probe.output_location = None
    return dataclasses.replace(runner, processor=probe, checkpoints=Checkpoints(), output_places=[])


def _pythonpath() -> str:
    return os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))


def write_reproducer(analysis, item: WorkItem, chunk: int, dump: str | None, folder: Path) -> tuple[Path, str]:
    """A single-file analysis JSON for the chunk's file, and the one command that reruns it iteratively."""
    target = folder / f"{Path(item.filename).stem}-{short_hash(item.filename, 8)}"
    target.mkdir(parents=True, exist_ok=True)
    files = [analysis.sample_entry(item.filename)]  # its replicas, entries, tree, steps and metadata with it
    metadata = json_metadata(analysis.metadata.get(item.dataset, {}))
    sample = {"files": files, "metadata": metadata} if metadata else files
    (target / "samples.json").write_text(sample_json_text({item.dataset: sample}))
    content = analysis.json_content("samples.json")
    path = target / "analysis.json"
    path.write_text(json.dumps(content, indent=2) + "\n")
    command = f"coffea-dispatch run --json-analysis {path} --executor iterative --chunk {chunk}"
    if dump:
        command += f" --dump {dump}"
    return path, command


def _child(job: str, result: str) -> int:
    """In the fresh process: run the chunk, record an exception if there is one."""
    runner, item = cloudpickle.loads(Path(job).read_bytes())
    try:
        runner.process(item)
    except ProcessorFailure as failure:
        Path(result).write_text(json.dumps({"raised": failure.error, "traceback": failure.traceback_text}))
        return 3
    Path(result).write_text(json.dumps({"raised": None}))
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1], sys.argv[2]))
