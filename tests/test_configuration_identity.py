"""A dump and a job array's folder are bound to the processor's configuration (its class and its state), by a
digest that is the same in every process: another configuration is refused (or redone with overwrite=True),
the same one from a new process resumes or collects."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest
from coffea import processor
from coffea.nanoevents import BaseSchema

import coffea_dispatch
from coffea_dispatch.batch.submission import Submission
from coffea_dispatch.errors import DispatchError
from coffea_dispatch.identity import Undigestible, state_digest
from conftest import independent_of_coffea
from runner_processors import PhotonsAbove

DIGEST_SCRIPT = """
import json
import re
import sys
import awkward
import correctionlib
import numpy
from coffea.nanoevents.methods import vector
from coffea_dispatch.identity import state_digest

CORRECTION = {"schema_version": 2, "corrections": [{"name": "sf", "version": 1, "data": 1.02,
    "inputs": [{"name": "pt", "type": "real"}], "output": {"name": "weight", "type": "real"}}]}

class Configured:  # of __main__: cloudpickle writes it by value, with what differs between processes
    def __init__(self, ptmin):
        self.ptmin = ptmin
        self.triggers = {"HLT_Diphoton30", "HLT_Photon200", "HLT_Ele32", "HLT_Mu50"}
        self.weights = {"nominal": numpy.linspace(0, 1, 7), "up": numpy.ones(3)}
        self.select = lambda pt: pt > ptmin
        self.nested = [("a", 1), frozenset({2.5, 3.5})]
        self.corrections = correctionlib.CorrectionSet.from_string(json.dumps(CORRECTION))  # a C++ object

PT_CUT = float(sys.argv[2])  # a cut kept in a global the processor's code reads


class Selecting(Configured):
    def __init__(self, ptmin):
        super().__init__(ptmin)
        self.pattern = re.compile("HLT_Diphoton.*")  # pickled through copyreg
        self.named = lambda name: name in {"alpha", "beta", "gamma", "delta", "epsilon"}  # a set constant
        self.vectors = awkward.zip({"x": [1.0], "y": [2.0], "z": [0.5], "t": [3.0]}, with_name="LorentzVector",
                                   behavior=vector.behavior)  # holds numpy ufuncs
        self.structured = numpy.zeros(2, dtype=[(sys.argv[3], "f8")])

    def passes(self, pt):
        return pt > PT_CUT


print(state_digest(Selecting(float(sys.argv[1]))))
"""


def digest_in_new_process(tmp_path, seed: int, *arguments, edit: tuple[str, str] = ("", "")) -> str:
    script = tmp_path / "digest.py"
    script.write_text(DIGEST_SCRIPT.replace(*edit))
    env = {**os.environ, "PYTHONHASHSEED": str(seed)}
    command = [sys.executable, str(script), *(str(a) for a in arguments)]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_same_configuration_has_the_same_digest_in_every_process(tmp_path):
    first = digest_in_new_process(tmp_path, 1, 25, 40, "a")
    assert digest_in_new_process(tmp_path, 2, 25, 40, "a") == first
    assert digest_in_new_process(tmp_path, 1, 60, 40, "a") != first  # an attribute, also inside a lambda
    assert digest_in_new_process(tmp_path, 1, 25, 50, "a") != first  # a global the processor's code reads
    assert digest_in_new_process(tmp_path, 1, 25, 40, "b") != first  # a field name of a structured array
    edited = ("return pt > PT_CUT", "return pt >= PT_CUT")  # a method of a __main__ class edited
    assert digest_in_new_process(tmp_path, 1, 25, 40, "a", edit=edited) != first


def test_state_with_no_content_to_compare_is_named():
    configured = PhotonsAbove(25)
    configured.lock = threading.Lock()
    with pytest.raises(Undigestible) as error:
        state_digest(configured)
    assert error.value.where == "processor.lock"
    assert state_digest(PhotonsAbove(25)) == state_digest(
        PhotonsAbove(25, frozenset({"HLT_Photon200", "HLT_Diphoton30"}))
    )


def run_into(fileset, configured, dump, **options):
    return coffea_dispatch.run(
        fileset,
        configured,
        executor="iterative",
        dump=dump,
        chunksize=20_000,
        schema="base",
        progress=False,
        **options,
    ).accumulator


@independent_of_coffea
def test_another_configuration_into_a_dump_is_refused_or_redone(generated, tmp_path):
    fileset = {"Signal": generated["Signal"]}
    dump = tmp_path / "dump"
    loose = run_into(fileset, PhotonsAbove(25), dump)
    assert run_into(fileset, PhotonsAbove(25), dump) == loose  # the same configuration resumes
    with pytest.raises(DispatchError, match="another configuration"):
        run_into(fileset, PhotonsAbove(60), dump)
    tight = run_into(fileset, PhotonsAbove(60), dump, overwrite=True)
    assert tight == run_into(fileset, PhotonsAbove(60), tmp_path / "clean")
    assert tight["Signal"]["passing"] < loose["Signal"]["passing"]


@independent_of_coffea
def test_a_processor_that_cannot_be_compared_never_reuses_a_dump(generated, tmp_path):
    fileset = {"Signal": generated["Signal"]}
    configured = PhotonsAbove(25)
    configured.lock = threading.Lock()
    run_into(fileset, configured, tmp_path / "dump")
    with pytest.raises(DispatchError, match=r"cannot be compared.*processor\.lock"):
        run_into(fileset, configured, tmp_path / "dump")


MAIN_SCRIPT = """
import json, sys
import awkward as ak
from coffea import processor
from coffea.nanoevents import BaseSchema
import coffea_dispatch

class MainCut(processor.ProcessorABC):  # of __main__, holding a set: pickled differently in every process
    def __init__(self, ptmin):
        self.ptmin = ptmin
        self.triggers = {"HLT_Diphoton30", "HLT_Photon200", "HLT_Ele32", "HLT_Mu50"}

    def process(self, events):
        return {events.metadata["dataset"]: int(ak.sum(ak.sum(events.Photon_pt > self.ptmin, axis=1) >= 1))}

    def postprocess(self, accumulator):
        return accumulator

fileset, folder, ptmin = json.loads(sys.argv[1]), sys.argv[2], float(sys.argv[3])
executor = coffea_dispatch.executor("vanilla_lxplus", folder=folder, poll_seconds=0.2, status=False)
runner = processor.Runner(executor=executor, schema=BaseSchema, chunksize=20_000)
print(json.dumps(runner(fileset, treename="Events", processor_instance=MainCut(ptmin))))
"""


def test_a_main_processors_job_array_is_collected_from_a_new_process(generated, tmp_path, monkeypatch):
    from fake_scheduler import install

    for key, value in install(tmp_path / "condor").items():
        monkeypatch.setenv(key, value)
    script, folder = tmp_path / "analysis.py", tmp_path / "sub"
    script.write_text(MAIN_SCRIPT)

    def call(ptmin: float, seed: int) -> subprocess.CompletedProcess:
        command = [sys.executable, str(script), json.dumps(generated), str(folder), str(ptmin)]
        env = {**os.environ, "PYTHONHASHSEED": str(seed)}
        return subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env)

    first = call(25, seed=1)
    assert first.returncode == 0, first.stderr[-2000:]
    attempts = [job.attempts for job in Submission.load(folder).jobs]
    again = call(25, seed=2)  # the script called again: collected, nothing resubmitted
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(again.stdout.splitlines()[-1]) == json.loads(first.stdout.splitlines()[-1])
    assert [job.attempts for job in Submission.load(folder).jobs] == attempts
    other = call(60, seed=2)
    assert other.returncode != 0 and "holds a submission of other work" in other.stderr


def test_a_runner_job_array_of_another_configuration_is_refused(generated, tmp_path, monkeypatch):
    from fake_scheduler import install

    for key, value in install(tmp_path / "condor").items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [os.path.dirname(__file__), os.environ.get("PYTHONPATH")]))
    )
    options = {"folder": str(tmp_path / "sub"), "poll_seconds": 0.2, "status": False}
    fileset = {"Signal": generated["Signal"]}

    def call(ptmin: float):
        runner = processor.Runner(executor=coffea_dispatch.executor("vanilla_lxplus", **options), schema=BaseSchema)
        return runner(fileset, treename="Events", processor_instance=PhotonsAbove(ptmin))

    loose = call(25)
    assert call(25) == loose
    with pytest.raises(DispatchError, match="holds a submission of other work"):
        call(60)
