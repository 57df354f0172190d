"""coffea-dispatch: a coffea analysis on any executor.

    coffea_dispatch.run(fileset, processor, executor="dask/local", dump="out")    # the whole run, summarised
    processor.Runner(executor=coffea_dispatch.executor("futures", workers=8))   # coffea's own Runner
    with coffea_dispatch.cluster("dask/local", scaleout=4) as client: dask.compute(...)  # dask-awkward users

Exported lazily: the command line imports this package before it holds Ctrl-C, and must not import coffea then.
`coffea_dispatch.__version__` is the installed distribution's version (from git, through setuptools-scm: the commit
it was installed from), read when asked, for bug reports. An editable install keeps the version of the commit it was
installed at until it is installed again (`pip install -e .`).
"""

import importlib

_EXPORTS = {
    "run": "api",
    "executor": "api",
    "cluster": "executors.cluster",
    "completeness_of": "api",
    "build_samples": "datasets",
    "RunResult": "pipeline.result",
    "DispatchError": "errors",
}
__all__ = sorted(_EXPORTS)


# a source tree put on sys.path by hand has no installed metadata to read the version from
UNKNOWN_VERSION = "0+unknown"


def _version() -> str:
    # importlib.metadata costs 30 ms to import: only when the version is asked for (see the docstring)
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("coffea-dispatch")
    except PackageNotFoundError:
        return UNKNOWN_VERSION


def __getattr__(name: str):
    if name == "__version__":
        return _version()
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
