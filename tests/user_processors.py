"""User processors given to the analysis JSON as `user_processors:ClassName` (tests/ is on sys.path)."""

from __future__ import annotations

import awkward as ak
from coffea import processor


class CountPhotons(processor.ProcessorABC):
    """A typical user processor: takes **kwargs, reads all branches (no input_branches declared)."""

    def __init__(self, **options):
        self.options = options

    def process(self, events):
        return {events.metadata["dataset"]: {"events": len(events), "photons": int(ak.sum(ak.num(events.Photon)))}}

    def postprocess(self, accumulator):
        return accumulator


class StrictSignature(processor.ProcessorABC):
    """Accepts only the arguments it names: coffea-dispatch must not pass it anything else."""

    def __init__(self, output_location=None, year=None):
        self.output_location = output_location
        self.year = year

    def process(self, events):
        return {"year": {str(self.year): len(events)}}

    def postprocess(self, accumulator):
        return accumulator


class NeedsUnknownArgument(processor.ProcessorABC):
    def __init__(self, calibration_file):
        self.calibration_file = calibration_file

    def process(self, events):
        return {}

    def postprocess(self, accumulator):
        return accumulator


class Explodes(processor.ProcessorABC):
    def __init__(self, **options):
        pass

    def process(self, events):
        return {"ratio": 1 / 0}

    def postprocess(self, accumulator):
        return accumulator


class NotAProcessor:
    pass
