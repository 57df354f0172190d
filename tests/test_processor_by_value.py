"""A processor class that no worker can import by name (defined in a notebook cell, an exec'd page of the docs,
a script's function) still runs on the futures workers: it is sent by value, as coffea sends processors."""

import subprocess
import sys

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


SCRIPT = """
import sys
import threading

from coffea import processor

import coffea_dispatch

MODEL = threading.Lock()  # a script's module-level object no pickle takes: an ML session, an open file, a lock


class UsesTheModel(processor.ProcessorABC):
    def process(self, events):
        with MODEL:
            return {"events": len(events)}

    def postprocess(self, accumulator):
        return accumulator


result = coffea_dispatch.run({"Signal": sys.argv[1:]}, UsesTheModel(), executor="futures", workers=2)
print("events", result.accumulator["events"])
"""


@pytest.mark.slow
@independent_of_coffea
def test_a_scripts_processor_using_its_module_objects_runs_on_futures_workers(generated, tmp_path):
    """By reference where it can be: the forked workers hold the script's objects, never sent nor copied."""
    script = tmp_path / "analysis.py"
    script.write_text(SCRIPT)
    done = subprocess.run([sys.executable, str(script), *generated["Signal"]], capture_output=True, text=True)
    assert done.returncode == 0 and "events 50000" in done.stdout, done.stderr[-2000:]
