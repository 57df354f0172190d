"""What is HiggsDNA's: its registries of workflows, taggers and metaconditions when it is installed
(`registries.py`), the workflow registry that resolves an analysis JSON's `workflow` (`workflows.py`), our own
diphoton workflow for when it is not (`diphoton.py`) and the diphoton mass plot (`plot.py`).

It may import only the leaves (`errors`, `output`): the inputs, dump and pipeline build on it.
"""
