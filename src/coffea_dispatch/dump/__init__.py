"""The `--dump` folder: its records (`ledger.py`: the configuration claim, input identities, checksummed chunk
records, per-chunk staging and publishing; `outputs.py`: what a chunk wrote, checked before it is published,
and each output's identity; `check.py`: `coffea-dispatch check`), resuming from them (`resume.py`,
`checkpoints.py` the interface the chunk runner sees, `relocate.py` a processor's paths moved to a chunk's
staging folder), what was read of each sample (`completeness.py`) and collecting a job array into it
(`collect.py`: merged parquet per sample, the jobs' accumulators summed, their completeness).

It may import `inputs/`, `batch/` (a submission's jobs and their records, to collect them) and the leaves;
never executors or the pipeline.
"""
