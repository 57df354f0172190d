"""When a run fails, and what it says: a chunk that failed for good, an unreadable input without --skipbadfiles,
two chunks that wrote one output, workers that died (a chunk retried, a killer chunk with the command that
reruns it alone, a Dask bystander run here), files written beside the output folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from coffea.processor import accumulate

from coffea_dispatch.errors import BadInputFile, DispatchError
from coffea_dispatch.inputs.analysis import Analysis
from coffea_dispatch.inputs.planning import (
    FileTask,
    Plan,
    refuse_bad_input,
)
from coffea_dispatch.options import RunOptions
from coffea_dispatch.pipeline.chunk import (
    FAILURES_KEY,
    NOT_RUN_KEY,
    ChunkRunner,
    describe_item,
)
from coffea_dispatch.pipeline.diagnose import Diagnosis, write_reproducer


def raise_first_failure(collected: dict[str, Any]) -> None:
    """A chunk failed for good (processor bug, output not writable): the run fails with that error."""
    failures = collected.get(FAILURES_KEY)
    if failures:
        not_run = collected.get(NOT_RUN_KEY, 0)
        if not_run:
            failures[0].message += f" ({not_run} other chunk(s) were not started after this failure)"
        raise failures[0]


def fail_on_unreadable(bad_files: dict[str, set[tuple[str, str]]]) -> None:
    """Without --skipbadfiles, a file that broke while being read fails the run, once the rest is done."""
    if not bad_files:
        return
    problems = sorted(problem for per_sample in bad_files.values() for problem in per_sample)
    filename, reason = problems[0]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    raise DispatchError(f"{filename}: {reason}{more}; use --skipbadfiles to skip unreadable files")


def fail_on_overwritten_outputs(written: dict[str, int]) -> None:
    """Two chunks that wrote the same output path: the second replaced the first, whose events are lost."""
    clashes = sorted(path for path, count in written.items() if count > 1)
    if clashes:
        more = f" (and {len(clashes) - 1} more)" if len(clashes) > 1 else ""
        raise DispatchError(
            f"{written[clashes[0]]} chunks wrote the same output {clashes[0]}{more}, so all but one were overwritten: "
            "the processor names its outputs ambiguously; give each chunk's output a name of its own (HiggsDNA "
            "names them by the events' partition key: file UUID and entry range), then rerun with --overwrite"
        )


def escaped_notes(escaped: dict[str, int]) -> list[str]:
    """Files a processor wrote beside its output_location are not outputs of the run: said, never kept."""
    if not escaped:
        return []
    return [
        f"the processor wrote {sum(escaped.values())} file(s) outside its output_location (e.g. {min(escaped)}): "
        "they were removed; write outputs under output_location"
    ]


def is_bystander(diagnosis: Diagnosis) -> bool:
    return diagnosis.fine_alone and not isinstance(diagnosis.item, FileTask)


def rerun_bystanders(diagnoses: list, runner: ChunkRunner, collected: dict[str, Any]) -> tuple[dict, list[str]]:
    """Dask blames every chunk running on a worker that dies: a chunk that runs fine alone, within the workers'
    memory, only shared a worker with the killer (or the worker died for another reason). It is run here, in
    this process, so it is neither lost nor reported as a failure."""
    bystanders = [d.item for d in diagnoses if is_bystander(d)]
    if not bystanders:
        return collected, []
    collected = accumulate([collected, *(runner(item) for item in bystanders)])
    return collected, [
        f"{describe_item(item)} was running on a Dask worker that died; it runs fine alone, so it was run here"
        for item in bystanders
    ]


def _same_chunk(a, b) -> bool:
    if isinstance(a, FileTask) or isinstance(b, FileTask):
        return False
    return (a.filename, a.entrystart, a.entrystop) == (b.filename, b.entrystart, b.entrystop)


def with_reproducer(diagnosis, analysis: Analysis, options: RunOptions):
    """The single-file analysis JSON and the command that rerun a failed chunk alone."""
    folder = Path(options.dump) / ".diagnosis" if options.dump else Path("coffea-dispatch-diagnosis")
    diagnosis.analysis_json, diagnosis.reproduce_command = write_reproducer(
        analysis, diagnosis.item, options.chunk, options.dump, folder
    )
    return diagnosis


def dead_worker_notes(dead: list) -> list[str]:
    """Chunks whose `futures` worker died once and that completed in a fresh one; a FileTask whose describing
    killed two workers stops the run (no chunk of it is known)."""
    notes = []
    for death in dead:
        if isinstance(death.item, FileTask):
            if death.final:
                raise DispatchError(f"{death.item.filename}: reading its metadata killed two workers ({death.cause})")
            continue
        if not any(d.final and _same_chunk(d.item, death.item) for d in dead):
            notes.append(
                f"the worker running {describe_item(death.item)} died ({death.cause}); the chunk was run again "
                "in a fresh worker"
            )
    return notes


def killed_chunk(death, analysis: Analysis, options: RunOptions):
    """A chunk that killed the fresh worker it was retried in too: said as Dask's killer chunks are, with the
    command that reruns it alone; the other chunks are done."""
    verdict = (
        f"killed the worker running it twice ({death.cause}): rerun the same command with a smaller --chunk or "
        "fewer -j (the other chunks are done)"
    )
    return with_reproducer(Diagnosis(death.item, verdict), analysis, options)


def refuse_first_bad_input(plan: Plan, samples: dict[str, list[str]]) -> None:
    """An input a worker found unusable (FileTask) fails the run as planning would have: the first one in the
    sample JSON's order, in the same words."""
    for sample, filenames in samples.items():
        for filename in filenames:
            reason = plan.bad_files.get(sample, {}).get(filename)
            if reason is not None:
                refuse_bad_input(BadInputFile(filename, reason))
