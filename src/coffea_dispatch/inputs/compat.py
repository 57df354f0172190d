"""The few places where coffea 0.7 (HiggsDNA's environments: awkward 1, uproot 4) and coffea 2025+ differ.

HiggsDNA's processors only run on coffea 0.7 (attribute assignment on events, the events factory's
partition key), so both generations are supported, and everything that differs between them lives here:
building NanoEvents, silencing coffea's progress bars, and the file identifier coffea's Runner gives a chunk.
"""

from __future__ import annotations

import json
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import coffea
from coffea.nanoevents import NanoAODSchema, NanoEventsFactory


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
    if LEGACY_COFFEA:
        return _legacy_events(handle, treename, entry_start, entry_stop, schema, metadata, branches)
    with _typenames_of_selected(handle[treename], branches, schema):
        return _virtual_events(handle, treename, entry_start, entry_stop, schema, metadata, branches, preload)


def _virtual_events(handle, treename, entry_start, entry_stop, schema, metadata, branches, preload):
    options: dict[str, Any] = {
        "treepath": treename,
        "entry_start": entry_start,
        "entry_stop": entry_stop,
        "schemaclass": schema,
        "metadata": metadata,
        # a set lookup per branch: uproot's filter_name matches every branch against every name as a pattern
        "iteritems_options": {"filter_branch": _named(frozenset(branches))} if branches is not None else {},
        "mode": "virtual",
        "preload": preload,
    }
    return NanoEventsFactory.from_root(handle, **options).events()


def _named(names: frozenset[str]):
    return lambda branch: branch.name in names


@contextmanager
def _typenames_of_selected(tree, branches: list[str] | None, schema: type) -> Iterator[None]:
    """coffea 2025+'s from_root asks the TTree for the type name of every branch, though it reads only
    `branches` and only the EDM4hep-like schemas look at type names: on a file just opened that is 0.39 of
    0.48 s per file at 2,656 branches (measured), as much as a small chunk's processing. NanoAOD schemas get
    the type names of the branches they read. The TTree is this process's cached object for the open file;
    the override lives for one call."""
    if branches is None or not issubclass(schema, NanoAODSchema):
        yield
        return
    tree.typenames = lambda **_: {name: tree[name].typename for name in branches}
    try:
        yield
    finally:
        tree.__dict__.pop("typenames", None)  # pop: threads of one Dask worker may share the tree


# coffea 0.7: the NanoEvents form of each (file, tree, branch selection), as JSON, most recent last
_LEGACY_FORMS: OrderedDict[tuple, str] = OrderedDict()
LEGACY_FORMS_KEPT = 16


def _legacy_events(handle, treename, entry_start, entry_stop, schema, metadata, branches):
    """coffea 0.7's `NanoEventsFactory.from_root`, the same steps and the same partition key, except that the
    file's form is built once per file and process instead of once per chunk: that pass over the branches
    took 0.46 s of a 0.88 s chunk on a 1,500-branch file (measured), and coffea's Runner pays it every chunk."""
    from coffea.nanoevents.mapping import TrivialUprootOpener, UprootSourceMapping

    tree = handle[treename]
    partition_key = (str(tree.file.uuid), tree.object_path, f"{entry_start}-{entry_stop}")
    opener = TrivialUprootOpener({partition_key[0]: tree.file.file_path}, {})
    mapping = UprootSourceMapping(opener, cache={}, access_log=None)
    mapping.preload_column_source(partition_key[0], partition_key[1], tree)
    key = (*partition_key[:2], tree.file.file_path, tuple(branches) if branches is not None else None)
    form = _LEGACY_FORMS.get(key)
    if form is None:
        options = {"filter_name": branches} if branches is not None else {}
        form = json.dumps(mapping._extract_base_form(tree, iteritems_options=options))
        _LEGACY_FORMS[key] = form
        while len(_LEGACY_FORMS) > LEGACY_FORMS_KEPT:
            _LEGACY_FORMS.popitem(last=False)
    else:
        _LEGACY_FORMS.move_to_end(key)
    # a fresh copy each chunk: the schema rewrites the form it is given
    return NanoEventsFactory._from_mapping(
        mapping, partition_key, json.loads(form), None, None, schema, metadata
    ).events()


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
