"""HiggsDNA-style diphoton preselection: the base workflow a new user runs first.

It is a plain coffea ProcessorABC, so it runs under coffea's own Runner as well as under coffea-dispatch;
it writes one parquet file per chunk (HiggsDNA's `--dump` layout) and returns a small accumulator.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import awkward as ak
import hist
import numpy as np
from coffea import processor
from coffea.nanoevents import NanoAODSchema

from coffea_dispatch.errors import DispatchError
from coffea_dispatch.output import arrow_table, chunk_output_path, write_parquet_atomic

OUTPUT_COLUMNS = (
    "run",
    "luminosityBlock",
    "event",
    "mass",
    "pt",
    "eta",
    "phi",
    "lead_pt",
    "lead_eta",
    "lead_phi",
    "lead_mvaID",
    "lead_r9",
    "sublead_pt",
    "sublead_eta",
    "sublead_phi",
    "sublead_mvaID",
    "sublead_r9",
    "weight",
)
MASS_AXIS = (80, 100.0, 180.0)


class DiphotonNanoAODSchema(NanoAODSchema):
    """NanoAODSchema that keeps the file's Photon_mass and Photon_charge (the stock schema zeroes them).

    Zero-filled stand-ins are still made when the file lacks them (Run-3 NanoAOD v15 has no Photon_mass),
    because coffea's PhotonArray requires both. Cross-reference warnings are silenced because events are
    built from the photon branches only.
    """

    warn_missing_crossrefs = False

    def _build_collections(self, *arguments):
        if hasattr(NanoAODSchema, "full_like_items"):  # coffea 2025+ (0.7 keeps the file's Photon_mass)
            present = set(arguments[0])
            self.full_like_items = {
                name: how
                for name, how in NanoAODSchema.full_like_items.items()
                if not (name.startswith("Photon_") and name in present)
            }
        return super()._build_collections(*arguments)


@dataclass(frozen=True)
class Preselection:
    """Cut values; every one can be overridden from metaconditions["preselection"]."""

    photon_pt_min: float = 25.0
    photon_abs_eta_max: float = 2.5
    eb_ee_gap: tuple[float, float] = (1.4442, 1.566)
    photon_mvaid_min: float = -0.9
    photon_hoe_max: float = 0.08
    require_electron_veto: bool = True
    lead_pt_min: float = 35.0
    sublead_pt_min: float = 25.0
    lead_pt_over_mass_min: float = 1.0 / 3.0
    sublead_pt_over_mass_min: float = 1.0 / 4.0
    mass_min: float = 100.0
    mass_max: float = 180.0

    @classmethod
    def from_metaconditions(cls, metaconditions: dict[str, Any] | None) -> Preselection:
        overrides = (metaconditions or {}).get("preselection", {})
        if not isinstance(overrides, dict):
            raise DispatchError("metaconditions: 'preselection' must be an object of cut values")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise DispatchError(
                f"metaconditions: unknown preselection key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})"
            )
        values = {}
        for key, value in overrides.items():
            values[key] = cls._check(key, value)
        cuts = cls(**values)
        if cuts.mass_min >= cuts.mass_max:
            raise DispatchError(
                f"metaconditions: preselection.mass_min ({cuts.mass_min:g}) must be below mass_max ({cuts.mass_max:g}):"
                " no event could pass"
            )
        return cuts

    @staticmethod
    def _check(key: str, value: Any) -> Any:
        if key == "require_electron_veto":
            if not isinstance(value, bool):
                raise DispatchError(f"metaconditions: preselection.{key} must be true or false")
            return value
        if key == "eb_ee_gap":
            if (
                not isinstance(value, (list, tuple))
                or len(value) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
            ):
                raise DispatchError(f"metaconditions: preselection.{key} must be two numbers, e.g. [1.4442, 1.566]")
            return (_cut_value(key, value[0]), _cut_value(key, value[1]))
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise DispatchError(f"metaconditions: preselection.{key} must be a number, got {value!r}")
        return _cut_value(key, value)


LARGEST_CUT = 1e5  # GeV for momenta and masses (the LHC collides at 13.6 TeV); nothing else comes close


def _cut_value(key: str, value: float) -> float:
    """A cut of NaN, infinity (JSON's 1e400) or beyond any collision's energy selects nothing without a word:
    refuse it rather than write an empty dump."""
    number = float(value)
    if not math.isfinite(number) or abs(number) > LARGEST_CUT:
        raise DispatchError(
            f"metaconditions: preselection.{key} = {value!r} is not a usable cut (must be finite and within "
            f"+-{LARGEST_CUT:g}); fix the value in the metaconditions"
        )
    return number


def _four_vector(pt, eta, phi, mass):
    pt, eta, phi, mass = (np.asarray(x, dtype=np.float64) for x in (pt, eta, phi, mass))
    return pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta), np.sqrt((pt * np.cosh(eta)) ** 2 + mass**2)


PHOTON_FIELDS = ("pt", "eta", "phi", "mass", "mvaID", "r9")
CUT_FIELDS = ("hoe", "electronVeto")


def select_photons(photons: ak.Array, cuts: Preselection) -> ak.Array:
    """Photons passing the preselection, with only the fields the candidates need (cheaper to slice)."""
    photons = photons[list(PHOTON_FIELDS + CUT_FIELDS)]
    abs_eta = np.abs(photons.eta)
    gap_low, gap_high = cuts.eb_ee_gap
    keep = (
        (photons.pt > cuts.photon_pt_min)
        & (abs_eta < cuts.photon_abs_eta_max)
        & ~((abs_eta > gap_low) & (abs_eta < gap_high))
        & (photons.mvaID > cuts.photon_mvaid_min)
        & (photons.hoe < cuts.photon_hoe_max)
    )
    if cuts.require_electron_veto:
        keep = keep & photons.electronVeto
    return photons[list(PHOTON_FIELDS)][keep]


def best_diphoton(photons: ak.Array, cuts: Preselection) -> dict[str, np.ndarray]:
    """The passing pair with the largest lead_pt + sublead_pt per event, as flat columns plus an event mask.

    Pairs are enumerated once as indices into the flat photon arrays: the arithmetic and the per-event choice
    run on flat numpy arrays, several times faster than building and indexing jagged records per column.
    """
    photons_per_event = ak.to_numpy(ak.num(photons, axis=1))
    flat = {f: ak.to_numpy(ak.flatten(photons[f])) for f in PHOTON_FIELDS}
    pairs = ak.argcombinations(photons.pt, 2)
    pairs_per_event = ak.to_numpy(ak.num(pairs, axis=1))
    first_photon_of_pair = np.repeat(np.cumsum(photons_per_event) - photons_per_event, pairs_per_event)
    first_index = ak.to_numpy(ak.flatten(pairs["0"])) + first_photon_of_pair
    second_index = ak.to_numpy(ak.flatten(pairs["1"])) + first_photon_of_pair
    first = {f: values[first_index] for f, values in flat.items()}
    second = {f: values[second_index] for f, values in flat.items()}
    first_is_lead = first["pt"] >= second["pt"]
    lead = {f: np.where(first_is_lead, first[f], second[f]) for f in PHOTON_FIELDS}
    sublead = {f: np.where(first_is_lead, second[f], first[f]) for f in PHOTON_FIELDS}
    lx, ly, lz, le = _four_vector(lead["pt"], lead["eta"], lead["phi"], lead["mass"])
    sx, sy, sz, se = _four_vector(sublead["pt"], sublead["eta"], sublead["phi"], sublead["mass"])
    px, py, pz, energy = lx + sx, ly + sy, lz + sz, le + se
    mass = np.sqrt(np.maximum(energy**2 - px**2 - py**2 - pz**2, 0.0))
    passing = (
        (lead["pt"] > cuts.lead_pt_min)
        & (sublead["pt"] > cuts.sublead_pt_min)
        & (lead["pt"] > cuts.lead_pt_over_mass_min * mass)
        & (sublead["pt"] > cuts.sublead_pt_over_mass_min * mass)
        & (mass > cuts.mass_min)
        & (mass < cuts.mass_max)
    )
    score = ak.unflatten(np.where(passing, lead["pt"] + sublead["pt"], -np.inf), pairs_per_event)
    has_candidate = ak.to_numpy(ak.any(ak.unflatten(passing, pairs_per_event), axis=1))
    best_in_event = ak.to_numpy(ak.fill_none(ak.argmax(score, axis=1), 0))  # first maximum wins a tie
    event_offsets = np.cumsum(pairs_per_event) - pairs_per_event
    best = (event_offsets + best_in_event)[has_candidate]
    pair_pt = np.hypot(px[best], py[best])
    return {
        "mask": has_candidate,
        "mass": mass[best],
        "pt": pair_pt,
        "eta": np.arcsinh(pz[best] / pair_pt),
        "phi": np.arctan2(py[best], px[best]),
        **{f"lead_{f}": lead[f][best] for f in ("pt", "eta", "phi", "mvaID", "r9")},
        **{f"sublead_{f}": sublead[f][best] for f in ("pt", "eta", "phi", "mvaID", "r9")},
    }


class DiphotonProcessor(processor.ProcessorABC):
    """Photon preselection and the leading diphoton candidate per event."""

    # coffea-dispatch reads these: build events from these branches only, and fail clearly without these
    input_branches = ("run", "luminosityBlock", "event", "genWeight", "nPhoton", "Photon_*")
    required_branches = (
        "Photon_pt",
        "Photon_eta",
        "Photon_phi",
        "Photon_mvaID",
        "Photon_hoe",
        "Photon_electronVeto",
        "Photon_r9",
        "nPhoton",
        "run",
        "luminosityBlock",
        "event",
    )
    # read in one bulk call when present (genWeight and Photon_mass are optional)
    preload_branches = (*required_branches, "genWeight", "Photon_mass")
    nanoevents_schema = DiphotonNanoAODSchema
    workflow_name = "base"

    def __init__(
        self, metaconditions: dict[str, Any] | None = None, output_location: str | None = None, **options: Any
    ):
        self.metaconditions = metaconditions or {}
        self.cuts = Preselection.from_metaconditions(self.metaconditions)
        self.output_location = output_location
        self.options = options

    def process(self, events: ak.Array) -> dict[str, Any]:
        dataset = events.metadata["dataset"]
        n_events = len(events)
        is_mc = "genWeight" in events.fields
        genweight = ak.to_numpy(events.genWeight).astype(np.float64) if is_mc else np.ones(n_events)
        photons = events.Photon
        if "mass" not in photons.fields:  # Run-3 NanoAOD v15 dropped Photon_mass: photons are massless
            photons = ak.with_field(photons, ak.zeros_like(photons.pt), "mass")
        candidate = best_diphoton(select_photons(photons, self.cuts), self.cuts)
        mask = candidate.pop("mask")
        columns = {
            "run": ak.to_numpy(events.run)[mask],
            "luminosityBlock": ak.to_numpy(events.luminosityBlock)[mask],
            "event": ak.to_numpy(events.event)[mask],
            **candidate,
            "weight": genweight[mask],
        }
        if self.output_location is not None:
            self._dump(events.metadata, columns, float(genweight.sum()), n_events)
        mass_hist = hist.Hist.new.Reg(*MASS_AXIS, name="mass", label=r"$m_{\gamma\gamma}$ [GeV]").Weight()
        mass_hist.fill(mass=columns["mass"], weight=columns["weight"])
        return {
            dataset: {
                "events": n_events,
                "sum_genw": float(genweight.sum()),
                "candidates": int(mask.sum()),
                "mass": mass_hist,
            }
        }

    def _dump(self, metadata: dict, columns: dict[str, np.ndarray], sum_genw: float, n_events: int) -> None:
        table = arrow_table({name: columns[name] for name in OUTPUT_COLUMNS})
        path = chunk_output_path(
            self.output_location,
            metadata["dataset"],
            metadata["filename"],
            metadata["entrystart"],
            metadata["entrystop"],
        )
        write_parquet_atomic(
            table,
            path,
            {
                "sum_genw_presel": repr(sum_genw),
                "coffea_dispatch.input": metadata["filename"],
                "coffea_dispatch.entrystart": metadata["entrystart"],
                "coffea_dispatch.entrystop": metadata["entrystop"],
                "coffea_dispatch.events": n_events,
                "coffea_dispatch.workflow": self.workflow_name,
                "coffea_dispatch.preselection": repr(asdict(self.cuts)),
            },
        )

    def postprocess(self, accumulator: dict[str, Any]) -> dict[str, Any]:
        return accumulator
