"""Helpers shared by the stores: SQL quoting and column types from the Arrow contract (DuckDB and Postgres), and
the schema rules of every store (which columns a lake file may have, which a table may gain).

Schema evolution: the TLC adds columns now and then (``cbd_congestion_fee`` in 2025). The contract appends them
as optional columns, so a clean file written before has every column but the newest, and a table created before
has the contract's columns up to the newest. A store reads such a file with the missing columns as null, and adds
the missing columns to such a table (as nullable columns: the months loaded before read null, nothing is
rewritten). Anything else (an unknown column, a required one missing, another type) is a ``ContractError``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa

from taxi_assets.resources.lake import read_parquet_footer
from taxi_assets.services import Column, ContractError, DataContract

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


def sql_type(column: Column) -> str:
    return _SQL_TYPES[column.type]


def column_definitions(contract: DataContract) -> str:
    return ", ".join(f"{ident(f.name)} {_SQL_TYPES[f.type]}" for f in contract.schema)


def column_list(contract: DataContract | Iterable[Column]) -> str:
    columns = contract.columns if isinstance(contract, DataContract) else contract
    return ", ".join(ident(c.name) for c in columns)


def select_list(contract: DataContract, present: Iterable[str]) -> str:
    """Every contract column, in contract order: the column itself if ``present``, else a typed NULL under its name."""
    have = set(present)
    return ", ".join(
        ident(c.name) if c.name in have else f"CAST(NULL AS {sql_type(c)}) AS {ident(c.name)}" for c in contract.columns
    )


def parquet_schema(file: str | Path | BinaryIO, source: str) -> pa.Schema:
    """The Arrow schema of a parquet file, from its footer; a file that is not parquet is an error naming ``source``."""
    return read_parquet_footer(str(file) if isinstance(file, Path) else file, source).schema.to_arrow_schema()


def file_columns(contract: DataContract, schema: pa.Schema, source: str) -> list[Column]:
    """The contract's columns the parquet file ``source`` has, in the file's order.

    Only optional columns may be missing (a file written before the contract gained them: they read as null). A
    column the contract does not know, a missing required column or a column of another type is a
    ``ContractError`` naming ``source`` and the column.
    """
    known = {c.name: c for c in contract.columns}
    present: list[Column] = []
    for field in schema:
        column = known.get(field.name)
        if column is None:
            raise ContractError(f"{source}: column {field.name!r} is not in the {contract.name} data contract")
        if column in present:
            raise ContractError(f"{source}: column {field.name!r} appears twice")
        if field.type != column.type:
            raise ContractError(
                f"{source}: column {field.name!r} is {field.type}, the {contract.name} data contract has {column.type}"
            )
        present.append(column)
    missing = [c.name for c in contract.columns if c.required and c not in present]
    if missing:
        raise ContractError(f"{source}: required column(s) {', '.join(map(repr, missing))} missing")
    return present


def added_columns(contract: DataContract, table_columns: Sequence[str], table: str) -> tuple[Column, ...]:
    """The columns to add to ``table`` (whose columns are ``table_columns``, in order) so it has the contract's.

    A table created from an older contract has the contract's first columns; the rest must be optional (the
    months already loaded will read them as null). Any other difference is a ``ContractError``: loads would
    fail later, or worse, misplace values.
    """
    names = [c.name for c in contract.columns]
    have = list(table_columns)
    if have != names[: len(have)]:
        differ = [f"{h} != {w}" for h, w in zip(have, names, strict=False) if h != w]
        differ = differ or [f"{len(have)} columns, the contract has {len(names)}"]
        raise ContractError(
            f"{table} does not match the {contract.name} contract ({'; '.join(differ[:5])}): "
            "drop the table (or migrate it) and reload"
        )
    added = contract.columns[len(have) :]
    required = [c.name for c in added if c.required]
    if required:
        listed = ", ".join(map(repr, required[:5])) + (f" and {len(required) - 5} more" if len(required) > 5 else "")
        raise ContractError(
            f"{table} lacks the required column(s) {listed} of the {contract.name} contract, which the months "
            "already loaded cannot fill: drop the table and reload"
        )
    return added
