"""Why a batch job failed, from what is known of its end: its own record (exit code, signal), the state the
scheduler says it ended in, and the end of its error file (where schedulers and the kernel write why they
killed it). The cause decides what a resubmission should change; `status` shows it.
"""

from __future__ import annotations

from dataclasses import dataclass

from coffea_dispatch.batch.backend import BatchBackend, Cause, EndReport
from coffea_dispatch.batch.job import JobRecord
from coffea_dispatch.errors import EXIT_BAD_INPUT

# what any Linux job may say when memory ran out (the kernel's OOM killer, Python's MemoryError), lower case
MEMORY_MESSAGES = {"out of memory": Cause.MEMORY, "oom-kill": Cause.MEMORY, "memoryerror": Cause.MEMORY}
PROCESSOR_EXIT = 1  # ProcessorFailure's exit code: the user's code raised


@dataclass(frozen=True)
class Triage:
    cause: Cause
    evidence: str  # what says so, in a few words
    peak_mb: float | None = None  # the largest memory use measured (scheduler, kill message or job record)


def triage(
    backend: BatchBackend,
    record: JobRecord | None,
    end_state: str | None,
    error_text: str,
    report: EndReport | None = None,
) -> Triage:
    """The most specific cause the evidence supports: what killed the job outranks the job's own exit code, and
    the scheduler's own codes (`report`) outrank everything."""
    found = _cause(backend, record, end_state, error_text, report)
    measured = [
        report.peak_mb if report else None,
        backend.peak_mb_in(f"{error_text}\n{report.evidence if report else ''}"),
        record.peak_rss_mb if record else None,
    ]
    return Triage(found.cause, found.evidence, next((mb for mb in measured if mb), None))


def _cause(
    backend: BatchBackend, record: JobRecord | None, end_state: str | None, error_text: str, report: EndReport | None
) -> Triage:
    if report is not None and report.cause is not None:
        return Triage(report.cause, report.evidence)
    lines = [line.strip() for line in error_text.splitlines() if line.strip()]
    if report is not None and report.evidence:  # the scheduler's reason is the last word on the job
        lines.append(report.evidence)
    messages = {**MEMORY_MESSAGES, **backend.end_messages}
    for line in reversed(lines):
        cause = next((c for words, c in messages.items() if words in line.lower()), None)
        if cause is not None:
            return Triage(cause, line)
    native = (end_state or "").strip().upper()
    if native in backend.end_causes:
        return Triage(backend.end_causes[native], f"{backend.name} ended it as {native}")
    last = lines[-1] if lines else None
    if record is not None and record.exit_code == PROCESSOR_EXIT:
        return Triage(Cause.PROCESSOR, last or "exit code 1")
    if record is not None and record.exit_code == EXIT_BAD_INPUT:
        return Triage(Cause.INPUT, last or f"exit code {EXIT_BAD_INPUT}")
    if record is not None and record.signal:
        return Triage(Cause.UNKNOWN, f"killed by signal {record.signal}")
    return Triage(Cause.UNKNOWN, last or "no record and no message")
