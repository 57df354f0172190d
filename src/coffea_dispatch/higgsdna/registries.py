"""HiggsDNA's own registries, used whenever `higgs_dna` is importable, so its analysis JSON means what it means
to HiggsDNA's `run_analysis.py`: `workflow` from `higgs_dna.workflows.workflows`, `metaconditions` names from
`higgs_dna.metaconditions.metaconditions` (a JSON file inside that package), `taggers` from
`higgs_dna.workflows.taggers` (each built with no arguments), and the processor built with exactly
HiggsDNA's keyword arguments. Nothing of HiggsDNA is bundled: without it these lookups find nothing.
"""

from __future__ import annotations

import importlib
import importlib.resources
import importlib.util
import json
from typing import Any

from coffea_dispatch.errors import DispatchError

PACKAGE = "higgs_dna"
# the keyword arguments HiggsDNA's run_analysis.py builds every workflow with (and nothing else)
PROCESSOR_KEYWORDS = (
    "metaconditions",
    "systematics",
    "corrections",
    "nano_version",
    "bTagEffFileName",
    "apply_trigger",
    "output_location",
    "analysis",
    "trigger_group",
    "taggers",
    "applyCQR",
    "skipJetVetoMap",
    "year",
    "fiducialCuts",
    "doDeco",
    "Smear_sigma_m",
    "doFlow_corrections",
    "output_format",
)
RENAMED_WORKFLOWS = {"dystudies": "base"}


def available() -> bool:
    """Is HiggsDNA installed here (or on PYTHONPATH)? Asked each time: tests and notebooks change sys.path."""
    try:
        return importlib.util.find_spec(PACKAGE) is not None
    except (ImportError, ValueError):
        return False


def _registry(module_name: str, attribute: str) -> dict[str, Any]:
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # HiggsDNA itself failed to import: say so, in one line
        raise DispatchError(f"cannot import {module_name} ({type(exc).__name__}: {exc})") from None
    registry = getattr(module, attribute, None)
    if not isinstance(registry, dict):
        raise DispatchError(f"{module_name}.{attribute} is not a dict: is this HiggsDNA?")
    return registry


def workflow_class(name: str) -> type | None:
    """HiggsDNA's workflow registered as `name`, or None when HiggsDNA is absent or has no such workflow."""
    if not available():
        return None
    workflows = _registry(f"{PACKAGE}.workflows", "workflows")
    if name in workflows:
        return workflows[name]
    if name in RENAMED_WORKFLOWS:
        raise DispatchError(
            f"You selected the workflow '{name}', but it has been renamed to {RENAMED_WORKFLOWS[name]} "
            "(HiggsDNA): change 'workflow' in the analysis JSON"
        )
    return None


def workflow_names() -> list[str]:
    return sorted(_registry(f"{PACKAGE}.workflows", "workflows")) if available() else []


def metaconditions(name: str) -> dict[str, Any] | None:
    """The metaconditions HiggsDNA registers as `name` (read from its package), or None."""
    if not available():
        return None
    registry = _registry(f"{PACKAGE}.metaconditions", "metaconditions")
    if name not in registry:
        return None
    resource = importlib.resources.files(f"{PACKAGE}.metaconditions").joinpath(registry[name])
    try:
        data = json.loads(resource.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DispatchError(f"HiggsDNA metaconditions '{name}' ({registry[name]}): cannot be read ({exc})") from None
    if not isinstance(data, dict):
        raise DispatchError(f"HiggsDNA metaconditions '{name}' ({registry[name]}): must hold a JSON object")
    return data


def metaconditions_names() -> list[str]:
    return sorted(_registry(f"{PACKAGE}.metaconditions", "metaconditions")) if available() else []


def taggers(names: Any, where: str) -> list[Any] | None:
    """HiggsDNA's taggers by name, each instantiated with no arguments, as its run_analysis.py does."""
    if names is None:
        return None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise DispatchError(f"{where}: 'taggers' must be a list of tagger names")
    registry = _registry(f"{PACKAGE}.workflows", "taggers")
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise DispatchError(
            f"{where}: tagger '{unknown[0]}' is not in higgs_dna.workflows.taggers "
            f"(known: {', '.join(sorted(registry)) or 'none'})"
        )
    built = []
    for name in names:
        try:
            built.append(registry[name]())
        except Exception as exc:
            raise DispatchError(f"tagger '{name}': {registry[name].__name__}() failed: {exc}") from None
    return built
