"""What a run reads: the analysis JSON and its samples (`analysis.py`), access to the files (`files.py`: open-file
cache, replicas, XRootD settings and retries; `proxy.py`: the grid proxy for remote ones), what is known of
each input (`describe.py`, `metadata_cache.py`, `weights.py`: entries, branches, sums of generator weights),
and the chunks cut from them (`planning.py`) in the order they should run (`ordering.py`); how each coffea
generation reads events (`compat.py`: coffea 0.7 vs 2025+).

It may import the package's leaves (`errors`, `output`, `result_keys`) and `higgsdna.registries`
(an analysis JSON names HiggsDNA's metaconditions); nothing above it: no dump, batch, executor or pipeline code.
"""
