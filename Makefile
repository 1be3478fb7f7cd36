# The two commands a fresh machine needs: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= data
MONTH ?= 2021-01
ROWS ?= 20000

.PHONY: demo test setup setup-test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

setup: $(BIN)/python
	$(BIN)/pip install -q -e .

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

test: setup-test
	$(BIN)/python -m pytest
