"""The one thing the chunk runner knows of resume, as coffea's CheckpointerABC is to its executors: it tells
what it completed, and asks where a chunk's outputs go until they are complete.

The runner gets one at construction. `Checkpoints` keeps nothing (a run without --dump); the dump's ledger
(`coffea_dispatch.dump.ledger.Ledger`) records each input's plan and each chunk's result and outputs, so a rerun
skips what is done.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# the processor's output folder inside a chunk's staging folder: what it writes beside it (`../x`) has escaped
STAGED_OUTPUTS = "out"


@dataclass
class Published:
    """What publishing a chunk's staging folder did: the dump-relative paths now in place, and the files the
    processor wrote outside its output folder (relative to it, `../x.parquet`), which were removed."""

    outputs: list[str] = field(default_factory=list)
    escaped: list[str] = field(default_factory=list)


class Checkpoints:
    """Keeps nothing: every chunk runs every time."""

    def record_input(
        self, sample: str, filename: str, chunks: list[tuple[int, int]], identity: Any, totals: dict | None = None
    ) -> None:
        """An input described on a worker, its chunks and its totals (weights.input_totals): recorded before
        any of its chunks is."""

    def record_chunk(self, item, result: dict[str, Any], outputs: list[str]) -> None:
        """A chunk whose processor returned and whose outputs are in place."""

    def staging(self, item) -> Path | None:
        """A private folder for the chunk (None: the processor writes where it likes); the processor's output
        folder is its STAGED_OUTPUTS subfolder. Leftovers of an earlier attempt at the chunk that did not
        finish are removed first, whatever their names."""
        return None

    def publish(self, staging: Path) -> Published:
        """Move the staged outputs to their final place."""
        return Published()
