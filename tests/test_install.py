"""coffea-dispatch installs as users install it: every public name imports, the version comes from git, a wheel
and an sdist build and pass `twine check`, and installing into an existing coffea 0.7 environment (HiggsDNA's,
PocketCoffea's, the AGC's) changes none of its packages.

The venvs these tests make take their wheels from pip's cache (~/.cache/pip): the first run downloads them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

import coffea_dispatch
from conftest import independent_of_coffea

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (the oldest we support): tomllib as it was before the standard library took it
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
OLDEST_PINS = REPO / ".ci" / "oldest-coffea07.txt"
UNCHANGED = REPO / ".ci" / "unchanged"
# what HiggsDNA's and PocketCoffea's environments resolve to (coffea 0.7.31, awkward 1, uproot 4, numpy<2)
COFFEA07_STACK = ["coffea<2023", "pyarrow<20"]
BUILD_OUTPUT = re.compile(r"(^|/)(tests|docs|bench|examples|build|dist|_build|\.venv[^/]*|__pycache__)/")


def run(*command: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    """The command's output; a failure shows what it printed, not only its exit status."""
    done = subprocess.run([str(part) for part in command], cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(map(str, command))} exited {done.returncode}:\n{done.stdout}{done.stderr}"
    return done.stdout


def test_every_public_name_imports():
    for name in coffea_dispatch.__all__:
        assert getattr(coffea_dispatch, name) is not None, name
    from coffea_dispatch import RunResult

    assert RunResult.__module__.startswith("coffea_dispatch.")
    assert set(coffea_dispatch.__all__) == set(coffea_dispatch._EXPORTS)


def test_the_version_is_the_installed_distributions_and_asking_imports_no_coffea():
    """`__version__` without importing coffea (the command line reads it before it holds Ctrl-C)."""
    from importlib.metadata import version

    assert coffea_dispatch.__version__ == version("coffea-dispatch") != coffea_dispatch.UNKNOWN_VERSION
    code = "import sys, coffea_dispatch; print(coffea_dispatch.__version__, 'coffea' in sys.modules)"
    assert run(sys.executable, "-c", code).split() == [version("coffea-dispatch"), "False"]


def test_a_source_tree_without_metadata_says_its_version_is_unknown(tmp_path):
    """-S: no site-packages, so no installed metadata: the tree alone on sys.path, as a user might put it."""
    shutil.copytree(REPO / "src" / "coffea_dispatch", tmp_path / "coffea_dispatch")
    code = "import coffea_dispatch; print(coffea_dispatch.__version__)"
    assert run(sys.executable, "-S", "-c", code, cwd=tmp_path).strip() == coffea_dispatch.UNKNOWN_VERSION


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> dict[str, Path]:
    """The wheel and the sdist `python -m build` makes of this checkout (the wheel built from the sdist)."""
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--outdir", out, REPO)
    (wheel,), (sdist,) = out.glob("*.whl"), out.glob("*.tar.gz")
    return {"wheel": wheel, "sdist": sdist}


def version_of(wheel: Path) -> str:
    return wheel.name.split("-")[1]


@pytest.mark.slow
@independent_of_coffea
def test_the_wheel_and_sdist_build_pass_twine_and_carry_no_build_output(dist):
    run(sys.executable, "-m", "twine", "check", "--strict", dist["wheel"], dist["sdist"])
    names = zipfile.ZipFile(dist["wheel"]).namelist()
    stray = [n for n in names if not re.match(r"coffea_dispatch(/|-[^/]+\.dist-info/)", n) or BUILD_OUTPUT.search(n)]
    assert not stray, f"the wheel holds more than the package: {stray[:10]}"
    assert "coffea_dispatch/__init__.py" in names
    with tarfile.open(dist["sdist"]) as sdist:
        members = [m.name.split("/", 1)[1] for m in sdist.getmembers() if "/" in m.name]
    assert "pyproject.toml" in members and "src/coffea_dispatch/__init__.py" in members
    stray = [m for m in members if re.search(r"(^|/)(_build|build|dist|__pycache__|\.venv[^/]*)/", m)]
    assert not stray, f"the sdist holds build output: {stray[:10]}"
    # the version from git: a tag's, or (between tags) one naming this checkout's commit
    version, head = version_of(dist["wheel"]), run("git", "-C", REPO, "rev-parse", "HEAD").strip()
    tags = run("git", "-C", REPO, "tag", "--points-at", "HEAD").split()
    assert version in {t.removeprefix("v") for t in tags} or re.search(rf"\+g{head[:7]}", version), version


@pytest.mark.slow
@independent_of_coffea
def test_a_copy_without_git_builds_with_the_fallback_version(tmp_path):
    """An archive (GitHub's "Download ZIP", `git archive`): no .git, yet it builds and installs."""
    files = run("git", "-C", REPO, "ls-files", "--cached", "--others", "--exclude-standard", "-z").split("\0")
    copy = tmp_path / "coffea-dispatch"
    for name in filter(None, files):
        if (REPO / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, copy / name)
    run(sys.executable, "-m", "build", "--outdir", tmp_path / "out", copy)
    fallback = PYPROJECT["tool"]["setuptools_scm"]["fallback_version"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        f"coffea_dispatch-{fallback}-py3-none-any.whl",
        f"coffea_dispatch-{fallback}.tar.gz",
    ]


@pytest.mark.slow
@independent_of_coffea
def test_the_wheel_installs_into_a_coffea07_environment_changing_none_of_its_packages(dist, tmp_path):
    """A fresh venv holding HiggsDNA's and PocketCoffea's stack; then the wheel, as `pip install` takes it."""
    started = time.monotonic()
    venv = tmp_path / "venv"
    # only what the venv holds: a PYTHONPATH given to the tests would let pip take the package as installed
    env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    run(python, "-m", "pip", "install", "--quiet", *COFFEA07_STACK, env=env)
    created = time.monotonic()
    (tmp_path / "before.txt").write_text(run(python, "-m", "pip", "freeze", env=env))
    run(python, "-m", "pip", "install", "--quiet", dist["wheel"], env=env)
    (tmp_path / "after.txt").write_text(run(python, "-m", "pip", "freeze", env=env))
    print(f"the coffea 0.7 venv in {created - started:.0f} s, the wheel into it in {time.monotonic() - created:.0f} s")
    # .ci/unchanged names each package upgraded, downgraded or removed
    run(sys.executable, UNCHANGED, tmp_path / "before.txt", tmp_path / "after.txt")
    assert re.search(r"^coffea==0\.7\.", (tmp_path / "after.txt").read_text(), re.MULTILINE)
    version = version_of(dist["wheel"])
    assert run(venv / "bin" / "coffea-dispatch", "--version", env=env).split()[-1] == version
    code = "import coffea_dispatch; print(coffea_dispatch.__version__)"
    assert run(python, "-c", code, cwd=tmp_path, env=env).strip() == version


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lower_bound(requirements: list[str], name: str) -> str:
    (bound,) = (m.group(1) for r in requirements if (m := re.match(rf"{name}>=([^,;\s]+)", r)))
    return bound


@pytest.mark.slow
@independent_of_coffea
@pytest.mark.skipif(sys.version_info >= (3, 12), reason="coffea 0.7.21's numpy 1.23 has no wheels after Python 3.11")
def test_the_requirements_resolve_against_the_oldest_coffea07_pins_without_changing_one(tmp_path):
    """pip's resolver, no install: our requirements and the datasets extra's (a solution for them all is one for
    the plain install too) with an environment made by `pip install coffea==0.7.21 "pyarrow<20"` as constraints.
    numpy>=1.26 beside coffea 0.7.21 (numpy<1.24) failed here: pip would have replaced that coffea 0.7 with 2026."""
    project = PYPROJECT["project"]
    requirements = project["dependencies"] + project["optional-dependencies"]["datasets"]
    pins = {
        canonical(n): v for n, v in (line.split("==") for line in OLDEST_PINS.read_text().splitlines() if "==" in line)
    }
    assert pins["coffea"] == lower_bound(requirements, "coffea"), "the pins are not those of the oldest coffea we name"
    report = tmp_path / "report.json"
    run(sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report", report,
        "-c", OLDEST_PINS, *requirements)  # fmt: skip
    installed = json.loads(report.read_text())["install"]
    chosen = {canonical(item["metadata"]["name"]): item["metadata"]["version"] for item in installed}
    assert chosen["coffea"] == pins["coffea"]
    changed = {name: f"{pin} -> {chosen[name]}" for name, pin in pins.items() if chosen.get(name, pin) != pin}
    assert not changed, f"resolving coffea-dispatch against the oldest pins changes {changed}"
