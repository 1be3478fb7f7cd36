"""The summaries' IO manager on the GCP target: ``AtomicBigQueryPandasIOManager``.

dagster-gcp-pandas' ``BigQueryPandasIOManager`` takes no credentials nor endpoint (only project and location),
deletes the month with one job and loads with another (not atomic), and uploads by ``load_table_from_dataframe``
(a multipart upload, which the BigQuery emulator rejects). Here the client is built like ``BigQueryClientResource``
(key as path or JSON, ``api_endpoint``), the DataFrame is loaded by a resumable upload into a staging table
(created first with an explicit schema: the emulator does not create tables from load jobs), then one
multi-statement transaction deletes the month and inserts the staged rows. As for the trips
(``BigQueryWarehouse``): the transaction is rerun with jittered backoff when BigQuery aborts it for a concurrent
update, a job past its timeout is cancelled before its staging table is dropped, and a dataset or table with a
default expiration is refused. Reads skip the BigQuery Storage API when an endpoint is set (the emulator has none).

Its own module, imported by the GCP target only: the embedded default loads no Google client library.
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
from dagster_gcp.bigquery.io_manager import BigQueryClient, _partition_where_clause
from dagster_gcp_pandas import BigQueryPandasIOManager, BigQueryPandasTypeHandler

from taxi_assets.resources.bigquery import (
    BQ_TYPES,
    JobTimeout,
    bigquery_client,
    check_no_expiration,
    classify_errors,
    retry_on_concurrent_update,
    table_exists,
    wait_for_job,
)
from taxi_assets.resources.gcp_config import api_endpoint_field, credentials_field
from taxi_assets.resources.io_managers import NamedTableDbIOManager, row_counts
from taxi_assets.settings import BQ_ENDPOINT


def _bigquery_schema(table: pa.Table):
    from google.cloud import bigquery

    unknown = [f"{f.name} ({f.type})" for f in table.schema if f.type not in BQ_TYPES]
    if unknown:
        raise TypeError(f"no BigQuery type for the DataFrame column(s) {', '.join(unknown)}")
    return [bigquery.SchemaField(f.name, BQ_TYPES[f.type], mode="NULLABLE") for f in table.schema]


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
        config = context.resource_config or {}
        with bigquery_client(
            config.get("project"), config.get("location"), config.get("credentials"), config.get("api_endpoint")
        ) as client:
            yield client


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
        context.add_output_metadata(row_counts(context, len(obj), total, "bigquery"))

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
        return NamedTableDbIOManager(
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
