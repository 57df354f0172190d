"""A HiggsDNA-like base processor: HiggsDNA's constructor signature (named parameters, no **kwargs),
attribute assignment on events, metaconditions read, taggers called by priority, one parquet per chunk
named by the partition key. It also runs on coffea 2025+ (item assignment, the key from the metadata), which
HiggsDNA itself does not, so the same tests cover both generations."""

import json
import os
import re
import time
from typing import Any, Dict, List, Optional

import awkward as ak
import numpy as np
from coffea import processor


def partition_key(events) -> str:
    """HiggsDNA's output name: coffea 0.7's events factory key; coffea 2025+ has none, so the same fields
    (file UUID, tree, entry range) come from the chunk's metadata there."""
    factory = events.behavior.get("__events_factory__")
    if factory is not None:
        return factory._partition_key
    meta = events.metadata
    return f"{meta['fileuuid']}/{meta['treename']}/{meta['entrystart']}-{meta['entrystop']}"


class HggBaseProcessor(processor.ProcessorABC):
    def __init__(
        self,
        metaconditions: Dict[str, Any],
        systematics: Dict[str, List[Any]] = None,
        corrections: Dict[str, List[Any]] = None,
        apply_trigger: bool = False,
        nano_version: int = None,
        bTagEffFileName: Optional[str] = None,
        output_location: Optional[str] = None,
        taggers: Optional[List[Any]] = None,
        trigger_group=".*DoubleEG.*",
        analysis="mainAnalysis",
        applyCQR: bool = False,
        skipJetVetoMap: bool = False,
        year: Dict[str, List[str]] = None,
        fiducialCuts: str = "classical",
        doDeco: bool = False,
        Smear_sigma_m: bool = False,
        doFlow_corrections: bool = False,
        output_format: str = "parquet",
    ) -> None:
        self.meta = metaconditions
        self.nano_version = nano_version
        self.bTagEffFileName = bTagEffFileName
        self.output_location = output_location
        self.taggers = sorted(taggers or [], key=lambda tagger: tagger.priority)
        self.trigger_group = trigger_group
        self.apply_trigger = apply_trigger
        self.year = year
        self.output_format = output_format

    def process(self, events) -> Dict[Any, Any]:
        time.sleep(float(os.environ.get("HIGGSDNA_LIKE_SECONDS_PER_CHUNK", "0")))  # tests kill runs midway
        dataset = events.metadata["dataset"]
        if self.apply_trigger:
            paths = [f for f in events.HLT.fields if re.match(self.trigger_group, f"HLT_{f}")]
            fired = np.zeros(len(events), dtype=bool)
            for path in paths:
                fired |= ak.to_numpy(events.HLT[path])
            events = events[fired]
        photons = events.Photon
        photons = photons[(photons.pt > self.meta["photon_pt_min"]) & (photons.mvaID > self.meta["mvaid_min"])]
        if ak.__version__.startswith("1."):
            events.Photon = photons  # HiggsDNA assigns collections as attributes (coffea 0.7, awkward 1)
        else:
            events["Photon"] = photons  # awkward 2 refuses attribute assignment
        events = events[ak.num(events.Photon) >= 2]
        lead, sublead = events.Photon[:, 0], events.Photon[:, 1]
        mass = np.sqrt(2 * lead.pt * sublead.pt * (np.cosh(lead.eta - sublead.eta) - np.cos(lead.phi - sublead.phi)))
        diphotons = ak.zip(
            {"lead_pt": lead.pt, "sublead_pt": sublead.pt, "mass": mass, "event": events.event, "run": events.run},
            with_name=None,
        )
        diphotons = diphotons[diphotons.lead_pt > self.meta["lead_pt_min"]]
        for tagger in self.taggers:
            tags, _ = tagger(events, diphotons)
            diphotons[f"tag_{tagger.name}"] = tags
        diphotons["nano_version"] = ak.full_like(diphotons.mass, self.nano_version, dtype=np.int32)
        if self.output_location is not None:
            fname = partition_key(events).replace("/", "_") + f".{self.output_format}"
            fname = fname.replace("%2F", "").replace("%3B1", "")
            folder = os.path.join(self.output_location, dataset, "nominal")
            os.makedirs(folder, exist_ok=True)
            ak.to_parquet(diphotons, os.path.join(folder, fname))
        seen = json.dumps({k: str(v) for k, v in events.metadata.items()}, sort_keys=True)
        return {
            dataset: {
                "diphotons": len(diphotons),
                "bTagEffFileName": {self.bTagEffFileName},
                "metadata": {seen},  # what each chunk's events.metadata held
            }
        }

    def postprocess(self, accumulant):
        return accumulant


class KeywordRecorder(processor.ProcessorABC):
    """Records the keyword arguments it was built with (any coffea generation): HiggsDNA's, exactly."""

    built_with: Dict[str, Any] = {}

    def __init__(self, **kwargs) -> None:
        KeywordRecorder.built_with = kwargs
        self.kwargs = kwargs

    def process(self, events):
        return {"events": len(events)}

    def postprocess(self, accumulant):
        return accumulant
