# The documentation site (included by the Makefile): `make docs` installs Sphinx and its extensions into .venv
# (docs/requirements.txt, once) and builds docs/_build/html with warnings as errors, nitpicky: every
# cross-reference must resolve. tests/test_docs.py builds it the same way and runs every code block of the pages.
DOCS_STAMP := $(VENV)/.docs-installed

.PHONY: docs

$(DOCS_STAMP): docs/requirements.txt $(STAMP)
	$(BIN)/python -m pip install --quiet -r docs/requirements.txt
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	$(BIN)/sphinx-build -W --keep-going -n -b html docs docs/_build/html
