"""The sample JSON in the form each framework reads as written (`coffea-dispatch samples --format`).

- `higgsdna` (default): `{"name": ["file", ...]}`, HiggsDNA's fetch_datasets.py output, unchanged.
- `coffea`: `{"name": {"files": {"file": "Events", ...}, "metadata": {...}}}`. coffea 2026's
  `dataset_tools.preprocess` (and `apply_to_fileset` after it) validates each file as a ROOT file spec that
  must name its tree: a plain list of paths fails there (`ValidationError ... object_path`). The
  `{path: {"object_path": "Events"}}` spelling is accepted by preprocess too, but coffea's `processor.Runner`
  reads a `files` mapping's values as tree names: given no treename it would take the dict for one. The
  `{path: "Events"}` spelling is the one both read as written (Runner with or without treename="Events").
- `pocketcoffea`: PocketCoffea's `build_datasets` output, `{"name": {"metadata": {...}, "files": [...]}}`,
  its metadata values written as strings as build_datasets writes them (`"isMC": "True"`, `"xsec": "6077.22"`,
  `"das_names": "['/A/B/NANOAODSIM']"`); its processors read `sample`, `year`, `isMC`, `xsec` (simulation) and
  `era` (data), so a sample missing one of those is one error naming the option that gives it.

Other replicas of a file stay out of all three, in `<name>.replicas.json` beside the JSON, as for the HiggsDNA
form: coffea's file specs hold one path per file (a second spelling of the same file would be read twice),
and PocketCoffea's lists too; our runs read the replicas file beside whichever form they are given.
"""

from __future__ import annotations

import json
from typing import Any

from coffea_dispatch.errors import DispatchError
from coffea_dispatch.inputs.analysis import sample_json_text

FORMATS = ("higgsdna", "coffea", "pocketcoffea")
TREE = "Events"
POCKETCOFFEA_REQUIRED = {  # key -> how the user gives it
    "year": "a DAS name with a campaign or era (e.g. Run3Summer22, Run2022C), or --eras FILE",
    "isMC": "a DAS name's tier (NANOAODSIM or NANOAOD), or --count-events (genWeight in the files)",
}


def _pocketcoffea_missing(name: str, metadata: dict[str, Any]) -> str | None:
    """What PocketCoffea's processors need of this sample that is not known, and how to give it."""
    for key, how in POCKETCOFFEA_REQUIRED.items():
        if key not in metadata:
            return f"'{key}' (from {how})"
    if metadata["isMC"] and "xsec" not in metadata:
        return "'xsec' (simulation: give its cross-section in --xsec FILE)"
    if not metadata["isMC"] and "era" not in metadata:
        return "'era' (data: from a DAS name such as Run2022C, or --eras FILE)"
    return None


def pocketcoffea_metadata(name: str, metadata: dict[str, Any]) -> dict[str, str]:
    """Every value as a string, as PocketCoffea's build_datasets writes it (`str(value)`)."""
    missing = _pocketcoffea_missing(name, metadata)
    if missing:
        raise DispatchError(f"--format pocketcoffea: sample '{name}' has no {missing}")
    return {key: str(value) for key, value in metadata.items()}


def sample_text(kind: str, samples: dict[str, list[str]], metadata: dict[str, dict[str, Any]]) -> str:
    """The sample JSON's text in the `kind` form (one of FORMATS)."""
    if kind == "higgsdna":
        return sample_json_text(samples)
    if kind == "coffea":
        fileset = {
            name: {"files": dict.fromkeys(files, TREE), "metadata": metadata.get(name, {})}
            for name, files in samples.items()
        }
    elif kind == "pocketcoffea":
        fileset = {
            name: {"metadata": pocketcoffea_metadata(name, metadata.get(name, {})), "files": files}
            for name, files in samples.items()
        }
    else:
        raise DispatchError(f"--format {kind}: choose from {', '.join(FORMATS)}")
    return json.dumps(fileset, indent=1) + "\n"
