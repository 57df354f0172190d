"""Synthetic NanoAOD-like files: a 125 GeV diphoton peak over a falling continuum.

A new user (and every test) needs real ROOT files with NanoAOD's layout without downloading anything;
the same seed always gives the same file, so row-by-row comparisons are reproducible.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import awkward as ak
import numpy as np
import uproot

from coffea_dispatch.errors import DispatchError
from coffea_dispatch.inputs.files import ROOT_HEADER_BYTES, root_uuid_offset
from coffea_dispatch.output import temporary_path

HIGGS_MASS = 125.0
HIGGS_WIDTH_RESOLUTION = 1.5  # detector resolution of the diphoton mass, GeV
BASKET_EVENTS = 100_000
FILLER_COLLECTIONS = {
    "Jet": ["pt", "eta", "phi", "mass", "btagDeepFlavB", "btagPNetB", "chEmEF", "neEmEF", "area", "rawFactor"],
    "Electron": ["pt", "eta", "phi", "mass", "dxy", "dz", "pfRelIso03_all", "sieie", "r9", "hoe"],
    "Muon": ["pt", "eta", "phi", "mass", "dxy", "dz", "pfRelIso03_all", "pfRelIso04_all", "ptErr", "tkRelIso"],
}
FILLER_INT_FIELDS = {"Jet": ["jetId", "hadronFlavour"], "Electron": ["charge", "cutBased"], "Muon": ["charge"]}
FILLER_BOOL_FIELDS = {"Muon": ["tightId", "mediumId", "looseId"], "Electron": ["mvaIso_WP90"]}
# NanoAOD's cross-references between collections; -1 means "no match", as in real files
INDEX_FIELDS = {
    "Jet": ["electronIdx1", "electronIdx2", "muonIdx1", "muonIdx2"],
    "Electron": ["jetIdx", "photonIdx"],
    "Muon": ["jetIdx"],
    "Photon": ["electronIdx", "jetIdx"],
}
FILLER_SINGLETONS = [
    "MET_pt",
    "MET_phi",
    "MET_sumEt",
    "PuppiMET_pt",
    "PuppiMET_phi",
    "fixedGridRhoFastjetAll",
    "Pileup_nTrueInt",
    "PV_x",
    "PV_y",
    "PV_z",
    "PV_chi2",
    "LHEWeight_originalXWGTUP",
]
HLT_PATHS = [
    "HLT_Diphoton30_22_R9Id_OR_IsoCaloId_AND_HE_R9Id_Mass90",
    "HLT_Diphoton30_22_R9Id_OR_IsoCaloId_AND_HE_R9Id_Mass95",
    "HLT_Ele32_WPTight_Gsf",
    "HLT_IsoMu24",
    "HLT_PFJet500",
    "HLT_Photon200",
]
EXTRA_COLLECTION_FIELDS = 20


@dataclass(frozen=True)
class SampleSpec:
    """What to generate; the defaults give a small but realistic-looking signal+background mix."""

    events: int
    seed: int = 1
    signal_fraction: float = 0.2
    extra_branches: int = 0
    run: int = 1

    def validate(self) -> None:
        if self.events < 0:
            raise DispatchError(f"--events must be >= 0, got {self.events}")
        if not 0.0 <= self.signal_fraction <= 1.0:
            raise DispatchError(f"--signal-fraction must be between 0 and 1, got {self.signal_fraction}")
        if self.extra_branches < 0:
            raise DispatchError(f"--extra-branches must be >= 0, got {self.extra_branches}")


def _decay_to_photons(rng: np.random.Generator, n: int) -> tuple[np.ndarray, ...]:
    """Two massless photons from a boosted ~125 GeV resonance, as (pt, eta, phi) pairs."""
    mass = rng.normal(HIGGS_MASS, HIGGS_WIDTH_RESOLUTION, n)
    h_pt = rng.exponential(35.0, n)
    h_eta = rng.normal(0.0, 1.6, n)
    h_phi = rng.uniform(-np.pi, np.pi, n)
    h_px, h_py, h_pz = h_pt * np.cos(h_phi), h_pt * np.sin(h_phi), h_pt * np.sinh(h_eta)
    h_e = np.sqrt(h_px**2 + h_py**2 + h_pz**2 + mass**2)
    cos_t = rng.uniform(-1.0, 1.0, n)
    sin_t = np.sqrt(1.0 - cos_t**2)
    phi_star = rng.uniform(-np.pi, np.pi, n)
    half = mass / 2.0
    rest = np.stack([half * sin_t * np.cos(phi_star), half * sin_t * np.sin(phi_star), half * cos_t], axis=1)
    beta = np.stack([h_px, h_py, h_pz], axis=1) / h_e[:, None]
    photons = []
    for sign in (1.0, -1.0):
        p = sign * rest
        e = half
        b2 = np.sum(beta**2, axis=1)
        gamma = 1.0 / np.sqrt(1.0 - b2)
        bp = np.sum(beta * p, axis=1)
        coef = np.where(b2 > 0, (gamma - 1.0) * bp / np.where(b2 > 0, b2, 1.0), 0.0) + gamma * e
        lab = p + coef[:, None] * beta
        pt = np.hypot(lab[:, 0], lab[:, 1])
        photons.append((pt, np.arcsinh(lab[:, 2] / np.maximum(pt, 1e-9)), np.arctan2(lab[:, 1], lab[:, 0])))
    return photons[0] + photons[1]


def _photons(rng: np.random.Generator, n_events: int, signal_fraction: float) -> ak.Array:
    """Photon collection per event, sorted by pt like NanoAOD."""
    is_signal = rng.random(n_events) < signal_fraction
    n_sig = int(is_signal.sum())
    n_bkg = n_events - n_sig
    # prompt pair: signal decay or a falling continuum of two photons
    pt1 = np.empty(n_events)
    eta1, phi1, pt2, eta2, phi2 = (np.empty(n_events) for _ in range(5))
    s_pt1, s_eta1, s_phi1, s_pt2, s_eta2, s_phi2 = _decay_to_photons(rng, n_sig)
    pt1[is_signal], eta1[is_signal], phi1[is_signal] = s_pt1, s_eta1, s_phi1
    pt2[is_signal], eta2[is_signal], phi2[is_signal] = s_pt2, s_eta2, s_phi2
    bkg = ~is_signal
    pt1[bkg] = 18.0 + rng.exponential(30.0, n_bkg)
    pt2[bkg] = 15.0 + rng.exponential(22.0, n_bkg)
    eta1[bkg], eta2[bkg] = rng.uniform(-2.8, 2.8, n_bkg), rng.uniform(-2.8, 2.8, n_bkg)
    phi1[bkg], phi2[bkg] = rng.uniform(-np.pi, np.pi, n_bkg), rng.uniform(-np.pi, np.pi, n_bkg)
    # how many of the prompt pair are reconstructed, plus soft extra photons
    n_prompt = np.where(rng.random(n_events) < 0.85, 2, rng.integers(0, 2, n_events))
    n_soft = rng.poisson(0.6, n_events)
    counts = n_prompt + n_soft
    total = int(counts.sum())
    starts = (np.cumsum(counts) - counts).astype(np.int64)
    local = np.arange(total) - np.repeat(starts, counts)
    event_of = np.repeat(np.arange(n_events), counts)
    prompt_slot = local < np.repeat(n_prompt, counts)
    first = prompt_slot & (local == 0)
    second = prompt_slot & (local == 1)
    pt = 5.0 + rng.exponential(12.0, total)
    eta = rng.uniform(-3.0, 3.0, total)
    phi = rng.uniform(-np.pi, np.pi, total)
    pt[first], eta[first], phi[first] = pt1[event_of[first]], eta1[event_of[first]], phi1[event_of[first]]
    pt[second], eta[second], phi[second] = pt2[event_of[second]], eta2[event_of[second]], phi2[event_of[second]]
    prompt_like = prompt_slot & np.repeat(is_signal, counts)
    mva = np.where(prompt_like, 1.0 - rng.beta(1.2, 4.0, total) * 1.8, rng.uniform(-1.0, 1.0, total))
    fields = {
        "pt": pt,
        "eta": eta,
        "phi": phi,
        "mass": np.abs(rng.normal(0.0, 1e-3, total)),
        "mvaID": mva,
        "r9": np.clip(rng.normal(0.9, 0.08, total), 0.2, 1.1),
        "hoe": rng.exponential(0.03, total),
        "electronVeto": rng.random(total) < 0.93,
        "pixelSeed": rng.random(total) < 0.07,
    }
    # order photons by decreasing pt inside each event, as NanoAOD does
    order = np.lexsort((-pt, event_of))
    columns = {}
    for name, values in fields.items():
        values = values[order]
        if values.dtype == np.float64:
            values = values.astype(np.float32)
        columns[name] = ak.unflatten(values, counts)
    columns.update(_no_match_indices("Photon", counts))
    return ak.zip(columns)


def _filler_collection(rng: np.random.Generator, name: str, n_events: int, mean: float) -> ak.Array:
    counts = rng.poisson(mean, n_events)
    total = int(counts.sum())
    columns = {}
    for field in FILLER_COLLECTIONS.get(name, []):
        scale = 30.0 if field in ("pt", "mass") else 1.0
        columns[field] = ak.unflatten(rng.exponential(scale, total).astype(np.float32), counts)
    for field in FILLER_INT_FIELDS.get(name, []):
        columns[field] = ak.unflatten(rng.integers(-1, 7, total).astype(np.int32), counts)
    for field in FILLER_BOOL_FIELDS.get(name, []):
        columns[field] = ak.unflatten(rng.random(total) < 0.5, counts)
    columns.update(_no_match_indices(name, counts))
    return ak.zip(columns)


def _no_match_indices(name: str, counts: np.ndarray) -> dict[str, ak.Array]:
    total = int(counts.sum())
    return {field: ak.unflatten(np.full(total, -1, dtype=np.int16), counts) for field in INDEX_FIELDS[name]}


def _extra_branches(rng: np.random.Generator, n_events: int, how_many: int) -> dict:
    """Exactly `how_many` padding branches, so the file is as wide as real NanoAOD.

    Half are jagged floats in collections PadK (their nPadK counters included in the count), half are
    HLT-like bits; both compress well, so a wide file stays small on disk.
    """
    branches: dict = {}
    jagged_budget = how_many // 2 if how_many >= 4 else 0  # a collection needs a counter and a field
    n_groups = -(-jagged_budget // (EXTRA_COLLECTION_FIELDS + 1))
    remaining = jagged_budget - n_groups  # one counter branch per group
    for group in range(n_groups):
        counts = rng.poisson(0.3, n_events)
        total = int(counts.sum())
        n_fields = min(EXTRA_COLLECTION_FIELDS, remaining - (n_groups - group - 1))
        values = {f"f{i}": np.round(rng.exponential(1.0, total)).astype(np.float32) for i in range(n_fields)}
        remaining -= n_fields
        # one uproot record per group gives NanoAOD names: nPadK and PadK_fI
        branches[f"Pad{group}"] = ak.zip({name: ak.unflatten(v, counts) for name, v in values.items()})
    for index in range(how_many - jagged_budget):
        branches[f"HLT_PadPath{index}"] = rng.random(n_events) < 0.01
    return branches


def _batch(spec: SampleSpec, rng: np.random.Generator, start: int, stop: int) -> dict:
    n = stop - start
    event = np.arange(start + 1, stop + 1, dtype=np.uint64)
    branches: dict = {
        "run": np.full(n, spec.run, dtype=np.uint32),
        "luminosityBlock": (1 + (event - 1) // 1000).astype(np.uint32),
        "event": event,
        "genWeight": np.where(rng.random(n) < 0.97, 1.0, -1.0).astype(np.float32) * np.float32(0.5),
        "fixedGridRhoAll": rng.gamma(4.0, 5.0, n).astype(np.float32),
        "PV_npvs": rng.poisson(30, n).astype(np.int32),
        "Photon": _photons(rng, n, spec.signal_fraction),
        "Jet": _filler_collection(rng, "Jet", n, 3.0),
        "Electron": _filler_collection(rng, "Electron", n, 0.5),
        "Muon": _filler_collection(rng, "Muon", n, 0.4),
    }
    for name in FILLER_SINGLETONS:
        branches[name] = rng.exponential(20.0, n).astype(np.float32)
    for name in HLT_PATHS:
        branches[name] = rng.random(n) < 0.3
    branches.update(_extra_branches(rng, n, spec.extra_branches))
    return branches


def write_ttree(out, name: str, branches: dict, **options):
    """A TTree holding `branches` (numpy or awkward arrays), on uproot 4 and 5 alike; extend it with more.

    mktree, not dict assignment: uproot >= 5.7 would write an RNTuple, and NanoAOD is a TTree. It is given
    branch types, not data, which uproot 4 (coffea 0.7's) does not take, and no empty first extend."""
    types = {key: v.dtype if isinstance(v, np.ndarray) else v.type for key, v in branches.items()}
    tree = out.mktree(name, types, initial_basket_capacity=50, **options)
    if len(next(iter(branches.values()))):
        tree.extend(branches)
    return tree


def make_sample(path: str | os.PathLike, spec: SampleSpec) -> Path:
    """Write the file atomically (temporary name, then rename) so a half-written sample never looks done."""
    spec.validate()
    target = Path(path)
    if target.suffix != ".root":
        raise DispatchError(f"{target}: the output file name must end in .root")
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(target)
    rng = np.random.default_rng(spec.seed)
    try:
        with uproot.recreate(temporary, compression=uproot.ZLIB(1)) as out:
            tree = write_ttree(out, "Events", _batch(spec, rng, 0, min(spec.events, BASKET_EVENTS)))
            for start in range(BASKET_EVENTS, spec.events, BASKET_EVENTS):
                tree.extend(_batch(spec, rng, start, min(spec.events, start + BASKET_EVENTS)))
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    return target


def distinct_copy(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """A byte copy of `source` that is another file to ROOT: its header carries a fresh UUID. A plain copy keeps
    the UUID, and a sample listing two copies of one file is refused (its events would count twice); tests and
    benchmarks use this to make many distinct inputs without generating each."""
    data = bytearray(Path(source).read_bytes())
    offset = root_uuid_offset(bytes(data[:ROOT_HEADER_BYTES]))
    if offset is None:
        raise DispatchError(f"{source}: not a ROOT file, so it has no UUID to renew")
    data[offset : offset + 16] = secrets.token_bytes(16)
    Path(target).write_bytes(data)
    return Path(target)
