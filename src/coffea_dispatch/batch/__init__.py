"""Batch systems: job arrays (written, submitted, watched, resubmitted, merged) and the backends behind them.

Re-exported lazily: a run on a local executor asks the registry whether its executor is a batch one, and
must not import the submission machinery to learn that it is not.
"""

import importlib

_EXPORTS = {
    "BatchBackend": "backend",
    "JobState": "backend",
    "SubmitError": "backend",
    "array_backend": "registry",
    "backend_for": "registry",
    "backends": "registry",
    "EXIT_NOT_SUBMITTED": "submit",
    "NotSubmitted": "submit",
    "SubmitResult": "submit",
    "cancel": "submit",
    "resubmit": "submit",
    "submit_analysis": "submit",
    "submit_written": "submit",
    "JobsFailed": "wait",
    "wait_for_jobs": "wait",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
