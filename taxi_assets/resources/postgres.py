"""Postgres tables, loaded by binary COPY of Arrow record batches and swapped in atomically.

Each service's table is partitioned by month on ``pickup_datetime``. A month is loaded into a fresh table
(streamed from the parquet file by the ADBC driver's binary COPY, no Python per row), checked against the
month's range, then swapped in by one short transaction: detach and drop the old partition, attach the new one.
Readers see the old month or the new one; a failed load leaves the old partition in place and drops the
half-filled load table.

Indexes are built after the load, never before: the parent declares them (``INDEXED_COLUMNS``) and the load table
gets the matching index once its rows are in, so ATTACH finds it and builds nothing while it holds the lock.

Schema evolution: when the contract has gained optional columns since the parent was created, the parent gains
them by ``ALTER TABLE ... ADD COLUMN`` (nullable, no default: a catalog change, no partition is rewritten; the
months loaded before read null). A clean file without such a column (written before) is copied with it null.
"""

from __future__ import annotations

import os
import re
import signal
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import adbc_driver_postgresql.dbapi as adbc
import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from taxi_assets.months import Month
from taxi_assets.resources.lake import Lake
from taxi_assets.resources.sql import (
    added_columns,
    column_definitions,
    file_columns,
    ident,
    parquet_schema,
    sql_type,
    timestamp_literal,
)
from taxi_assets.resources.stores import LoadResult, TableStore
from taxi_assets.services import ContractError, DataContract, TripService
from taxi_assets.settings import POSTGRES_URL, ConfigurationError

# Rows per record batch sent to COPY. The driver encodes a whole batch before sending it, so client memory grows
# with the batch (measured on a 1.37M-row yellow month: 8k rows +70 MB, 32k +100 MB, 128k +170 MB, 256k +265 MB)
# while COPY time is flat from 16k rows up. See docs/BENCHMARKS.md.
COPY_BATCH_ROWS = 32_768
# Log COPY progress (rows so far, rows per second) at most this often, in seconds.
PROGRESS_SECONDS = 5.0
# Each month's partition carries its exact row count as its comment, written in the swap's transaction.
ROWS_COMMENT = "taxi_assets rows={rows}"
ROWS_PATTERN = r"taxi_assets rows=([0-9]+)"
# Columns indexed in every month's partition (when the table has them): trips by pickup zone.
INDEXED_COLUMNS = ("pu_location_id",)


def redact(url: str) -> str:
    """``url`` with its password replaced, fit for messages and metadata."""
    return re.sub(r"(://[^:/@]*:)[^@]+@", r"\1***@", url)


def start_embedded_postgres(data_dir: str | Path) -> str:
    """Start (or reuse) the embedded Postgres 16 of the pip package ``pgserver`` in ``data_dir``; its URL.

    The server keeps running after this process ends, so later runs and ``psql`` reuse it.
    """
    try:
        import pgserver  # imported lazily: only the embedded default needs it
    except ImportError:
        raise ConfigurationError(
            f"{POSTGRES_URL} is not set and the embedded Postgres (the pip package pgserver, with wheels for "
            "x86_64 Linux and macOS only) is not installed here: set it to a Postgres server's URL"
        ) from None

    Path(data_dir).mkdir(parents=True, exist_ok=True)
    return pgserver.get_server(str(data_dir), cleanup_mode=None).get_uri()


def stop_embedded_postgres(data_dir: str | Path, timeout_seconds: float = 60) -> bool:
    """Stop the embedded Postgres of ``data_dir``; False if none was running.

    pgserver runs the server as its own user when started by root, so ``pg_ctl stop`` from root fails:
    signal the postmaster instead (SIGINT is Postgres' fast shutdown) and wait for it to exit.
    """
    pid_file = Path(data_dir) / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, signal.SIGINT)
    except (FileNotFoundError, IndexError, ValueError, ProcessLookupError):
        return False
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    raise TimeoutError(f"the embedded Postgres in {data_dir} (pid {pid}) did not stop in {timeout_seconds:.0f}s")


class PostgresStore(TableStore):
    """Tables in Postgres: a server from ``TAXI_POSTGRES_URL``, or an embedded one started from the pip package
    ``pgserver`` (Postgres 16) under ``embedded_dir`` and reused by later runs.

    Example:
        .. code-block:: python

            postgres = PostgresStore(url=dg.EnvVar("TAXI_POSTGRES_URL"))
            postgres = PostgresStore(embedded_dir="data/postgres")  # the embedded default
    """

    # A missing or corrupt parquet file, one or a table that does not fit the contract, or rows that break the
    # month's CHECK or a column type.
    permanent_errors = (FileNotFoundError, pa.ArrowInvalid, ContractError, adbc.IntegrityError, adbc.DataError)

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
        return start_embedded_postgres(self.embedded_dir)

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

    def _table_rows(self, conn: adbc.Connection, table: str) -> int:
        """Rows of the partitioned ``table``: the sum of its partitions' recorded counts (a partition loaded
        before counts were recorded is counted once)."""
        with conn.cursor() as cursor:
            cursor.execute(
                "SELECT c.relname, substring(obj_description(c.oid, 'pg_class') from $1) "
                "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = to_regclass($2)",
                parameters=(ROWS_PATTERN, f"{ident(self.schema_name, table)}"),
            )
            partitions = cursor.fetchall()
        return sum(
            int(recorded) if recorded else self._scalar(conn, f"SELECT count(*) FROM {ident(self.schema_name, name)}")
            for name, recorded in partitions
        )

    def _table_columns(self, conn: adbc.Connection, table: str) -> list[str]:
        """The columns of ``table`` (in the store's schema), in order."""
        with conn.cursor() as cursor:
            cursor.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2 "
                "ORDER BY ordinal_position",
                parameters=(self.schema_name, table),
            )
            return [name for (name,) in cursor.fetchall()]

    def _file_columns(self, contract: DataContract, parquet: Path) -> list[str]:
        """The contract's columns ``parquet`` has (a ``ContractError`` if it does not fit the contract)."""
        return [c.name for c in file_columns(contract, parquet_schema(parquet, str(parquet)), str(parquet))]

    def _copy(
        self, conn: adbc.Connection, table: str, contract: DataContract, parquet: Path, present: list[str]
    ) -> int:
        """Stream the ``present`` columns of ``parquet`` into ``table`` by binary COPY, one record batch at a time."""
        log = dg.get_dagster_logger()
        # pre_buffer=False: with it, the reader keeps every row group it has read buffered until the file is done,
        # so memory grew with the month (7.8M rows: +250 MB by the end); without it, memory is flat.
        parquet_file = pq.ParquetFile(str(parquet), pre_buffer=False)
        total = parquet_file.metadata.num_rows
        schema = contract.schema

        def in_contract_schema(batch: pa.RecordBatch) -> pa.RecordBatch:
            # The contract's columns the file lacks (optional, newer than the file) are sent as nulls.
            return pa.RecordBatch.from_arrays(
                [batch.column(f.name) if f.name in present else pa.nulls(batch.num_rows, f.type) for f in schema],
                schema=schema,
            )

        def batches():
            sent, started = 0, time.monotonic()
            logged = started
            for batch in parquet_file.iter_batches(batch_size=COPY_BATCH_ROWS, columns=present):
                yield in_contract_schema(batch)
                sent += batch.num_rows
                now = time.monotonic()
                if now - logged >= PROGRESS_SECONDS or sent == total:
                    logged = now
                    log.info(
                        f"COPY into {self.schema_name}.{table}: {sent:,} of {total:,} rows "
                        f"({sent / max(now - started, 1e-9):,.0f} rows/s)"
                    )

        reader = pa.RecordBatchReader.from_batches(schema, batches())
        try:
            with conn.cursor() as cursor:
                return cursor.adbc_ingest(table, reader, mode="append", db_schema_name=self.schema_name)
        finally:
            pa.default_memory_pool().release_unused()  # freed batches back to the OS, not kept for reuse

    def _indexed_columns(self, contract: DataContract) -> list[str]:
        return [c for c in INDEXED_COLUMNS if c in contract.schema.names]

    def _create_parent(self, conn: adbc.Connection, service: TripService) -> None:
        parent = ident(self.schema_name, service.table_name)
        self._execute(
            conn,
            f"CREATE SCHEMA IF NOT EXISTS {ident(self.schema_name)}",
            f"CREATE TABLE IF NOT EXISTS {parent} "
            f"({column_definitions(service)}) PARTITION BY RANGE ({ident(service.pickup_column)})",
        )
        # Columns the contract gained since the parent was created (loaded months keep theirs and read null).
        added = added_columns(
            service, self._table_columns(conn, service.table_name), f"{self.schema_name}.{service.table_name}"
        )
        self._execute(
            conn,
            *(f"ALTER TABLE {parent} ADD COLUMN IF NOT EXISTS {ident(c.name)} {sql_type(c)}" for c in added),
            # A partitioned index: each partition brings its own, built on the load table before the swap.
            *(
                f"CREATE INDEX IF NOT EXISTS {ident(f'{service.table_name}_{c}_idx')} ON {parent} ({ident(c)})"
                for c in self._indexed_columns(service)
            ),
        )
        conn.commit()

    @contextmanager
    def _load_table(
        self, conn: adbc.Connection, contract: DataContract, parquet: Path, present: list[str]
    ) -> Iterator[str]:
        """A new, committed table holding the parquet's rows (its ``present`` columns, the others null); dropped
        afterwards unless renamed into place."""
        name = f"_load_{contract.table_name}_{uuid.uuid4().hex[:12]}"
        self._execute(conn, f"CREATE TABLE {ident(self.schema_name, name)} ({column_definitions(contract)})")
        try:
            self._copy(conn, name, contract, parquet, present)
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
            present = self._file_columns(service, parquet)  # checked first: a file that does not fit changes nothing
            self._create_parent(conn, service)
            with self._load_table(conn, service, parquet, present) as loaded:
                loaded_table = ident(self.schema_name, loaded)
                # Validated here, outside the swap's lock: with this constraint ATTACH needs no scan, and with the
                # indexes built now (after the rows are in, one sorted build each) ATTACH adopts them.
                self._execute(
                    conn,
                    f"ALTER TABLE {loaded_table} ADD CONSTRAINT {ident(partition + '_month')} "
                    f"CHECK ({pickup} IS NOT NULL AND {pickup} >= {start} AND {pickup} < {end})",
                    *(
                        f"CREATE INDEX {ident(f'{loaded}_{c}_idx')} ON {loaded_table} ({ident(c)})"
                        for c in self._indexed_columns(service)
                    ),
                )
                conn.commit()
                self._execute(conn, f"ANALYZE {loaded_table}")  # planner statistics before readers see it
                conn.commit()
                rows = self._scalar(conn, f"SELECT count(*) FROM {loaded_table}")
                self._execute(
                    conn,
                    f"LOCK TABLE {parent} IN ACCESS EXCLUSIVE MODE",  # taken first: no lock upgrade, no deadlock
                    # The exact count rides with the partition, so the table's total needs no scan of every month.
                    f"COMMENT ON TABLE {loaded_table} IS '{ROWS_COMMENT.format(rows=rows)}'",
                    f"DROP TABLE IF EXISTS {ident(self.schema_name, partition)}",
                    f"ALTER TABLE {loaded_table} RENAME TO {ident(partition)}",
                    *(
                        f"ALTER INDEX {ident(self.schema_name, f'{loaded}_{c}_idx')} "
                        f"RENAME TO {ident(f'{partition}_{c}_idx')}"
                        for c in self._indexed_columns(service)
                    ),
                    f"ALTER TABLE {parent} ATTACH PARTITION {ident(self.schema_name, partition)} "
                    f"FOR VALUES FROM ({start}) TO ({end})",
                )
                conn.commit()
            table_rows = self._table_rows(conn, service.table_name)
        return LoadResult(
            table=f"{self.schema_name}.{service.table_name}",
            rows=rows,
            table_rows=table_rows,
            metadata={"partition_table": f"{self.schema_name}.{partition}"},
        )

    def replace_table(self, contract: DataContract, lake: Lake, key: str) -> LoadResult:
        table = ident(self.schema_name, contract.table_name)
        with lake.read(key) as parquet, self.connect() as conn:
            present = self._file_columns(contract, parquet)
            self._execute(conn, f"CREATE SCHEMA IF NOT EXISTS {ident(self.schema_name)}")
            conn.commit()
            with self._load_table(conn, contract, parquet, present) as loaded:
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
