"""An independent plain uproot + awkward + numpy implementation of the base workflow's cuts.

It shares no code with coffea_dispatch: the tests compare the product's rows with it, and
bench/throughput.py runs it as the single-process baseline (`python tests/reference.py FILE...`).
"""

from __future__ import annotations

import sys
import time

import awkward as ak
import numpy as np
import uproot

DEFAULT_CUTS = {
    "photon_pt_min": 25.0,
    "photon_abs_eta_max": 2.5,
    "eb_ee_gap": (1.4442, 1.566),
    "photon_mvaid_min": -0.9,
    "photon_hoe_max": 0.08,
    "require_electron_veto": True,
    "lead_pt_min": 35.0,
    "sublead_pt_min": 25.0,
    "lead_pt_over_mass_min": 1.0 / 3.0,
    "sublead_pt_over_mass_min": 1.0 / 4.0,
    "mass_min": 100.0,
    "mass_max": 180.0,
}
PHOTON_BRANCHES = [
    "Photon_pt",
    "Photon_eta",
    "Photon_phi",
    "Photon_mvaID",
    "Photon_hoe",
    "Photon_electronVeto",
    "Photon_r9",
]


def select(path: str, cuts: dict | None = None, entry_start: int | None = None, entry_stop: int | None = None):
    """Rows (dict of numpy arrays) of the best diphoton candidate per event in one file."""
    c = {**DEFAULT_CUTS, **(cuts or {})}
    tree = uproot.open(path)["Events"]
    keys = set(tree.keys())
    branches = PHOTON_BRANCHES + ["run", "luminosityBlock", "event"]
    branches += [b for b in ("Photon_mass", "genWeight") if b in keys]
    arrays = tree.arrays(branches, entry_start=entry_start, entry_stop=entry_stop, how=dict)
    counts = ak.to_numpy(ak.num(arrays["Photon_pt"]))
    flat = {b: ak.to_numpy(ak.flatten(arrays[b])) for b in PHOTON_BRANCHES + ["Photon_mass"] if b in arrays}
    if "Photon_mass" not in flat:
        flat["Photon_mass"] = np.zeros_like(flat["Photon_pt"])
    n_events = len(counts)
    aeta = np.abs(flat["Photon_eta"])
    good = (
        (flat["Photon_pt"] > c["photon_pt_min"])
        & (aeta < c["photon_abs_eta_max"])
        & ~((aeta > c["eb_ee_gap"][0]) & (aeta < c["eb_ee_gap"][1]))
        & (flat["Photon_mvaID"] > c["photon_mvaid_min"])
        & (flat["Photon_hoe"] < c["photon_hoe_max"])
    )
    if c["require_electron_veto"]:
        good &= flat["Photon_electronVeto"]
    event_of_photon = np.repeat(np.arange(n_events), counts)
    kept = np.nonzero(good)[0]  # flat indices of selected photons, in photon order
    kept_counts = np.bincount(event_of_photon[kept], minlength=n_events)
    pair_index = ak.combinations(ak.unflatten(kept, kept_counts), 2)  # pairs of flat photon indices
    first = ak.to_numpy(ak.flatten(pair_index["0"]))
    second = ak.to_numpy(ak.flatten(pair_index["1"]))
    i = first.astype(np.int64)
    j = second.astype(np.int64)
    swap = flat["Photon_pt"][i] < flat["Photon_pt"][j]
    lead, sub = np.where(swap, j, i), np.where(swap, i, j)

    def p4(index):
        pt, eta, phi, m = (flat[f"Photon_{f}"][index].astype(np.float64) for f in ("pt", "eta", "phi", "mass"))
        return pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta), np.sqrt((pt * np.cosh(eta)) ** 2 + m**2)

    (ax, ay, az, ae), (bx, by, bz, be) = p4(lead), p4(sub)
    px, py, pz, e = ax + bx, ay + by, az + bz, ae + be
    mass = np.sqrt(np.maximum(e**2 - px**2 - py**2 - pz**2, 0.0))
    lpt, spt = flat["Photon_pt"][lead], flat["Photon_pt"][sub]
    ok = (
        (lpt > c["lead_pt_min"])
        & (spt > c["sublead_pt_min"])
        & (lpt > c["lead_pt_over_mass_min"] * mass)
        & (spt > c["sublead_pt_over_mass_min"] * mass)
        & (mass > c["mass_min"])
        & (mass < c["mass_max"])
    )
    pair_event = event_of_photon[lead] if len(lead) else np.zeros(0, dtype=np.int64)
    candidates = np.nonzero(ok)[0]
    # best pair per event: largest lead_pt + sublead_pt, first pair on a tie (stable sort keeps pair order)
    score = (lpt + spt)[candidates]
    order = np.lexsort((np.arange(len(candidates)), -score, pair_event[candidates]))
    ordered = candidates[order]
    first_of_event = np.ones(len(ordered), dtype=bool)
    first_of_event[1:] = pair_event[ordered][1:] != pair_event[ordered][:-1]
    best = ordered[first_of_event]
    events = pair_event[best]
    weight = ak.to_numpy(arrays["genWeight"]).astype(np.float64) if "genWeight" in arrays else np.ones(n_events)
    pair_pt = np.hypot(px, py)
    rows = {
        "run": ak.to_numpy(arrays["run"])[events],
        "luminosityBlock": ak.to_numpy(arrays["luminosityBlock"])[events],
        "event": ak.to_numpy(arrays["event"])[events],
        "mass": mass[best],
        "pt": pair_pt[best],
        "eta": np.arcsinh(pz / pair_pt)[best],
        "phi": np.arctan2(py, px)[best],
        "weight": weight[events],
    }
    for prefix, index in (("lead", lead), ("sublead", sub)):
        for f in ("pt", "eta", "phi", "mvaID", "r9"):
            rows[f"{prefix}_{f}"] = flat[f"Photon_{f}"][index][best]
    return rows, n_events, float(weight.sum())


if __name__ == "__main__":
    started = time.perf_counter()
    total_events = total_rows = 0
    for filename in sys.argv[1:]:
        selected, n, _ = select(filename)
        total_events += n
        total_rows += len(selected["event"])
    seconds = time.perf_counter() - started
    print(f"{total_events} events, {total_rows} candidates, {seconds:.3f} s")
