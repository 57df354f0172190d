"""Workflow registry: a short name, or `package.module:ClassName` for any coffea ProcessorABC."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from coffea import processor

from coffea_dispatch.errors import DispatchError

REGISTERED_WORKFLOWS: dict[str, str] = {
    "base": "coffea_dispatch.workflows.diphoton:DiphotonProcessor",
    "diphoton": "coffea_dispatch.workflows.diphoton:DiphotonProcessor",
}


def known_workflows() -> str:
    return ", ".join(sorted(REGISTERED_WORKFLOWS))


def resolve_workflow(name: str) -> type[processor.ProcessorABC]:
    """Turn the analysis JSON's `workflow` into a processor class, with a clear error for every failure."""
    target = REGISTERED_WORKFLOWS.get(name, name)
    if ":" not in target:
        raise DispatchError(
            f"unknown workflow '{name}' (registered: {known_workflows()}; "
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
    if not (inspect.isclass(cls) and issubclass(cls, processor.ProcessorABC)):
        raise DispatchError(f"workflow '{name}': {class_name} is not a coffea processor.ProcessorABC subclass")
    return cls


def instantiate_workflow(cls: type[processor.ProcessorABC], name: str, options: dict[str, Any]):
    """Pass every option a processor accepts: all of them to `**kwargs`, else only its named parameters."""
    signature = inspect.signature(cls)
    parameters = signature.parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
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
