# The two commands a fresh machine needs: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= data
MONTH ?= 2021-01
ROWS ?= 20000
# The top-level dagster.yaml is the deployment's instance (Postgres storage). Local commands use a home with
# its SQLite twin, deploy/local/dagster.yaml, so a new user needs no Postgres server for Dagster itself.
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

.PHONY: demo dev test setup setup-test dagster-home

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

setup: $(BIN)/python dagster-home
	$(BIN)/pip install -q -e .

dagster-home:
	mkdir -p "$(DAGSTER_HOME)"
	[ -f "$(DAGSTER_HOME)/dagster.yaml" ] || cp deploy/local/dagster.yaml "$(DAGSTER_HOME)/dagster.yaml"

setup-test: $(BIN)/python
	$(BIN)/pip install -q -e ".[test]"
	./.ci/install-system-packages

# One month of every service and the zone lookup, offline, on the embedded default
# (lake in $(DATA)/lake, DuckDB at $(DATA)/warehouse.duckdb, Postgres under $(DATA)/postgres).
demo: setup
	$(BIN)/taxi-assets fake-source --out $(DATA)/source --months $(MONTH) --rows $(ROWS)
	TAXI_DATA_DIR=$(DATA) TAXI_SOURCE_URL=$(DATA)/source $(BIN)/dagster asset materialize -m taxi_assets \
		--select 'group:taxi_zones'
	TAXI_DATA_DIR=$(DATA) TAXI_SOURCE_URL=$(DATA)/source $(BIN)/dagster asset materialize -m taxi_assets \
		--select 'group:yellow or group:green or group:fhv' --partition $(MONTH)
	$(BIN)/taxi-assets summary --data-dir $(DATA) --month $(MONTH)

# The UI and the daemon (schedules, sensors, backfills) on the embedded default, at http://127.0.0.1:3000.
dev: setup
	TAXI_DATA_DIR=$(DATA) TAXI_SOURCE_URL=$${TAXI_SOURCE_URL:-$(DATA)/source} $(BIN)/dagster dev

test: setup-test
	$(BIN)/python -m pytest
