# Two commands set everything up on a fresh clone (see README):
#   make demo   installs coffea-dispatch in .venv and runs the demo
#   make test   installs the test services where it can (.ci/install-services: as root on Debian), then runs
#               ruff and the test suite twice: in .venv (coffea 2026) and in .venv-coffea07, the stack a
#               HiggsDNA environment resolves to (pip install "coffea<2023": coffea 0.7, awkward 1, uproot 4,
#               numpy<2; pyarrow<20 because later pyarrow refuses numpy<2)
PYTHON ?= python3
VENV ?= .venv
VENV07 ?= .venv-coffea07
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
STAMP07 := $(VENV07)/.installed

.PHONY: demo test services test-fast test-coffea2026 test-coffea07 lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

# HiggsDNA's environment first, then coffea-dispatch into it: it must not upgrade coffea (checked)
$(STAMP07): pyproject.toml
	$(PYTHON) -m venv $(VENV07)
	$(VENV07)/bin/python -m pip install --quiet --upgrade pip
	$(VENV07)/bin/python -m pip install --quiet "coffea<2023" "pyarrow<20"
	$(VENV07)/bin/python -m pip install --quiet -e ".[test]"
	$(VENV07)/bin/python -c "import coffea, sys; sys.exit(0 if coffea.__version__.startswith('0.7.') else 'coffea was upgraded')"
	touch $(STAMP07)

demo: $(STAMP)
	$(BIN)/coffea-dispatch demo demo

test: services test-coffea2026 test-coffea07

# the system services the tests start for real (SLURM, munge, XRootD): installed as root on Debian, else named
services:
	.ci/install-services

# the fast tier (under a minute): every test not marked slow, in .venv
test-fast: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest -q -m "not slow" $(ARGS)

test-coffea2026: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest -q $(ARGS)

test-coffea07: $(STAMP07)
	$(VENV07)/bin/python -m pytest -q $(ARGS)

bench: $(STAMP)
	$(BIN)/python bench/throughput.py

clean:
	rm -rf $(VENV) $(VENV07) demo
