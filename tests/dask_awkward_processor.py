"""An analysis written for coffea 2024+'s dask-awkward path (`apply_to_fileset`): its histograms are dask
collections, filled lazily and computed by `dask.compute`. Its own module, so that batch workers import it (by
the PYTHONPATH the worker jobs get) without importing a test module."""

from __future__ import annotations

import dask_awkward as dak
import hist.dask as hda
from coffea import processor


class PhotonHistograms(processor.ProcessorABC):
    """The leading photon's pT weighted by genWeight, every photon's pT, and the events read, per dataset."""

    def process(self, events):
        dataset = events.metadata["dataset"]
        with_photon = events[dak.num(events.Photon.pt, axis=1) > 0]
        leading = hda.Hist.new.Reg(40, 0, 200, name="pt", label="leading photon pT").Weight()
        leading.fill(pt=with_photon.Photon.pt[:, 0], weight=with_photon.genWeight)
        every = hda.Hist.new.Reg(40, 0, 200, name="pt", label="photon pT").Double()
        every.fill(pt=dak.flatten(events.Photon.pt))
        return {dataset: {"leading_pt": leading, "photon_pt": every, "events": dak.num(events, axis=0)}}

    def postprocess(self, accumulator):
        return accumulator
