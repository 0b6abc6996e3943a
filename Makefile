# market_pipeline: the two commands a fresh machine needs are `make run` and `make test`.
# Each creates .venv with Python 3.11 and installs the project into it first (once; again when
# pyproject.toml changes).

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-market-pipeline
PYTEST_ARGS ?=
# two test processes on a machine with two or more cores and a load below its cores, else one:
# the suite mostly waits on servers and runs, which two workers overlap on a quiet machine; on a busy
# one a second worker only adds to the load
TEST_WORKERS ?= $(shell $(PYTHON) -c 'import os; n = os.cpu_count() or 1; print(2 if n > 1 and os.getloadavg()[0] < n else 0)' 2>/dev/null || echo 0)

.PHONY: install run test dev bench validate clean

$(STAMP): pyproject.toml market_pipeline/devtools/dagster_home_guard.py
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "market_pipeline needs Python 3.11; set PYTHON=/path/to/python3.11")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m market_pipeline.devtools.dagster_home_guard install
	touch $(STAMP)

install: $(STAMP)

## the main job, headless: sandbox + demo symbols when POLYGON_API_KEY is unset
run: install
	$(BIN)/market-pipeline run

## the whole test suite (real SQLite, PostgreSQL, HTTP sandbox, Dagster) on TEST_WORKERS processes
## (pytest-xdist; TEST_WORKERS=0 runs it in one process, TEST_WORKERS=2 on two)
test: install
	$(BIN)/python -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

## the Dagster UI and daemon on http://127.0.0.1:3000 (sandbox when POLYGON_API_KEY is unset);
## DEV_ARGS="--verbose" logs the daemon at INFO, DEV_ARGS="--port 3001" serves another port
DEV_ARGS ?=
dev: install
	exec $(BIN)/python -m market_pipeline.devtools.devstack $(DEV_ARGS)

## benchmarks (never part of `make test`); writes BENCHMARKS.md
bench: install
	$(BIN)/python -m benchmarks.run_all

## dg check defs and dg list defs: every definition under market_pipeline/defs/ loads (without
## DAGSTER_HOME, on a temporary Dagster home with the project's dagster.yaml, as Dagster does)
validate: install
	@$(BIN)/python -m market_pipeline.devtools.instance check "make validate"
	$(BIN)/dg check defs
	$(BIN)/dg list defs

clean:
	rm -rf .market_pipeline .pytest_cache
