"""Sphinx configuration of coffea-dispatch's documentation site (`make docs`).

MyST Markdown pages; the CLI reference is drawn from the command line's own parser (sphinx-argparse) and the
Python API's from its docstrings (autodoc), so neither is written twice. The build is nitpicky and `make docs`
turns warnings into errors: every cross-reference must resolve. No intersphinx: the docs build offline.
"""

from __future__ import annotations

import sys
from importlib.metadata import version as installed_version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "_ext"))  # cli_reference: the parser the CLI page draws

project = "coffea-dispatch"
author = "coffea-dispatch developers"
copyright = "coffea-dispatch developers"  # noqa: A001 (Sphinx's name)
release = installed_version("coffea-dispatch")  # the installed package's, so the site names what runs
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinxarg.ext",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_ext", "requirements.txt", "docs.mk"]

# headings get anchors (`executors.md#dask-on-a-batch-system`) down to ###
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence", "deflist"]

nitpicky = True
# types in the API's signatures that belong to other packages (no intersphinx offline): named, not linked
nitpick_ignore = [
    ("py:class", "coffea.processor.ProcessorABC"),
    ("py:class", "coffea.processor.processor.ProcessorABC"),
    ("py:class", "coffea.processor.executor.ExecutorBase"),
    # the standard library's (no intersphinx offline)
    ("py:class", "os.PathLike"),
    ("py:class", "pathlib.Path"),
    ("py:class", "collections.abc.Iterator"),
]

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_class_signature = "mixed"
add_module_names = False

html_theme = "furo"
html_title = f"coffea-dispatch {release}"
pygments_style = "sphinx"


def _no_constructor_signature(app, what, name, obj, options, signature, return_annotation):
    """Results and option sets are made by the API, never by the user: their dataclass constructors (a dozen
    fields of internal types) are left out of the page."""
    if what == "class" or name.endswith((".__init__", ".__new__")):
        return "", None
    return None


def setup(app) -> None:
    app.connect("autodoc-process-signature", _no_constructor_signature)
