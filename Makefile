# Two commands set everything up on a fresh clone (see README):
#   make demo   installs coffea-dispatch in .venv and runs the demo
#   make test   installs the test services where it can (.ci/install-services: as root on Debian), then runs
#               ruff and the test suite twice: in .venv (coffea 2026) and in .venv-coffea07, the stack a
#               HiggsDNA environment resolves to (pip install "coffea<2023": coffea 0.7, awkward 1, uproot 4,
#               numpy<2; pyarrow<20 because later pyarrow refuses numpy<2); then the Dask tests in
#               .venv-dask-awkward, where coffea[dask-awkward] was installed first (its dask<2025.4)
PYTHON ?= python3
VENV ?= .venv
VENV07 ?= .venv-coffea07
VENVDA ?= .venv-dask-awkward
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
STAMP07 := $(VENV07)/.installed
STAMPDA := $(VENVDA)/.installed

.PHONY: demo test services test-fast test-coffea2026 test-coffea07 test-dask-awkward lint bench clean

# with the docs' tools: the coffea 2026 pass builds the site and runs every code block of it (tests/test_docs.py)
$(STAMP): pyproject.toml docs/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]" -r docs/requirements.txt
	touch $(STAMP)

# HiggsDNA's environment first, then coffea-dispatch into it: it must not upgrade coffea (checked)
$(STAMP07): pyproject.toml
	$(PYTHON) -m venv $(VENV07)
	$(VENV07)/bin/python -m pip install --quiet --upgrade pip
	$(VENV07)/bin/python -m pip install --quiet "coffea<2023" "pyarrow<20"
	$(VENV07)/bin/python -m pip install --quiet -e ".[test]"
	$(VENV07)/bin/python -c "import coffea, sys; sys.exit(0 if coffea.__version__.startswith('0.7.') else 'coffea was upgraded')"
	touch $(STAMP07)

# a coffea dask-awkward user's environment first (coffea[dask-awkward] pins dask<2025.4 through dask-awkward),
# then coffea-dispatch with the test tools into it: installing us must change none of its packages (checked,
# naming each). The test tools without the datasets extra: dbs3-client pins certifi~=2024.8, older than coffea's.
$(STAMPDA): pyproject.toml
	rm -rf $(VENVDA)
	$(PYTHON) -m venv $(VENVDA)
	echo '*' > $(VENVDA)/.gitignore
	$(VENVDA)/bin/python -m pip install --quiet --upgrade pip
	$(VENVDA)/bin/python -m pip install --quiet "coffea[dask-awkward]"
	$(VENVDA)/bin/python -m pip freeze --exclude-editable > $(VENVDA)/first.txt
	$(VENVDA)/bin/python -m pip install --quiet -e ".[test-tools]"
	$(VENVDA)/bin/python -m pip freeze --exclude-editable > $(VENVDA)/after.txt
	.ci/unchanged $(VENVDA)/first.txt $(VENVDA)/after.txt
	$(VENVDA)/bin/python .ci/oldest-dask
	touch $(STAMPDA)

demo: $(STAMP)
	$(BIN)/coffea-dispatch demo demo

# every pass runs whatever the others gave, each logged to .test-logs/<pass>.log; the end says how each went
# (.ci/report-passes) and the command fails if any did. About 35 minutes on 2 cores from a fresh clone.
PASSES := test-coffea2026 test-coffea07 test-dask-awkward
test: services
	@rm -rf .test-logs && mkdir -p .test-logs
	@for pass in $(PASSES); do \
		( $(MAKE) --no-print-directory $$pass; echo "pass exit status $$?" ) 2>&1 | tee .test-logs/$$pass.log; \
	done
	@.ci/report-passes .test-logs $(PASSES)

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

# the dask-awkward test and our Dask features (TLS, dashboard token, streaming, KilledWorker diagnosis, SLURM)
# on the oldest dask we admit, the one coffea[dask-awkward] resolves to
test-dask-awkward: $(STAMPDA)
	$(VENVDA)/bin/python -m pytest -q tests/test_dask_awkward.py tests/test_dask.py tests/test_dask_batch.py \
		tests/test_samples_formats.py::test_coffea_format_through_preprocess_and_apply_to_fileset \
		tests/test_check_command.py::test_apply_to_fileset_on_the_coffea_form_reads_the_events_left $(ARGS)

bench: $(STAMP)
	$(BIN)/python bench/throughput.py

clean:
	rm -rf $(VENV) $(VENV07) $(VENVDA) demo docs/_build .test-logs

include docs/docs.mk
