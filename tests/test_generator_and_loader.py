"""The synthetic NanoAOD generator and the analysis/sample JSON loader."""

from __future__ import annotations

import json
import warnings

import awkward as ak
import numpy as np
import pytest
import uproot

from coffea_dispatch.cli import main
from coffea_dispatch.errors import DispatchError
from coffea_dispatch.higgsdna.diphoton import Preselection
from coffea_dispatch.inputs.analysis import AnalysisWarning, load_analysis
from coffea_dispatch.synthetic.generator import SampleSpec, make_sample

PHOTON_BRANCHES = {
    "nPhoton",
    "Photon_pt",
    "Photon_eta",
    "Photon_phi",
    "Photon_mass",
    "Photon_mvaID",
    "Photon_r9",
    "Photon_hoe",
    "Photon_electronVeto",
    "Photon_pixelSeed",
}


@pytest.mark.slow
def test_make_sample_writes_a_nanoaod_like_ttree(tmp_path):
    assert (
        main(["make-sample", str(tmp_path / "s.root"), "--events", "250000", "--seed", "5", "--signal-fraction", "0.5"])
        == 0
    )
    tree = uproot.open(tmp_path / "s.root")["Events"]
    assert tree.num_entries == 250_000
    names = set(tree.keys())
    assert PHOTON_BRANCHES | {"run", "luminosityBlock", "event", "genWeight", "fixedGridRhoAll"} <= names
    assert {"nJet", "Jet_pt", "nElectron", "Electron_pt", "nMuon", "Muon_pt"} <= names
    assert tree["Photon_pt"].typename == "float[]" and tree["Photon_electronVeto"].typename == "bool[]"
    assert tree["event"].typename == "uint64_t"
    assert tree["Photon_pt"].num_baskets >= 3  # written in several baskets
    photons = tree.arrays(["Photon_pt"], entry_stop=1000)["Photon_pt"]
    assert ak.all(photons[:, :-1] >= photons[:, 1:])  # sorted by pt, as in NanoAOD


def test_same_seed_same_file_content(tmp_path):
    first = make_sample(tmp_path / "a.root", SampleSpec(events=3000, seed=42))
    second = make_sample(tmp_path / "b.root", SampleSpec(events=3000, seed=42))
    third = make_sample(tmp_path / "c.root", SampleSpec(events=3000, seed=43))
    load = [uproot.open(p)["Events"].arrays(["Photon_pt", "Jet_pt", "genWeight"]) for p in (first, second, third)]
    assert ak.all(load[0].Photon_pt == load[1].Photon_pt) and ak.all(load[0].Jet_pt == load[1].Jet_pt)
    assert not ak.all(ak.num(load[0].Photon_pt) == ak.num(load[2].Photon_pt))


def test_signal_peak_at_125(tmp_path):
    path = make_sample(tmp_path / "sig.root", SampleSpec(events=20_000, seed=1, signal_fraction=1.0))
    p = uproot.open(path)["Events"].arrays(["Photon_pt", "Photon_eta", "Photon_phi"])
    two = p[ak.num(p.Photon_pt) >= 2]
    pt1, pt2 = two.Photon_pt[:, 0], two.Photon_pt[:, 1]
    mass = np.sqrt(
        2
        * pt1
        * pt2
        * (np.cosh(two.Photon_eta[:, 0] - two.Photon_eta[:, 1]) - np.cos(two.Photon_phi[:, 0] - two.Photon_phi[:, 1]))
    )
    in_peak = ak.to_numpy((mass > 120) & (mass < 130))
    assert in_peak.mean() > 0.5


@pytest.mark.slow
def test_extra_branches_reach_nanoaod_width(tmp_path):
    base = len(uproot.open(make_sample(tmp_path / "n.root", SampleSpec(events=100)))["Events"].keys())
    for extra in (1, 2, 21, 22, 1415):
        path = make_sample(tmp_path / f"w{extra}.root", SampleSpec(events=100, extra_branches=extra))
        assert len(uproot.open(path)["Events"].keys()) == base + extra


def test_zero_events_and_bad_arguments(tmp_path):
    assert uproot.open(make_sample(tmp_path / "e.root", SampleSpec(events=0)))["Events"].num_entries == 0
    with pytest.raises(DispatchError, match="signal-fraction"):
        make_sample(tmp_path / "x.root", SampleSpec(events=10, signal_fraction=2))
    with pytest.raises(DispatchError, match=r"\.root"):
        make_sample(tmp_path / "x.txt", SampleSpec(events=10))


def write(folder, name, content):
    path = folder / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def test_loader_resolves_and_passes_everything(tmp_path):
    write(tmp_path, "samples.json", {"S": ["sub/f.root", "/abs/g.root", "root://host//store/h.root"]})
    write(tmp_path, "syst.json", {"PhotonID": "x"})
    analysis = load_analysis(
        write(
            tmp_path,
            "an.json",
            {
                "samplejson": "samples.json",
                "workflow": "base",
                "metaconditions": {"preselection": {"mass_min": 90}},
                "taggers": ["T"],
                "systematics": "syst.json",
                "corrections": {"a": 1},
                "year": {"S": ["2018"]},
            },
        )
    )
    assert analysis.samples["S"] == [str(tmp_path / "sub" / "f.root"), "/abs/g.root", "root://host//store/h.root"]
    assert analysis.systematics == {"PhotonID": "x"} and analysis.corrections == {"a": 1}
    assert analysis.metaconditions == {"preselection": {"mass_min": 90}}
    assert analysis.taggers == ["T"] and analysis.year == {"S": ["2018"]} and analysis.name == "an"


def test_loader_warns_on_unknown_keys(tmp_path):
    write(tmp_path, "samples.json", {"S": ["f.root"]})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_analysis(write(tmp_path, "an.json", {"samplejson": "samples.json", "workflow": "base", "wokflow": 1}))
    assert any(issubclass(w.category, AnalysisWarning) and "wokflow" in str(w.message) for w in caught)


def test_metaconditions_by_name_by_path_and_unknown(tmp_path):
    write(tmp_path, "samples.json", {"S": ["f.root"]})
    write(tmp_path, "mc.json", {"preselection": {"lead_pt_min": 40}})
    by_name = load_analysis(
        write(tmp_path, "a1.json", {"samplejson": "samples.json", "workflow": "base", "metaconditions": "default"})
    )
    assert by_name.metaconditions == {}
    by_path = load_analysis(
        write(tmp_path, "a2.json", {"samplejson": "samples.json", "workflow": "base", "metaconditions": "mc.json"})
    )
    assert Preselection.from_metaconditions(by_path.metaconditions).lead_pt_min == 40
    with pytest.raises(DispatchError, match="unknown metaconditions 'Era2099'.*registered: default"):
        load_analysis(
            write(tmp_path, "a3.json", {"samplejson": "samples.json", "workflow": "base", "metaconditions": "Era2099"})
        )


@pytest.mark.parametrize(
    "preselection, needle",
    [
        ({"photon_pt": 3}, "unknown preselection key"),
        ({"mass_min": "100"}, "must be a number"),
        ({"eb_ee_gap": [1.4]}, "two numbers"),
        ({"require_electron_veto": 1}, "true or false"),
        ([1], "must be an object"),
    ],
)
def test_bad_preselection_overrides(preselection, needle):
    with pytest.raises(DispatchError, match=needle):
        Preselection.from_metaconditions({"preselection": preselection})


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path, capsys):
    assert main(["demo", str(tmp_path / "demo"), "--events", "20000", "-j", "2"]) == 0
    out = capsys.readouterr().out
    assert "GluGluHToGG" in out and "DiPhotonJets" in out and "total (wall)" in out
    assert (tmp_path / "demo" / "output" / "diphoton_mass.png").exists()
    assert list((tmp_path / "demo" / "output" / "GluGluHToGG" / "nominal").glob("*.parquet"))
