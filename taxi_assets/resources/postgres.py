"""Postgres tables, loaded by binary COPY of Arrow record batches and swapped in atomically.

Each service's table is partitioned by month on ``pickup_datetime``. A month is loaded into a fresh table
(streamed from the parquet file by the ADBC driver's binary COPY, no Python per row), checked against the
month's range, then swapped in by one short transaction: detach and drop the old partition, attach the new one.
Readers see the old month or the new one; a failed load leaves the old partition in place and drops the
half-filled load table.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import adbc_driver_postgresql.dbapi as adbc
import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from taxi_assets.partitions import Month
from taxi_assets.resources.lake import Lake
from taxi_assets.resources.sql import column_definitions, ident, timestamp_literal
from taxi_assets.resources.stores import LoadResult, TableStore
from taxi_assets.services import DataContract, TripService

# Rows per record batch sent to COPY: large enough to amortize per-batch overhead, small enough to stay bounded.
COPY_BATCH_ROWS = 128_000


def redact(url: str) -> str:
    """``url`` with its password replaced, fit for messages and metadata."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


class PostgresStore(TableStore):
    """Tables in Postgres: a server from ``TAXI_POSTGRES_URL``, or an embedded one started from the pip package
    ``pgserver`` (Postgres 16) under ``embedded_dir`` and reused by later runs.

    Example:
        .. code-block:: python

            postgres = PostgresStore(url=dg.EnvVar("TAXI_POSTGRES_URL"))
            postgres = PostgresStore(embedded_dir="data/postgres")  # the embedded default
    """

    url: str | None = Field(
        default=None,
        description="libpq URL (postgresql://user:password@host:port/db, or ?host=/socket/dir); "
        "unset: the embedded server. Give it with EnvVar: it may hold a password.",
    )
    embedded_dir: str | None = Field(default=None, description="Data folder of the embedded Postgres.")
    schema_name: str = Field(default="nyc_taxi", description="Schema that holds the tables.")

    def connection_url(self) -> str:
        if self.url:
            return self.url
        if not self.embedded_dir:
            raise ValueError("PostgresStore needs url (TAXI_POSTGRES_URL) or embedded_dir")
        import pgserver  # imported lazily: only the embedded default needs it

        Path(self.embedded_dir).mkdir(parents=True, exist_ok=True)
        # cleanup_mode=None keeps the server running after this process, so later runs and psql reuse it.
        return pgserver.get_server(self.embedded_dir, cleanup_mode=None).get_uri()

    @contextmanager
    def connect(self) -> Iterator[adbc.Connection]:
        """A connection in a transaction: committed by the caller, rolled back on error."""
        url = self.connection_url()
        try:
            conn = adbc.connect(url)
        except adbc.Error as error:
            raise ConnectionError(f"cannot connect to Postgres at {redact(url)}: {error}") from None
        try:
            yield conn
        except BaseException:
            conn.rollback()
            raise
        finally:
            conn.close()

    def _execute(self, conn: adbc.Connection, *statements: str) -> None:
        with conn.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)

    def _scalar(self, conn: adbc.Connection, query: str):
        with conn.cursor() as cursor:
            cursor.execute(query)
            return cursor.fetchone()[0]

    def _copy(self, conn: adbc.Connection, table: str, contract: DataContract, parquet: Path) -> int:
        """Stream ``parquet`` into ``table`` by binary COPY, one record batch at a time."""
        log = dg.get_dagster_logger()
        parquet_file = pq.ParquetFile(str(parquet))
        total = parquet_file.metadata.num_rows

        def batches():
            sent = 0
            for batch in parquet_file.iter_batches(batch_size=COPY_BATCH_ROWS, columns=contract.schema.names):
                yield batch
                sent += batch.num_rows
                if total > 10 * COPY_BATCH_ROWS and sent % (10 * COPY_BATCH_ROWS) < COPY_BATCH_ROWS:
                    log.info(f"COPY into {self.schema_name}.{table}: {sent:,} of {total:,} rows")

        reader = pa.RecordBatchReader.from_batches(contract.schema, batches())
        with conn.cursor() as cursor:
            return cursor.adbc_ingest(table, reader, mode="append", db_schema_name=self.schema_name)

    def _create_parent(self, conn: adbc.Connection, service: TripService) -> None:
        self._execute(
            conn,
            f"CREATE SCHEMA IF NOT EXISTS {ident(self.schema_name)}",
            f"CREATE TABLE IF NOT EXISTS {ident(self.schema_name, service.table_name)} "
            f"({column_definitions(service)}) PARTITION BY RANGE ({ident(service.pickup_column)})",
        )
        conn.commit()

    @contextmanager
    def _load_table(self, conn: adbc.Connection, contract: DataContract, parquet: Path) -> Iterator[str]:
        """A new, committed table holding the parquet's rows; dropped afterwards unless renamed into place."""
        name = f"_load_{contract.table_name}_{uuid.uuid4().hex[:12]}"
        self._execute(conn, f"CREATE TABLE {ident(self.schema_name, name)} ({column_definitions(contract)})")
        try:
            self._copy(conn, name, contract, parquet)
            conn.commit()
            yield name
        finally:
            with suppress(adbc.Error):
                conn.rollback()
                self._execute(conn, f"DROP TABLE IF EXISTS {ident(self.schema_name, name)}")
                conn.commit()

    def replace_month(self, service: TripService, month: Month, lake: Lake, key: str) -> LoadResult:
        parent = ident(self.schema_name, service.table_name)
        partition = f"{service.table_name}_{month.start:%Y_%m}"
        pickup, start, end = ident(service.pickup_column), timestamp_literal(month.start), timestamp_literal(month.end)
        with lake.read(key) as parquet, self.connect() as conn:
            self._create_parent(conn, service)
            with self._load_table(conn, service, parquet) as loaded:
                loaded_table = ident(self.schema_name, loaded)
                # Validated here, outside the swap's lock: with this constraint ATTACH needs no scan.
                self._execute(
                    conn,
                    f"ALTER TABLE {loaded_table} ADD CONSTRAINT {ident(partition + '_month')} "
                    f"CHECK ({pickup} IS NOT NULL AND {pickup} >= {start} AND {pickup} < {end})",
                )
                conn.commit()
                self._execute(
                    conn,
                    f"LOCK TABLE {parent} IN ACCESS EXCLUSIVE MODE",  # taken first: no lock upgrade, no deadlock
                    f"DROP TABLE IF EXISTS {ident(self.schema_name, partition)}",
                    f"ALTER TABLE {loaded_table} RENAME TO {ident(partition)}",
                    f"ALTER TABLE {parent} ATTACH PARTITION {ident(self.schema_name, partition)} "
                    f"FOR VALUES FROM ({start}) TO ({end})",
                )
                conn.commit()
            rows = self._scalar(conn, f"SELECT count(*) FROM {ident(self.schema_name, partition)}")
        return LoadResult(
            table=f"{self.schema_name}.{service.table_name}",
            rows=rows,
            metadata={"partition_table": f"{self.schema_name}.{partition}"},
        )

    def replace_table(self, contract: DataContract, lake: Lake, key: str) -> LoadResult:
        table = ident(self.schema_name, contract.table_name)
        with lake.read(key) as parquet, self.connect() as conn:
            self._execute(conn, f"CREATE SCHEMA IF NOT EXISTS {ident(self.schema_name)}")
            conn.commit()
            with self._load_table(conn, contract, parquet) as loaded:
                self._execute(
                    conn,
                    f"DROP TABLE IF EXISTS {table}",
                    f"ALTER TABLE {ident(self.schema_name, loaded)} RENAME TO {ident(contract.table_name)}",
                )
                conn.commit()
            rows = self._scalar(conn, f"SELECT count(*) FROM {table}")
        return LoadResult(table=f"{self.schema_name}.{contract.table_name}", rows=rows)

    def month_row_count(self, service: TripService, month: Month) -> int:
        partition = f"{service.table_name}_{month.start:%Y_%m}"
        with self.connect() as conn:
            exists = self._scalar(conn, f"SELECT to_regclass('{self.schema_name}.{partition}') IS NOT NULL")
            return self._scalar(conn, f"SELECT count(*) FROM {ident(self.schema_name, partition)}") if exists else 0
