"""The few places where coffea 0.7 (HiggsDNA's environments: awkward 1, uproot 4) and coffea 2025+ differ.

HiggsDNA's processors only run on coffea 0.7 (attribute assignment on events, the events factory's
partition key), so both generations are supported, and everything that differs between them lives here:
building NanoEvents, silencing coffea's progress bars, and the file identifier coffea's Runner gives a chunk.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import coffea
from coffea.nanoevents import NanoEventsFactory


def _major(version: str) -> int:
    digits = version.split(".")[0]
    return int(digits) if digits.isdigit() else 0


# coffea 0.7.x: lazy NanoEvents with a runtime cache, no `mode`/`preload`, awkward 1, uproot 4
LEGACY_COFFEA = _major(coffea.__version__) < 2023


def file_uuid(tree) -> bytes:
    """The file's UUID as coffea's Runner records it for a chunk (WorkItem.fileuuid): raw bytes."""
    return tree.file.fUUID


def fileuuid_metadata(fileuuid: bytes | str) -> str:
    """`events.metadata["fileuuid"]` as coffea's Runner sets it (both generations): the UUID as text."""
    if isinstance(fileuuid, bytes):
        return str(uuid.UUID(bytes=fileuuid)) if fileuuid else ""
    return fileuuid


def build_events(
    handle,
    *,
    treename: str,
    entry_start: int,
    entry_stop: int,
    schema: type,
    metadata: dict[str, Any],
    branches: list[str] | None,
    preload: list[str] | None,
):
    """NanoEvents for one chunk of an open file, reading only `branches` (None: all).

    On coffea 0.7 the events are lazy (read when a column is touched) and carry the same partition key as
    under coffea's Runner (file UUID, tree path, entry range), from which HiggsDNA names its outputs.
    On coffea 2025+ they are virtual arrays, with `preload` read in one bulk call.
    """
    options: dict[str, Any] = {
        "treepath": treename,
        "entry_start": entry_start,
        "entry_stop": entry_stop,
        "schemaclass": schema,
        "metadata": metadata,
        "iteritems_options": {"filter_name": branches} if branches is not None else {},
    }
    if not LEGACY_COFFEA:
        options.update(mode="virtual", preload=preload)
    return NanoEventsFactory.from_root(handle, **options).events()


@contextmanager
def coffea_progress(shown: bool) -> Iterator[None]:
    """coffea's executors draw their bars whatever `status` says: silence them when asked to."""
    if shown:
        yield
        return
    if LEGACY_COFFEA:  # 0.7 builds a rich Progress per call through coffea.processor.executor.rich_bar
        from coffea.processor import executor as coffea_executor
        from rich.progress import Progress

        previous = coffea_executor.rich_bar
        coffea_executor.rich_bar = lambda: Progress(disable=True)
        try:
            yield
        finally:
            coffea_executor.rich_bar = previous
        return
    from coffea.util import coffea_console

    previous_quiet = coffea_console.quiet
    coffea_console.quiet = True
    try:
        yield
    finally:
        coffea_console.quiet = previous_quiet
