"""Taggers are objects with a name and a priority, built with no arguments, called on the diphotons."""

import awkward as ak


class DummyTagger1:
    name = "DummyTagger1"
    priority = 10

    def __call__(self, events, diphotons):
        return ak.values_astype(diphotons.lead_pt > 50.0, "int32"), {}


class DummyTagger2:
    name = "DummyTagger2"
    priority = 20

    def __call__(self, events, diphotons):
        return ak.values_astype(diphotons.mass > 125.0, "int32"), {}
