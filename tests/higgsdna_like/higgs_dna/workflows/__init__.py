from higgs_dna.workflows.base import HggBaseProcessor, KeywordRecorder
from higgs_dna.workflows.taggers import DummyTagger1, DummyTagger2

workflows = {"base": HggBaseProcessor, "kwargs_recorder": KeywordRecorder}
taggers = {"DummyTagger1": DummyTagger1, "DummyTagger2": DummyTagger2}
