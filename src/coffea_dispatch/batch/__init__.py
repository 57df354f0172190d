"""Batch systems: job arrays (planned, written, submitted, watched, resubmitted) and the backends behind them.

It imports no executor, dump or pipeline code. Nothing is re-exported here: a run on a local executor asks
the registry whether its executor is a batch one, and must not import the submission machinery to learn
that it is not; import from the module that owns a name (`batch.submit.resubmit`, `batch.backend.JobState`).
"""
