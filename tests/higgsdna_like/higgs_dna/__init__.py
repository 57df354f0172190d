"""A stand-in for HiggsDNA, written for these tests from HiggsDNA's public interface (no HiggsDNA code):
its registries (`higgs_dna.workflows.workflows`, `.taggers`, `higgs_dna.metaconditions.metaconditions`), the
keyword arguments its run_analysis.py passes, attribute assignment on events, and parquet outputs named by
the events factory's partition key under `<output_location>/<dataset>/nominal/`.

Only importable when a test puts tests/higgsdna_like on sys.path (the `higgsdna` fixture)."""
