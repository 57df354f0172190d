"""The one thing the chunk runner knows of resume, as coffea's CheckpointerABC is to its executors: it tells
what it completed, and asks where a chunk's outputs go until they are complete.

The runner gets one at construction. `Checkpoints` keeps nothing (a run without --dump); the dump's ledger
(`coffea_dispatch.ledger.Ledger`) records each input's plan and each chunk's result and outputs, so a rerun
skips what is done.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class Checkpoints:
    """Keeps nothing: every chunk runs every time."""

    def record_input(self, sample: str, filename: str, chunks: list[tuple[int, int]], identity: Any) -> None:
        """An input described on a worker, and its chunks: recorded before any of them is."""

    def record_chunk(self, item, result: dict[str, Any], outputs: list[str]) -> None:
        """A chunk whose processor returned and whose outputs are in place."""

    def staging(self, item, output_location: Any) -> Path | None:
        """A private folder the processor writes the chunk's outputs into (None: it writes where it likes)."""
        return None

    def publish(self, staging: Path) -> list[str]:
        """Move the staged outputs to their final place; their paths, relative to it."""
        return []
