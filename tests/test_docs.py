"""The documentation's code blocks run as written (tests/docs_blocks.py says how each block is taken), the site
builds with warnings as errors, and every relative link of the README leads to a docs page or a heading there.

Each page runs in a folder of its own holding `demo/` as `coffea-dispatch demo demo` leaves it (made once per
session, small: 20,000 events per file), so what a user copies after `make demo` is what runs here.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from coffea_dispatch.inputs.compat import LEGACY_COFFEA

if LEGACY_COFFEA:  # before sybil and sphinx are imported: the coffea 0.7 environment need not hold them
    pytest.skip(
        "the documentation does not depend on coffea's generation: checked in the coffea 2026 pass",
        allow_module_level=True,
    )

from myst_parser.slugs import github_slugify  # noqa: E402
from sybil.example import SybilFailure  # noqa: E402

from docs_blocks import document_of  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
README = REPO / "README.md"
PAGES = sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts) + [README]
DEMO_EVENTS = 20_000  # per file: the demo's three files run in about a second
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,3}) +(.+?) *#*$", re.MULTILINE)  # myst_heading_anchors = 3


@pytest.fixture(scope="session")
def demo(tmp_path_factory) -> Path:
    """`coffea-dispatch demo demo` in a folder of its own, once: analysis.json, samples.json, data/, output/."""
    folder = tmp_path_factory.mktemp("docs-demo")
    command = [str(Path(sys.executable).parent / "coffea-dispatch"), "demo", "demo", "--events", str(DEMO_EVENTS)]
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout + done.stderr
    return folder / "demo"


@pytest.fixture
def page_folder(demo, tmp_path, monkeypatch) -> Path:
    """A fresh folder holding a copy of the demo, the current folder while a page's blocks run."""
    shutil.copytree(demo, tmp_path / "demo", symlinks=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_blocks(page: Path) -> int:
    """Every block of `page`, in order, in one namespace; how many there were."""
    examples = list(document_of(page).examples())
    for example in examples:
        example.evaluate()
    return len(examples)


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_code_blocks_of_the_page_run_as_written(page: Path, page_folder: Path) -> None:
    run_blocks(page)


@pytest.mark.slow
def test_the_site_builds_without_a_warning(tmp_path) -> None:
    """As `make docs` builds it: nitpicky, warnings as errors (an unresolved reference, a broken toctree)."""
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-q", "-b", "html", str(DOCS)]
    done = subprocess.run([*command, str(tmp_path / "html")], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr


def anchors_of(page: Path) -> set[str]:
    return {github_slugify(title.replace("`", "")) for _, title in HEADING.findall(page.read_text())}


def test_every_relative_link_of_the_readme_is_a_docs_page_or_a_heading_there() -> None:
    links = [target for target in LINK.findall(README.read_text()) if "://" not in target]
    assert links, "the README links to no docs page"
    for target in links:
        path, _, anchor = target.partition("#")
        page = REPO / path if path else README
        assert page.suffix == ".md" and page.is_file(), f"README links to {target}: not a page of docs/"
        assert page == README or page.resolve().is_relative_to(DOCS), f"README links to {target}: not under docs/"
        if anchor:
            assert anchor in anchors_of(page), f"README links to {target}: {path or 'README.md'} has no such heading"


# each checker can fail: a page with one wrong block fails, the same page with the block right passes


def page_with(tmp_path: Path, block: str) -> Path:
    page = tmp_path / "page.md"
    page.write_text(f"# A page\n\nSome text.\n\n{block}\n")
    return page


CHECKED_PYTHON = """% check-only

```python
import coffea_dispatch
from coffea import processor

ex = coffea_dispatch.executor("vanilla_slurm", {keyword}=2, memory="4GB", folder="runs/ttbar")
output = processor.Runner(executor=ex)(fileset, treename="Events", processor_instance=MyProcessor())
```"""


@pytest.mark.parametrize(
    "block",
    [
        CHECKED_PYTHON.format(keyword="files_per_jobs"),  # a misspelt keyword
        CHECKED_PYTHON.format(keyword="files_per_job").replace('"4GB"', '"4 lots"'),  # a value out of range
        CHECKED_PYTHON.format(keyword="files_per_job").replace("vanilla_slurm", "vanila_slurm"),  # an executor
        "% check-only\n\n```python\nfrom coffea_dispatch import run\n\nrun(fileset, p, no_plot=True)\n```",
        '% check-only\n\n```python\nimport coffea_dispatch\n\nwith coffea_dispatch.cluster("futures"):\n    pass\n```',
        "% check-only\n\n```python\nimport coffea_dispatch\n\ncoffea_dispatch.run(fileset, p, chunksize=0)\n```",
        "% check-only\n\n```python\ndef f(:\n```",
        CHECKED_PYTHON.format(keyword="files_per_jobs").replace('"4GB"', "memory_of_the_site"),  # computed value
    ],
    ids=["keyword", "value", "executor", "run-keyword", "cluster-of-futures", "run-value", "syntax", "computed"],
)
def test_a_wrong_check_only_python_block_fails(tmp_path, monkeypatch, block: str) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SybilFailure):
        run_blocks(page_with(tmp_path, block))


def test_a_right_check_only_python_block_passes_and_starts_nothing(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    block = CHECKED_PYTHON.format(keyword="files_per_job")
    block += "\n\n% check-only\n\n```python\nimport coffea_dispatch as cd\n\n"
    block += 'result = cd.run(fileset, MyProcessor(), executor="dask/slurm", scaleout=20, memory="4GB", dump="out")\n'
    block += 'with cd.cluster("dask/slurm", scaleout=4, memory="4GB") as client:\n    pass\n```'
    assert run_blocks(page_with(tmp_path, block)) == 2
    assert list(tmp_path.iterdir()) == [tmp_path / "page.md"]  # no dump, no submission folder, no worker logs


@pytest.mark.parametrize("marker", ["% check-only", "<!-- check-only -->"])
@pytest.mark.parametrize(
    "line",
    [
        "$ coffea-dispatch run --json-analysis my.json --exectuor futures",  # an unknown flag
        "$ coffea-dispatch run --json-analysis my.json --chunk -5",  # a value the spec refuses
        "$ coffea-dispatch run --json-analysis my.json --executor vanila_slurm",
        "$ cd somewhere && coffea-dispatch statuss .higgs_dna_vanilla_slurm/x",  # an unknown command, after &&
        "$ nohup coffea-dispatch run --json-analysis my.json --exectuor futures",  # after a wrapper
        "$ srun -n 1 coffea-dispatch run --json-analysis my.json --executor vanila_slurm",
        "$ VAR=1 coffea-dispatch run --json-analysis my.json --chunk -5",  # after a variable
    ],
)
def test_a_wrong_check_only_command_line_fails(tmp_path, monkeypatch, line: str, marker: str) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SybilFailure):
        run_blocks(page_with(tmp_path, f"{marker}\n\n```console\n{line}\n```"))


def test_a_right_check_only_command_line_passes(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    lines = [
        "$ coffea-dispatch run --json-analysis my.json --dump out --executor vanilla_slurm --wait  # on a login node",
        "$ coffea-dispatch status .higgs_dna_vanilla_slurm/DiphotonProcessor_20260101_120000 | less",
        "$ pip install coffea-dispatch-that-does-not-exist  # not run",
    ]
    run_blocks(page_with(tmp_path, "% check-only\n\n```console\n" + "\n".join(lines) + "\nsample output\n```"))


@pytest.mark.parametrize(
    "block",
    [
        "```console\n$ true\n$ false\n```",  # a command that fails
        "```console\n$ true  # exits 2\n```",  # one that should have failed
        "```python\nraise ValueError('the example is wrong')\n```",
        "```python\noutput = runner(fileset, processor_instance=MyProcessor())\n```",  # names it never defined
        "```bash\necho neither run nor checked\n```",
        "```\nno language\n```",
    ],
    ids=["fails", "should-fail", "python", "undefined-name", "bash", "no-language"],
)
def test_a_failing_or_unmarked_block_fails(tmp_path, monkeypatch, block: str) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises((SybilFailure, ValueError, NameError)):
        run_blocks(page_with(tmp_path, block))


def test_run_blocks_share_a_namespace_files_are_written_and_exit_codes_are_kept(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    blocks = [
        "<!-- check-only -->\n```console\n$ coffea-dispatch run --json-analysis a.json --executor vanilla_slurm\n```",
        '% file: demo/other.json\n\n```json\n{"a": [1, 2]}\n```',
        "```python\nimport json\n\nvalues = json.load(open('demo/other.json'))['a']\n```",
        "```python\nassert values == [1, 2]\n```",
        "```console\n$ test -f demo/other.json\n$ coffea-dispatch run --exectuor futures  # exits 2\nerror: ...\n```",
        "```text\n$ false\n```",
    ]
    assert run_blocks(page_with(tmp_path, "\n\nText.\n\n".join(blocks))) == 6
