"""One analysis run, for every executor and entry point: the processor built from the analysis JSON
(`processor.py`), the per-chunk function every executor maps (`chunk.py`), the run itself (`run.py`: plan,
execute, collect, summarise), when a run fails and how a killer chunk is diagnosed (`verdicts.py`,
`diagnose.py`), job arrays submitted, followed and collected into the same result (`job_array.py`), the
result types (`result.py`) and their tables (`report.py`).

It may import everything below it (executors, batch, dump, inputs, higgsdna, the leaves); only the Python API,
the command line and the demo import it.
"""
