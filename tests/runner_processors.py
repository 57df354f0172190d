"""Processors written as a coffea user writes them (not ours): what coffea's Runner runs on our executors.

Kept importable (tests/ on sys.path, PYTHONPATH for batch jobs); integers only, so accumulators from any
executor compare exactly with the iterative one, and the set of chunks proves each ran once.
"""

from __future__ import annotations

import os
import signal
import time

import awkward as ak
import numpy as np
from coffea import processor

SLOW_DATASET_VARIABLE = "RUNNER_TEST_SLOW_DATASET"  # its chunks sleep: a job array still runs when interrupted
KILLING_DATASET_VARIABLE = "RUNNER_TEST_KILLING_DATASET"  # its chunks kill their worker, as the OOM killer would
UNREADABLE_DATASET_VARIABLE = "RUNNER_TEST_UNREADABLE_DATASET"  # its chunks raise OSError, as a bad file would


class CountingProcessor(processor.ProcessorABC):
    def process(self, events):
        dataset = events.metadata["dataset"]
        if os.environ.get(KILLING_DATASET_VARIABLE) == dataset:
            os.kill(os.getpid(), signal.SIGKILL)
        if os.environ.get(UNREADABLE_DATASET_VARIABLE) == dataset:
            raise OSError(f"{events.metadata['filename']}: cannot be read")
        if os.environ.get(SLOW_DATASET_VARIABLE) == dataset:
            time.sleep(float(os.environ.get("RUNNER_TEST_SLOW_SECONDS", "20")))
        photons = ak.num(events.Photon_pt)
        chunk = (events.metadata["filename"], events.metadata["entrystart"], events.metadata["entrystop"])
        return {
            dataset: {
                "events": len(events),
                "event_sum": int(np.sum(np.asarray(events.event, dtype=np.int64))),
                "photons": int(ak.sum(photons)),
            },
            "chunks": {chunk},
        }

    def postprocess(self, accumulator):
        return accumulator


class PhotonsAbove(processor.ProcessorABC):
    """A configured processor: its cut is state (an attribute), as a user's cuts, working points and sets of
    triggers are; two instances of one class give different numbers."""

    def __init__(self, ptmin: float, triggers: frozenset = frozenset({"HLT_Diphoton30", "HLT_Photon200"})):
        self.ptmin = ptmin
        self.triggers = set(triggers)

    def process(self, events):
        passing = ak.sum(events.Photon_pt > self.ptmin, axis=1) >= 1
        return {events.metadata["dataset"]: {"events": len(events), "passing": int(ak.sum(passing))}}

    def postprocess(self, accumulator):
        return accumulator
