"""A processor class that no worker can import by name (defined in a notebook cell, an exec'd page of the docs,
a script's function) still runs on the futures workers: it is sent by value, as coffea sends processors."""

import pytest

import coffea_dispatch
from conftest import independent_of_coffea

CELL = """
from coffea import processor

class CountEvents(processor.ProcessorABC):
    def process(self, events):
        return {"events": len(events)}

    def postprocess(self, accumulator):
        return accumulator
"""


@pytest.mark.slow
@independent_of_coffea
def test_a_processor_defined_in_an_execd_namespace_runs_on_futures_workers(generated):
    cell: dict = {}
    exec(CELL, cell)  # as a notebook or sybil runs a block: the class lives in no importable module
    fileset = {"Signal": generated["Signal"]}
    result = coffea_dispatch.run(fileset, cell["CountEvents"](), executor="futures", workers=2)
    assert result.accumulator == {"events": 50_000}


def test_a_processor_that_cannot_be_sent_is_one_line(generated):
    import threading

    cell: dict = {}
    exec(CELL, cell)
    processor = cell["CountEvents"]()
    processor.lock = threading.Lock()  # nothing can pickle a lock
    with pytest.raises(coffea_dispatch.DispatchError, match="cannot be sent to the futures workers"):
        coffea_dispatch.run({"Signal": generated["Signal"]}, processor, executor="futures", workers=2)
