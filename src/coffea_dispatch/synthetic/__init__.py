"""Synthetic NanoAOD (`generator.py`: the files the tests, benchmarks and demo run on) and `make demo`
(`demo.py`, which runs the pipeline on them). The top of the house beside the command line: it may import
anything below, nothing imports it but the command line, the tests and the benchmarks.
"""
