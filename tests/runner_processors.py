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
# its chunks raise FileNotFoundError, as a bad file would: the one error every coffea 0.7's skipbadfiles skips
UNREADABLE_DATASET_VARIABLE = "RUNNER_TEST_UNREADABLE_DATASET"


class CountingProcessor(processor.ProcessorABC):
    def process(self, events):
        dataset = events.metadata["dataset"]
        if os.environ.get(KILLING_DATASET_VARIABLE) == dataset:
            os.kill(os.getpid(), signal.SIGKILL)
        if os.environ.get(UNREADABLE_DATASET_VARIABLE) == dataset:
            raise FileNotFoundError(f"{events.metadata['filename']}: cannot be read")
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


class EveryEventOnce(processor.ProcessorABC):
    """CountingProcessor under any schema (coffea_dispatch.run reads NanoAOD's, the Runner what it is given): the
    events and photons of each dataset, and each event's (file, entry) range, so that summing two runs shows
    every event read exactly once."""

    def process(self, events):
        dataset = events.metadata["dataset"]
        fields = set(events.fields)
        photons = ak.num(events.Photon.pt) if "Photon" in fields else ak.num(events.Photon_pt)
        start, stop = events.metadata["entrystart"], events.metadata["entrystop"]
        return {
            dataset: {
                "events": len(events),
                "event_sum": int(np.sum(np.asarray(events.event, dtype=np.int64))),
                "photons": int(ak.sum(photons)),
            },
            "ranges": [(events.metadata["filename"], start, stop)],
        }

    def postprocess(self, accumulator):
        return accumulator


CHUNK_SECONDS_VARIABLE = "RUNNER_TEST_CHUNK_SECONDS"  # every chunk sleeps this long: a run is still going when killed
CHUNK_LOG_VARIABLE = "RUNNER_TEST_CHUNK_LOG"  # each chunk processed (not loaded from a checkpoint) adds a line


class LoggedCounter(CountingProcessor):
    """CountingProcessor that takes its time and says which chunks it processed (a checkpointed chunk is not)."""

    def process(self, events):
        time.sleep(float(os.environ.get(CHUNK_SECONDS_VARIABLE, "0")))
        output = super().process(events)
        log = os.environ.get(CHUNK_LOG_VARIABLE)
        if log:
            (chunk,) = output["chunks"]
            with open(log, "a") as lines:
                lines.write(f"{chunk[0]} {chunk[1]} {chunk[2]}\n")
        return output
