"""SQL helpers shared by the DuckDB and Postgres stores: quoting, and column types from the Arrow contract."""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa

from taxi_assets.services import DataContract

# Arrow type -> SQL type; the same names serve DuckDB and Postgres.
_SQL_TYPES = {
    pa.int64(): "BIGINT",
    pa.float64(): "DOUBLE PRECISION",
    pa.string(): "TEXT",
    pa.timestamp("us"): "TIMESTAMP",
}


def ident(*parts: str) -> str:
    """A quoted, dotted SQL identifier: ``ident("nyc_taxi", "yellow_trips")`` -> ``"nyc_taxi"."yellow_trips"``."""
    return ".".join('"' + p.replace('"', '""') + '"' for p in parts)


def timestamp_literal(value: datetime) -> str:
    """A timestamp literal for DDL, where parameters cannot be bound (partition bounds, CHECK constraints)."""
    return f"TIMESTAMP '{value:%Y-%m-%d %H:%M:%S}'"


def column_definitions(contract: DataContract) -> str:
    return ", ".join(f"{ident(f.name)} {_SQL_TYPES[f.type]}" for f in contract.schema)


def column_list(contract: DataContract) -> str:
    return ", ".join(ident(c.name) for c in contract.columns)
