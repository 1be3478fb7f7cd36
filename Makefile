# The two commands a fresh machine needs: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= data
MONTH ?= 2021-01
ROWS ?= 20000
# Dagster's instance is the top-level dagster.yaml: SQLite under .dagster_home/ in this folder, no server. Dagster
# reads it whenever DAGSTER_HOME is unset, so make and plain `dagster`/`dg` commands share it; nothing is set here.

.PHONY: demo dev test setup setup-test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# The project and `dg` (the dev extra).
setup: $(BIN)/python
	$(BIN)/pip install -q -e ".[dev]"

setup-test: $(BIN)/python
	$(BIN)/pip install -q -e ".[test]"
	./.ci/install-system-packages

# One month of every service and the zone lookup, offline, on the embedded default
# (lake in $(DATA)/lake, DuckDB at $(DATA)/warehouse.duckdb, Postgres under $(DATA)/postgres).
# The files are TLC-shaped parquet in the TLC's layout, written offline; the demo offers just that month (first
# month and freshness both end there), so the UI shows no month as late.
DEMO_ENV = TAXI_DATA_DIR=$(DATA) TAXI_TLC_URL=$${TAXI_TLC_URL:-$(DATA)/source} \
	TAXI_FIRST_MONTH=$${TAXI_FIRST_MONTH:-$(MONTH)} TAXI_FRESHNESS_LAST_MONTH=$${TAXI_FRESHNESS_LAST_MONTH:-$(MONTH)}
demo: setup
	$(BIN)/taxi-assets fake-source --out $(DATA)/source --months $(MONTH) --rows $(ROWS)
	$(DEMO_ENV) $(BIN)/dagster asset materialize -m taxi_assets --select 'group:taxi_zones'
	$(DEMO_ENV) $(BIN)/dagster asset materialize -m taxi_assets \
		--select 'group:yellow or group:green or group:fhv or group:fhvhv' --partition $(MONTH)
	$(BIN)/taxi-assets summary --data-dir $(DATA) --month $(MONTH)

# The UI and the daemon (schedules, sensors, backfills) on the embedded default, at http://127.0.0.1:3000,
# over the demo's files (set TAXI_TLC_URL, TAXI_FIRST_MONTH and TAXI_FRESHNESS_LAST_MONTH for others).
dev: setup
	$(DEMO_ENV) $(BIN)/dagster dev

test: setup-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest
