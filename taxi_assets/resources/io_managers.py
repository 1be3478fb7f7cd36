"""IO managers for the small pandas tables (the summaries): each replaces an asset's month in one transaction.

The trip tables stay on resources (``TableStore``): a month of trips is millions of rows streamed from the lake's
parquet into the store, never a DataFrame in this process. A summary is a few hundred rows a month that the asset
computes and returns: the IO manager stores it, and reads it back for a downstream asset. Three of them, one
behaviour (the month of the partition, or the months of a backfill run, replaced atomically):

- ``AtomicDuckDBPandasIOManager``: dagster-duckdb-pandas' ``DuckDBPandasIOManager``, whose stock client deletes the
  month and inserts the DataFrame as two autocommitted statements (a reader could see the month missing, a failed
  insert left it deleted). Here the connection runs in a transaction, so schema, delete and insert commit together.
- ``AtomicBigQueryPandasIOManager``: dagster-gcp-pandas' ``BigQueryPandasIOManager``, whose stock client takes no
  credentials nor endpoint (only project and location), deletes with one job and loads with another (not atomic),
  and uploads by ``load_table_from_dataframe`` (a multipart upload, which the BigQuery emulator rejects). Here: the
  client is built like ``BigQueryClientResource`` (key as path or JSON, ``api_endpoint``), the DataFrame is loaded
  by a resumable upload into a staging table (created first with an explicit schema: the emulator does not create
  tables from load jobs), then one multi-statement transaction deletes the month and inserts the staged rows.
  As for the trips (``BigQueryWarehouse``): the transaction is rerun with jittered backoff when BigQuery aborts
  it for a concurrent update, a job past its timeout is cancelled before its staging table is dropped, and a
  dataset or table with a default expiration is refused. Reads skip the BigQuery Storage API when an endpoint is
  set (the emulator has none).
- ``PostgresPandasIOManager``: ours. Delete the month, binary COPY (ADBC) the DataFrame, in one transaction on a
  connection from ``PostgresStore`` (``TAXI_POSTGRES_URL`` or the embedded server).

All three follow the conventions of Dagster's database IO managers: the asset's ``partition_expr`` metadata is the
SQL expression compared with the partition's time window, the asset's ``schema`` metadata (else the IO manager's)
is the schema or dataset. The table is the asset's ``table`` metadata (else the last part of its key), so
``yellow/warehouse_trips_by_borough_day`` and ``yellow/postgres_trips_by_borough_day`` both store
``nyc_taxi.yellow_trips_by_borough_day``, as ``warehouse_trips`` and ``postgres_trips`` both store ``yellow_trips``.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from dagster._core.storage.db_io_manager import DbIOManager, DbTypeHandler, TableSlice
from dagster_duckdb.io_manager import DuckDbClient
from dagster_duckdb_pandas import DuckDBPandasIOManager, DuckDBPandasTypeHandler
from dagster_gcp.bigquery.io_manager import BigQueryClient, _partition_where_clause
from dagster_gcp_pandas import BigQueryPandasIOManager, BigQueryPandasTypeHandler
from pydantic import Field

from taxi_assets.resources.bigquery import (
    JobTimeout,
    check_no_expiration,
    classify_errors,
    retry_on_concurrent_update,
    table_exists,
    wait_for_job,
)
from taxi_assets.resources.gcp_config import (
    api_endpoint_field,
    client_options,
    credentials_field,
    load_credentials,
)
from taxi_assets.resources.postgres import PostgresStore
from taxi_assets.resources.sql import ident, timestamp_literal
from taxi_assets.settings import BQ_ENDPOINT

TABLE_METADATA = "table"  # asset metadata: the table's name, when it is not the last part of the asset key
PARTITION_EXPR_METADATA = "partition_expr"  # the name Dagster's database IO managers read


class _NamedTableDbIOManager(DbIOManager):
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
        return _NamedTableDbIOManager(
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


# -- BigQuery --------------------------------------------------------------------------------------------------

# Arrow type of a DataFrame column -> BigQuery type (naive timestamps are DATETIME, as in the trips tables).
_BQ_TYPES = {
    pa.int64(): "INTEGER",
    pa.float64(): "FLOAT",
    pa.string(): "STRING",
    pa.large_string(): "STRING",
    pa.bool_(): "BOOLEAN",
    pa.date32(): "DATE",
    pa.timestamp("us"): "DATETIME",
    pa.timestamp("ns"): "DATETIME",
}


def _bigquery_schema(table: pa.Table):
    from google.cloud import bigquery

    unknown = [f"{f.name} ({f.type})" for f in table.schema if f.type not in _BQ_TYPES]
    if unknown:
        raise TypeError(f"no BigQuery type for the DataFrame column(s) {', '.join(unknown)}")
    return [bigquery.SchemaField(f.name, _BQ_TYPES[f.type], mode="NULLABLE") for f in table.schema]


def _bq_table_id(table_slice: TableSlice, table: str | None = None) -> str:
    return f"{table_slice.database}.{table_slice.schema}.{table or table_slice.table}"


def _bq_where(table_slice: TableSlice) -> str:
    # The stock IO manager's own clause (``partition_expr >= 'start' AND partition_expr < 'end'``).
    return _partition_where_clause(table_slice.partition_dimensions) if table_slice.partition_dimensions else "TRUE"


class _BigQueryClient(BigQueryClient):
    """dagster-gcp's client, built with the key and endpoint of the IO manager's config; the partition's delete
    happens in the type handler's transaction, with the insert."""

    @staticmethod
    def delete_table_slice(context: dg.OutputContext, table_slice: TableSlice, connection) -> None:
        pass  # see _AtomicBigQueryPandasTypeHandler.handle_output

    @staticmethod
    def ensure_schema_exists(context: dg.OutputContext, table_slice: TableSlice, connection) -> None:
        from google.cloud import bigquery

        dataset = bigquery.Dataset(f"{table_slice.database}.{table_slice.schema}")
        dataset.location = (context.resource_config or {}).get("location")
        check_no_expiration(dataset=connection.create_dataset(dataset, exists_ok=True))

    @staticmethod
    @contextmanager
    def connect(context, table_slice: TableSlice) -> Iterator[Any]:
        from google.cloud import bigquery

        config = context.resource_config or {}
        endpoint = config.get("api_endpoint")
        client = bigquery.Client(
            project=config.get("project"),
            location=config.get("location"),
            credentials=load_credentials(config.get("credentials"), endpoint),
            client_options=client_options(endpoint),
        )
        try:
            yield client
        finally:
            client.close()


_CANCEL_WAIT_S = 60  # how long a cancelled job may take to stop before its staging table is dropped
_SWAP_RETRY_TIMEOUT_S = 300  # how long a transaction aborted by concurrent updates is rerun


class _AtomicBigQueryPandasTypeHandler(BigQueryPandasTypeHandler):
    def handle_output(self, context: dg.OutputContext, table_slice: TableSlice, obj: pd.DataFrame, connection):

        config = context.resource_config or {}
        timeout = config.get("timeout")
        table_id = _bq_table_id(table_slice)
        with classify_errors(table_id):
            self._replace(context, table_slice, obj, connection, table_id, timeout)

    def _replace(self, context, table_slice: TableSlice, obj: pd.DataFrame, connection, table_id: str, timeout):
        from google.cloud import bigquery

        def run(sql: str) -> None:  # one job; past the timeout it is cancelled, and waited for, before clean-up
            wait_for_job(connection.query(sql), timeout, _CANCEL_WAIT_S, table_id)

        def transaction(sql: str) -> None:  # rerun while a concurrent update of the table aborts it
            retry_on_concurrent_update(lambda: run(sql), _SWAP_RETRY_TIMEOUT_S, table_id)

        delete = f"DELETE FROM `{table_id}` WHERE {_bq_where(table_slice)};"
        if obj.empty:  # the month has no rows: delete the old ones (if the table exists), insert nothing
            if table_exists(connection, table_id):
                check_no_expiration(table=connection.get_table(table_id))
                transaction(delete)
        else:
            arrow = pa.Table.from_pandas(obj, preserve_index=False)
            schema = _bigquery_schema(arrow)
            check_no_expiration(table=connection.create_table(bigquery.Table(table_id, schema=schema), exists_ok=True))
            # A unique staging table per write, expiring by itself should the run die before it is dropped.
            staging_id = _bq_table_id(table_slice, f"_staging_{table_slice.table}_{uuid.uuid4().hex[:8]}")
            staging = bigquery.Table(staging_id, schema=schema)
            staging.expires = datetime.now(UTC) + timedelta(hours=24)
            connection.create_table(staging)
            keep_staging = False
            try:
                parquet = io.BytesIO()
                pq.write_table(arrow, parquet)
                parquet.seek(0)
                job_config = bigquery.LoadJobConfig(
                    source_format=bigquery.SourceFormat.PARQUET,
                    schema=schema,
                    write_disposition=bigquery.WriteDisposition.WRITE_APPEND,
                )
                # size=None: a resumable upload (the emulator rejects the multipart one the client uses below 5 MB).
                load = connection.load_table_from_file(parquet, staging_id, job_config=job_config, size=None)
                wait_for_job(load, timeout, _CANCEL_WAIT_S, staging_id)
                columns = ", ".join(f"`{name}`" for name in arrow.schema.names)
                transaction(
                    f"BEGIN TRANSACTION;\n{delete}\n"
                    f"INSERT INTO `{table_id}` ({columns}) SELECT {columns} FROM `{staging_id}`;\n"
                    "COMMIT TRANSACTION;"
                )
            except JobTimeout as error:
                keep_staging = not error.stopped  # a job still reads it: it expires by itself instead
                raise
            finally:
                if not keep_staging:
                    connection.delete_table(staging_id, not_found_ok=True)
        (total,) = next(iter(connection.query(f"SELECT COUNT(*) FROM `{table_id}`").result(timeout=timeout)))
        context.add_output_metadata(_row_counts(context, len(obj), total, "bigquery"))

    def load_input(self, context: dg.InputContext, table_slice: TableSlice, connection) -> pd.DataFrame:
        if table_slice.partition_dimensions and len(context.asset_partition_keys) == 0:
            return pd.DataFrame()
        config = context.resource_config or {}
        job = connection.query(BigQueryClient.get_select_statement(table_slice), timeout=config.get("timeout"))
        # The Storage Read API is faster on BigQuery; an emulator (an endpoint is set) has none.
        return job.to_dataframe(create_bqstorage_client=not config.get("api_endpoint"))


class AtomicBigQueryPandasIOManager(BigQueryPandasIOManager):
    """``BigQueryPandasIOManager`` that replaces the partition in one transaction, takes a key as a path or JSON
    (``credentials``, like ``BigQueryClientResource``) and an endpoint (an emulator).

    Columns keep their names (the stock handler upper-cases them on write and lower-cases them on read).

    Example:
        .. code-block:: python

            AtomicBigQueryPandasIOManager(project=dg.EnvVar("TAXI_GCP_PROJECT"), dataset="nyc_taxi", location="US")
    """

    credentials: str | None = credentials_field()
    api_endpoint: str | None = api_endpoint_field("BigQuery", BQ_ENDPOINT)

    def create_io_manager(self, context) -> DbIOManager:
        return _NamedTableDbIOManager(
            db_client=_BigQueryClient(write_mode=self.write_mode, gcp_credentials=self.gcp_credentials),
            io_manager_name="BigQueryIOManager",
            database=self.project,
            schema=self.dataset,
            type_handlers=self.type_handlers(),
            default_load_type=self.default_load_type(),
        )

    @staticmethod
    def type_handlers() -> Sequence[DbTypeHandler]:
        return [_AtomicBigQueryPandasTypeHandler()]


# -- Postgres --------------------------------------------------------------------------------------------------


def _row_counts(context: dg.OutputContext, written: int, total: int, storage_kind: str) -> dict[str, Any]:
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
            {"dagster/table_name": f"{schema}.{table}", **_row_counts(context, len(obj), total, "postgres")}
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
