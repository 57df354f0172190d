"""A processor written as the IRIS-HEP Analysis Grand Challenge's is: it reads its dataset's metadata (process,
cross-section, events generated) from `events.metadata` and weights every event with it. Integers only where
exactness matters; the weighted sum is compared with a tolerance of zero because every path sums the same chunks.
"""

from __future__ import annotations

import awkward as ak
import numpy as np
from coffea import processor


class MetadataWeighted(processor.ProcessorABC):
    def process(self, events):
        meta = events.metadata
        weight = meta["xsec"] * meta["lumi"] / meta["nevts"]
        photons = int(ak.sum(ak.num(events.Photon_pt)))
        return {
            meta["process"]: {
                "events": len(events),
                "photons": photons,
                "weighted": photons * weight,
                "variation": {meta["variation"]},
                "chunks": {(meta["filename"], meta["entrystart"], meta["entrystop"], meta["treename"])},
                "event_sum": int(np.sum(np.asarray(events.event, dtype=np.int64))),
            }
        }

    def postprocess(self, accumulator):
        return accumulator


class CountingOnly(processor.ProcessorABC):
    """Reads no metadata: a run of a dataset without it."""

    def process(self, events):
        return {events.metadata["dataset"]: {"events": len(events)}}

    def postprocess(self, accumulator):
        return accumulator
