"""Workflows: the registry that turns an analysis JSON's `workflow` into a coffea processor, and ours."""

from coffea_dispatch.workflows.registry import (
    DIPHOTON,
    FALLBACK_WORKFLOWS,
    REGISTERED_WORKFLOWS,
    Workflow,
    instantiate_workflow,
    known_workflows,
    resolve_workflow,
)

__all__ = [
    "DIPHOTON",
    "FALLBACK_WORKFLOWS",
    "REGISTERED_WORKFLOWS",
    "Workflow",
    "instantiate_workflow",
    "known_workflows",
    "resolve_workflow",
]
