"""What normalisation needs from an input and from each chunk read of it: the sum of generator weights
(simulation) or the luminosity blocks (data).

A cross-section is a count divided by the sum of generator weights of the events read. NanoAOD keeps each
file's sum, over every event generated before any skim, in its `Runs` tree (`genEventSumw`; older files
`genEventSumw_`); a file without that tree is summed over its `genWeight`s. Each chunk sums the weights of
exactly its events, so the run can tell how much of a sample's weight it read, and a file read whole whose
two sums disagree (a skimmed or damaged input) is named. Data has no `genWeight`: its chunks count the events
of each (run, luminosity block) pair they read, and the input how many each block holds, so that a block
counts as read only when all of its events were (a chunk boundary, --max or a job array can split one).
"""

from __future__ import annotations

import awkward as ak
import numpy as np
import uproot

from coffea_dispatch.inputs.files import branch_names, derived, open_file

GEN_WEIGHT = "genWeight"
RUN, LUMI = "run", "luminosityBlock"
RUNS_TREE = "Runs"
RUNS_SUMW = ("genEventSumw", "genEventSumw_")  # NanoAOD >= v7, and older files

# a chunk's count: (entries, sum of generator weights or None, its (run, lumi) codes with the events it read of
# each, as (code, events) pairs, or None); records of earlier versions hold the codes alone
ChunkCount = tuple[int, float | None, tuple[tuple[int, int], ...] | None]


def _column(tree, name: str, start: int, stop: int) -> np.ndarray:
    """One branch (TTree) or field (RNTuple) over [start, stop), as numpy, on uproot 4 and 5 (a TTree's branch
    directly: 2 ms for 100,000 entries, 11 ms through `arrays`)."""
    if isinstance(tree, uproot.TTree):
        return tree[name].array(entry_start=start, entry_stop=stop, library="np")
    return np.asarray(ak.to_numpy(tree.arrays([name], entry_start=start, entry_stop=stop)[name]))


def _kind(tree) -> str:
    """ "mc" (a genWeight branch), "data" (run and luminosityBlock, no genWeight) or "" (neither)."""
    names = set(branch_names(tree))
    if GEN_WEIGHT in names:
        return "mc"
    return "data" if {RUN, LUMI} <= names else ""


def lumi_events(tree, start: int, stop: int) -> tuple[tuple[int, int], ...]:
    """The distinct (run, luminosity block) pairs of the entries, each as one 64-bit code, with how many of
    the entries are of it."""
    runs = _column(tree, RUN, start, stop).astype(np.uint64)
    lumis = _column(tree, LUMI, start, stop).astype(np.uint64)
    codes, counts = np.unique((runs << np.uint64(32)) | lumis, return_counts=True)
    return tuple((int(code), int(count)) for code, count in zip(codes, counts, strict=True))


def runs_sumw(filename: str, timeout: float | None = None) -> float | None:
    """The file's `Runs` tree's sum of generator weights (summed over its runs); None without one."""
    directory = open_file(filename, timeout)
    if RUNS_TREE not in directory:
        return None
    runs = directory[RUNS_TREE]
    names = set(runs.keys()) if hasattr(runs, "keys") else set()
    for name in RUNS_SUMW:
        if name in names:
            return float(np.sum(_column(runs, name, 0, runs.num_entries), dtype=np.float64))
    return None


def input_totals(filename: str, tree, timeout: float | None = None) -> dict:
    """What the whole input holds: {"sumw" (the Runs tree's, else its events'), "sumw_events" (its events'
    genWeight: what a part read is a share of), "source"} for simulation, {"lumis"} for data, {} for a file
    with neither (the weights of its chunks are then not counted). One branch read: 10 ms at 500,000 events,
    on 430 ms of describing a 1,500-branch file (bench/completeness_cost.py)."""
    kind = _kind(tree)
    entries = int(tree.num_entries)
    if kind == "mc":
        events = float(np.sum(_column(tree, GEN_WEIGHT, 0, entries), dtype=np.float64))
        runs = runs_sumw(filename, timeout)
        source = RUNS_TREE if runs is not None else GEN_WEIGHT
        return {"sumw": runs if runs is not None else events, "sumw_events": events, "source": source}
    if kind == "data":
        blocks = lumi_events(tree, 0, entries)
        return {"lumis": len(blocks), "lumi_events": [list(block) for block in blocks]}
    return {}


def chunk_count(filename: str, tree, start: int, stop: int) -> ChunkCount:
    """What one chunk read: its entries, and the sum of its generator weights or its luminosity blocks."""
    memo = derived(filename)
    key = ("weights kind", getattr(tree, "object_path", ""))
    if key not in memo:
        memo[key] = _kind(tree)
    if memo[key] == "mc":
        return (stop - start, float(np.sum(_column(tree, GEN_WEIGHT, start, stop), dtype=np.float64)), None)
    if memo[key] == "data":
        return (stop - start, None, lumi_events(tree, start, stop))
    return (stop - start, None, None)


def valid_totals(totals) -> bool:
    """A totals dict as `input_totals` makes it (the metadata cache and the dump's records are checked)."""
    if not isinstance(totals, dict) or not set(totals) <= {"sumw", "sumw_events", "source", "lumis", "lumi_events"}:
        return False
    blocks = totals.get("lumi_events", [])
    if not isinstance(blocks, list) or not all(_pair_of_ints(block) for block in blocks):
        return False
    numbers = [totals.get(k) for k in ("sumw", "sumw_events") if k in totals]
    lumis = totals.get("lumis", 0)
    return (
        all(isinstance(x, int | float) and not isinstance(x, bool) and np.isfinite(x) for x in numbers)
        and totals.get("source", RUNS_TREE) in (RUNS_TREE, GEN_WEIGHT)
        and type(lumis) is int
        and lumis >= 0
    )


def _pair_of_ints(value) -> bool:
    return isinstance(value, list | tuple) and len(value) == 2 and all(type(n) is int for n in value)


def blocks_read(counts, whole: bool, blocks) -> set[int]:
    """The (run, luminosity block) codes all of whose events the `counts` (ChunkCounts of one input) read:
    those the chunks read as many events of as the input holds (`blocks`: input_totals' lumi_events); every
    block touched when the input was read `whole`; none of a part read that says no event counts (records
    or a metadata cache of an earlier version), rather than one counted twice by two dumps sharing it."""
    read: dict[int, int | None] = {}
    for count in counts:
        for block in count[2] or ():
            if not _pair_of_ints(block):
                read[block] = None  # an earlier version's record: the block's code alone
                continue
            before = read.get(block[0], 0)
            read[block[0]] = None if before is None else before + block[1]
    if whole:
        return set(read)
    held = {block[0]: block[1] for block in blocks or () if _pair_of_ints(block)}
    return {code for code, events in read.items() if events is not None and code in held and events >= held[code]}
