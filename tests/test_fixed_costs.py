"""The main process imports only what the chosen executor needs (issue 13's fixed costs)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import write_analysis

HEAVY = ("dask", "distributed", "pandas", "matplotlib", "parsl")
REPORT_IMPORTS = """
import json, sys
from coffea_dispatch.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "loaded": sorted(m for m in %r if m in sys.modules)}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["iterative", "futures"])
def test_a_local_run_without_a_plot_imports_no_dask_pandas_or_matplotlib(generated, tmp_path, executor):
    analysis = write_analysis(tmp_path, generated)
    argv = ["run", "--json-analysis", str(analysis), "--dump", str(tmp_path / "out"), "--executor", executor]
    argv += ["-j", "2", "--no-progress", "--no-plot"]
    done = subprocess.run(
        [sys.executable, "-c", REPORT_IMPORTS % (HEAVY,), *argv], capture_output=True, text=True, check=True
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"code": 0, "loaded": []}
