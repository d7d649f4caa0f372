# milkcells: one command to run the demo, one to run the tests; each sets itself up.
#   make run    create .venv, install milkcells, run the workflow on the simulated demo, write the report
#   make test   create .venv, install milkcells with test extras, run the test suite
PYTHON ?= python3
VENV ?= .venv
CORES ?= $(shell nproc 2>/dev/null || echo 2)
BIN := $(VENV)/bin
STAMP := $(VENV)/.milkcells-installed
export PATH := $(abspath $(BIN)):$(PATH)
# numba's compiled functions are cached here across rule processes
export NUMBA_CACHE_DIR ?= $(abspath .cache/numba)
export MPLCONFIGDIR ?= $(abspath .cache/matplotlib)

.PHONY: install run report test lint clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements/constraints.txt -e ".[test]"
	touch $@

run: $(STAMP)
	$(BIN)/snakemake --cores $(CORES)
	$(BIN)/snakemake --report results/report.html

report: $(STAMP)
	$(BIN)/snakemake --report results/report.html

test: $(STAMP)
	$(BIN)/python -m pytest

LINT_STAMP := $(VENV)/.milkcells-lint-installed

$(LINT_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -c requirements/constraints.txt -e ".[test,lint]"
	touch $@

# the Snakemake workflow catalog's checks: Python lint and format, Snakefile format, snakemake --lint
lint: $(LINT_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check Snakefile workflow
	$(BIN)/snakemake --lint

clean:
	rm -rf results results_test results_archive_test .snakemake logs resources/demo
