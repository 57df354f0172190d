"""What a chunk's processor wrote into its staging folder, checked before anything is published
(`staged_entries`), and the identity of each output (size, mtime, checksum; a link's target) that its record
keeps, to tell later whether it was deleted, rewritten or damaged (`changed_outputs`).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path, PurePath
from typing import Any

from coffea_dispatch.dump.checkpoints import STAGED_OUTPUTS
from coffea_dispatch.errors import RefusedOutput

LINK = "link"  # an output that is a symbolic link is recorded as (LINK, its target)


def staged_entries(staging: Path) -> tuple[list[tuple[PurePath, str | None]], list[str]]:
    """What a chunk's processor wrote: (path below its output folder, link target or None) for each output,
    and the files it wrote beside that folder (`../x`), which are not published. Refuses anything else than
    files and links within the outputs, before anything moves."""
    outputs = staging / STAGED_OUTPUTS
    entries: list[tuple[PurePath, str | None]] = []
    for folder, folders, files in os.walk(outputs):
        here = Path(folder)
        for name in sorted(files + [d for d in folders if (here / d).is_symlink()]):
            path = here / name
            relative = path.relative_to(outputs)
            if path.is_symlink():
                entries.append((relative, _link_within(outputs, path, relative)))
            elif path.is_file():
                entries.append((relative, None))
            else:
                raise RefusedOutput(f"the processor wrote {relative}, which is not a file: it cannot be published")
    escaped = []
    for folder, _, files in os.walk(staging):
        here = Path(folder)
        if here == outputs or outputs in here.parents:
            continue
        escaped += [os.path.relpath(here / name, outputs) for name in sorted(files)]
    return entries, escaped


def _link_within(outputs: Path, link: Path, relative: PurePath) -> str:
    """A link the processor wrote, as a relative link that resolves to the same output once published."""
    target = os.readlink(link)
    resolved = os.path.normpath(os.path.join(link.parent, target))
    if resolved != str(outputs) and not resolved.startswith(str(outputs) + os.sep):
        raise RefusedOutput(
            f"the processor wrote {relative}, a symbolic link to {target}, outside its outputs: it cannot be "
            "published (write the file itself, or link to another file under output_location)"
        )
    return os.path.relpath(resolved, link.parent)


def file_digest(path: Path) -> str:
    """A checksum of the file's bytes (BLAKE2b, 128 bits): a file damaged in place, even one that keeps its
    size and parquet footer, no longer matches its record."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def file_identity(path: Path, with_digest: bool = False) -> tuple | None:
    """(size, mtime[, checksum]) of an output file; ("link", target) of an output that is a symbolic link."""
    if path.is_symlink():
        return (LINK, os.readlink(path))
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    identity = (info.st_size, info.st_mtime_ns)
    return (*identity, file_digest(path)) if with_digest else identity


def _output_changed(path: Path, recorded: tuple | None, verify: bool) -> bool:
    """Gone, another size, or (when the mtime moved, or `verify`) other bytes than when it was recorded."""
    current = file_identity(path)
    if current is None:
        return True
    if recorded is None:
        return False
    if LINK in (current[0], recorded[0]):
        return current != recorded
    if current[0] != recorded[0]:
        return True
    if len(recorded) < 3:  # a record of an older version: size and mtime only
        return current[1] != recorded[1]
    if current[1] == recorded[1] and not verify:
        return False  # untouched since written: resume does not reread every output
    return file_digest(path) != recorded[2]


def changed_outputs(dump: Path, record: dict[str, Any], verify: bool = False) -> list[str]:
    """The outputs of a completed chunk that are gone, or were rewritten or damaged since. `verify` compares
    the checksum of every output (check); otherwise only of those whose mtime moved (resume)."""
    stats = record.get("stats", {})
    return [o for o in record["outputs"] if _output_changed(dump / o, _as_tuple(stats.get(o)), verify)]


def _as_tuple(value) -> tuple | None:
    return tuple(value) if value is not None else None
