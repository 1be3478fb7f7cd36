"""IO managers for the small pandas tables (the summaries): each replaces an asset's month in one transaction.

The trip tables stay on resources (``TableStore``): a month of trips is millions of rows streamed from the lake's
parquet into the store, never a DataFrame in this process. A summary is a few hundred rows a month that the asset
computes and returns: the IO manager stores it, and reads it back for a downstream asset. Three of them, one
behaviour (the month of the partition, or the months of a backfill run, replaced atomically):

- ``AtomicDuckDBPandasIOManager``: dagster-duckdb-pandas' ``DuckDBPandasIOManager``, whose stock client deletes the
  month and inserts the DataFrame as two autocommitted statements (a reader could see the month missing, a failed
  insert left it deleted). Here the connection runs in a transaction, so schema, delete and insert commit together.
- ``AtomicBigQueryPandasIOManager`` (``bigquery_io_manager.py``, loaded by the GCP target only): the same for
  dagster-gcp-pandas' ``BigQueryPandasIOManager``, by a staging table and one multi-statement transaction.
- ``PostgresPandasIOManager``: ours. Delete the month, binary COPY (ADBC) the DataFrame, in one transaction on a
  connection from ``PostgresStore`` (``TAXI_POSTGRES_URL`` or the embedded server).

All three follow the conventions of Dagster's database IO managers: the asset's ``partition_expr`` metadata is the
SQL expression compared with the partition's time window, the asset's ``schema`` metadata (else the IO manager's)
is the schema or dataset. The table is the asset's ``table`` metadata (else the last part of its key), so
``yellow/warehouse_trips_by_borough_day`` and ``yellow/postgres_trips_by_borough_day`` both store
``nyc_taxi.yellow_trips_by_borough_day``, as ``warehouse_trips`` and ``postgres_trips`` both store ``yellow_trips``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import dagster as dg
import pandas as pd
import pyarrow as pa
from dagster._core.storage.db_io_manager import DbIOManager, DbTypeHandler, TableSlice
from dagster_duckdb.io_manager import DuckDbClient
from dagster_duckdb_pandas import DuckDBPandasIOManager, DuckDBPandasTypeHandler
from pydantic import Field

from taxi_assets.resources.postgres import PostgresStore
from taxi_assets.resources.sql import ident, timestamp_literal

TABLE_METADATA = "table"  # asset metadata: the table's name, when it is not the last part of the asset key
PARTITION_EXPR_METADATA = "partition_expr"  # the name Dagster's database IO managers read


class NamedTableDbIOManager(DbIOManager):
    """Dagster's ``DbIOManager`` with the table named by the asset's ``table`` metadata (else, as stock, the last
    part of the asset key): several services' summaries can then share a name in the UI and each have a table."""

    def _get_table_slice(self, context, output_context) -> TableSlice:
        table_slice = super()._get_table_slice(context, output_context)
        table = (output_context.definition_metadata or {}).get(TABLE_METADATA)
        return table_slice._replace(table=table) if table else table_slice


# -- DuckDB ----------------------------------------------------------------------------------------------------


class _TransactionalDuckDbClient(DuckDbClient):
    """dagster-duckdb's client with the connection in a transaction: ``DbIOManager`` ensures the schema, deletes
    the partition and lets the type handler insert on the connection this yields, so all of it commits at once."""

    @staticmethod
    def get_table_name(table_slice: TableSlice) -> str:
        # ``dagster/table_name`` as a user types it in DuckDB (``nyc_taxi.yellow_trips``), like the trips assets';
        # the stock name is prefixed with the database file's path.
        return f"{table_slice.schema}.{table_slice.table}"

    @staticmethod
    def delete_table_slice(context: dg.OutputContext, table_slice: TableSlice, connection) -> None:
        # The stock client runs the DELETE and ignores the error of a missing table; asked first instead, so no
        # failed statement is ever part of the transaction.
        exists = connection.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
            [table_slice.schema, table_slice.table],
        ).fetchone()[0]
        if exists:
            DuckDbClient.delete_table_slice(context, table_slice, connection)

    @staticmethod
    @contextmanager
    def connect(context, table_slice: TableSlice) -> Iterator[Any]:
        with DuckDbClient.connect(context, table_slice) as conn:
            conn.begin()
            try:
                yield conn
            except BaseException:
                conn.rollback()
                conn.close()
                raise
            conn.commit()


class AtomicDuckDBPandasIOManager(DuckDBPandasIOManager):
    """``DuckDBPandasIOManager`` whose partition replacement (delete, then insert) is one transaction.

    Example:
        .. code-block:: python

            AtomicDuckDBPandasIOManager(database="data/warehouse.duckdb", schema="nyc_taxi")
    """

    def create_io_manager(self, context) -> DbIOManager:
        return NamedTableDbIOManager(
            db_client=_TransactionalDuckDbClient(),
            database=self.database,
            schema=self.schema_,
            type_handlers=self.type_handlers(),
            default_load_type=self.default_load_type(),
            io_manager_name="DuckDBIOManager",
        )

    @staticmethod
    def type_handlers() -> Sequence[DbTypeHandler]:
        return [DuckDBPandasTypeHandler()]


# -- Postgres --------------------------------------------------------------------------------------------------


def row_counts(context: dg.OutputContext, written: int, total: int, storage_kind: str) -> dict[str, Any]:
    """``dagster/partition_row_count`` for what this run wrote (its months), ``dagster/row_count`` for the table."""
    counts: dict[str, Any] = {"dagster/row_count": total, "dagster/storage_kind": storage_kind}
    if context.has_asset_partitions:
        counts["dagster/partition_row_count"] = written
    return counts


class PostgresPandasIOManager(dg.ConfigurableIOManager):
    """Pandas DataFrames in Postgres tables: a partition's rows replaced in one transaction (delete the time
    window's rows, binary COPY of the DataFrame by ADBC), the table created from the DataFrame's columns if missing.

    The connection comes from ``postgres`` (the same ``PostgresStore`` as the trips: ``TAXI_POSTGRES_URL`` or the
    embedded server).

    Example:
        .. code-block:: python

            PostgresPandasIOManager(postgres=PostgresStore(url=dg.EnvVar("TAXI_POSTGRES_URL")))
    """

    postgres: PostgresStore
    schema_name: str = Field(default="nyc_taxi", description="Schema of the tables (an asset's schema metadata wins).")

    def _target(self, context: dg.OutputContext | dg.InputContext, output: dg.OutputContext) -> tuple[str, str, str]:
        """Schema, table and the WHERE clause of the partitions ``context`` covers (``TRUE`` if unpartitioned)."""
        metadata = output.definition_metadata or {}
        schema = metadata.get("schema") or self.schema_name
        table = metadata.get(TABLE_METADATA) or context.asset_key.path[-1]
        where = "TRUE"
        if context.has_asset_partitions:
            expr = metadata.get(PARTITION_EXPR_METADATA)
            if not expr:
                raise ValueError(
                    f"{context.asset_key.to_user_string()} is partitioned but has no partition_expr metadata"
                )
            window = context.asset_partitions_time_window
            where = f"{expr} >= {timestamp_literal(window.start)} AND {expr} < {timestamp_literal(window.end)}"
        return schema, table, where

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame) -> None:
        schema, table, where = self._target(context, context)
        with self.postgres.connect() as conn, conn.cursor() as cursor:
            cursor.execute(f"CREATE SCHEMA IF NOT EXISTS {ident(schema)}")
            existed = self._exists(cursor, schema, table)
            if existed:
                cursor.execute(f"DELETE FROM {ident(schema, table)} WHERE {where}")
            if not obj.empty:
                # create_append: CREATE TABLE IF NOT EXISTS from the Arrow schema, then COPY; in this transaction.
                cursor.adbc_ingest(
                    table, pa.Table.from_pandas(obj, preserve_index=False), mode="create_append", db_schema_name=schema
                )
            total = 0
            if existed or not obj.empty:
                cursor.execute(f"SELECT count(*) FROM {ident(schema, table)}")
                total = cursor.fetchone()[0]
            conn.commit()
        context.add_output_metadata(
            {"dagster/table_name": f"{schema}.{table}", **row_counts(context, len(obj), total, "postgres")}
        )

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        schema, table, where = self._target(context, context.upstream_output)
        with self.postgres.connect() as conn, conn.cursor() as cursor:
            if not self._exists(cursor, schema, table):
                return pd.DataFrame()
            cursor.execute(f"SELECT * FROM {ident(schema, table)} WHERE {where}")
            return cursor.fetch_arrow_table().to_pandas()

    @staticmethod
    def _exists(cursor, schema: str, table: str) -> bool:
        cursor.execute("SELECT to_regclass($1) IS NOT NULL", parameters=(ident(schema, table),))
        return bool(cursor.fetchone()[0])
