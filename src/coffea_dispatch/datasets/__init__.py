"""Datasets in: a sample JSON from DAS, XRootD folders and local folders (`coffea-dispatch samples`)."""

from coffea_dispatch.datasets.build import SamplesOptions, SamplesResult, build_samples

__all__ = ["SamplesOptions", "SamplesResult", "build_samples"]
