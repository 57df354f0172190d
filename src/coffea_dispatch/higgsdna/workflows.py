"""Workflow registry: HiggsDNA's workflows (when `higgs_dna` is importable), ours, or
`package.module:ClassName` for any coffea ProcessorABC."""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import Any

from coffea import processor

from coffea_dispatch.errors import DispatchError
from coffea_dispatch.higgsdna import registries as higgsdna
from coffea_dispatch.options.values import did_you_mean

DIPHOTON = "coffea_dispatch.higgsdna.diphoton:DiphotonProcessor"
# our own workflow under names no HiggsDNA workflow has; `base` means ours only where HiggsDNA is absent
REGISTERED_WORKFLOWS: dict[str, str] = {
    "diphoton": DIPHOTON,
    "coffea_dispatch.diphoton": DIPHOTON,
    "coffea_dispatch.workflows.diphoton:DiphotonProcessor": DIPHOTON,  # its path before the packages of 2026-12
}
FALLBACK_WORKFLOWS: dict[str, str] = {"base": DIPHOTON}


@dataclass(frozen=True)
class Workflow:
    """The processor class an analysis JSON's `workflow` names, and where it was found."""

    name: str
    cls: type
    from_higgsdna: bool = False  # built with exactly HiggsDNA's keyword arguments, taggers from its registry

    @property
    def class_path(self) -> str:
        return f"{self.cls.__module__}:{self.cls.__qualname__}"


def known_workflows() -> str:
    names = set(REGISTERED_WORKFLOWS) | set(higgsdna.workflow_names() or FALLBACK_WORKFLOWS)
    return ", ".join(sorted(names))


def resolve_workflow(name: str) -> Workflow:
    """Turn the analysis JSON's `workflow` into a processor class, with a clear error for every failure."""
    if ":" not in name:
        cls = higgsdna.workflow_class(name)
        if cls is not None:
            return Workflow(name, _check_processor(name, cls, cls.__name__), from_higgsdna=True)
    target = REGISTERED_WORKFLOWS.get(name) or (None if higgsdna.available() else FALLBACK_WORKFLOWS.get(name)) or name
    if ":" not in target:
        hint = did_you_mean(name, known_workflows().split(", "))
        raise DispatchError(
            f"unknown workflow '{name}' ({hint}registered: {known_workflows()}; "
            "or give 'package.module:ClassName' for your own coffea processor)"
        )
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise DispatchError(f"workflow '{name}': cannot import module '{module_name}' ({exc})") from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise DispatchError(f"workflow '{name}': module '{module_name}' has no class '{class_name}'")
    return Workflow(name, _check_processor(name, cls, class_name))


def _check_processor(name: str, cls: Any, class_name: str) -> type:
    if not (inspect.isclass(cls) and issubclass(cls, processor.ProcessorABC)):
        raise DispatchError(f"workflow '{name}': {class_name} is not a coffea processor.ProcessorABC subclass")
    return cls


def instantiate_workflow(cls: type[processor.ProcessorABC], name: str, options: dict[str, Any], pass_all=False):
    """Pass every option a processor accepts: all of them to `**kwargs` (or with `pass_all`), else only its
    named parameters."""
    signature = inspect.signature(cls)
    parameters = signature.parameters.values()
    if pass_all or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        accepted = dict(options)
    else:
        accepted = {k: v for k, v in options.items() if k in signature.parameters}
    missing = [
        p.name
        for p in parameters
        if p.default is inspect.Parameter.empty
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and p.name not in accepted
    ]
    if missing:
        raise DispatchError(
            f"workflow '{name}': {cls.__name__}() needs argument(s) {', '.join(missing)} that coffea-dispatch "
            f"does not provide (it passes: {', '.join(sorted(options))}); give them defaults or accept **kwargs"
        )
    try:
        return cls(**accepted)
    except DispatchError:
        raise
    except Exception as exc:
        raise DispatchError(f"workflow '{name}': {cls.__name__}() failed: {type(exc).__name__}: {exc}") from None
