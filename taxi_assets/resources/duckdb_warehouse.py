"""The embedded default's warehouse: a DuckDB file, loaded straight from the lake's parquet files."""

from __future__ import annotations

import time
from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import Field

from taxi_assets.partitions import Month
from taxi_assets.resources.lake import Lake
from taxi_assets.resources.sql import column_definitions, column_list, ident
from taxi_assets.resources.stores import LoadResult, TableStore
from taxi_assets.services import DataContract, TripService


class DuckDBWarehouse(TableStore):
    """Tables in a DuckDB database file; a month is replaced in one transaction (delete the month, insert the
    parquet file), so a reader sees the old month or the new one.

    Example:
        .. code-block:: python

            warehouse = DuckDBWarehouse(database="data/warehouse.duckdb")
            warehouse.replace_month(YELLOW, Month.parse("2021-01"), lake, YELLOW.clean_key("2021-01"))
    """

    database: str = Field(description="Path of the DuckDB database file (created with its folder when missing).")
    schema_name: str = Field(default="nyc_taxi", description="Schema that holds the tables.")
    # DuckDB's default is 80% of the machine's memory and a thread per core. A month's load streams row groups
    # from the parquet file into the database file, yet left unbounded DuckDB caches what it touches: measured
    # on a 1.37M-row yellow month (2 cores), +370 MB resident by default, +150 MB at 128MB with 1 thread, and a
    # 7.8M-row month replaced in a 55M-row table stays at +180 MB. Below about 96MB, deleting a big month fails
    # (DuckDB pins the deleted rows' versions). One thread was faster than two on 2 cores with these limits.
    memory_limit: str = Field(
        default="128MB", description="DuckDB memory_limit of the store's connections (beyond it, DuckDB spills to disk)."
    )
    threads: int | None = Field(default=1, description="DuckDB threads of the store's connections; None: one per core.")

    def _duckdb(self) -> DuckDBResource:
        Path(self.database).parent.mkdir(parents=True, exist_ok=True)
        # The parquet file is read once: no point caching it.
        config: dict = {"memory_limit": self.memory_limit, "enable_external_file_cache": False}
        if self.threads:
            config["threads"] = self.threads
        # DuckDBResource retries the connection while another process holds the file's write lock.
        return DuckDBResource(database=self.database, connection_config=config)

    def _table(self, contract: DataContract) -> str:
        return ident(self.schema_name, contract.table_name)

    def _create_table(self, conn, contract: DataContract) -> None:
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {ident(self.schema_name)}")
        conn.execute(f"CREATE TABLE IF NOT EXISTS {self._table(contract)} ({column_definitions(contract)})")

    def replace_month(self, service: TripService, month: Month, lake: Lake, key: str) -> LoadResult:
        table, where = self._table(service), f"{ident(service.pickup_column)} >= ? AND {ident(service.pickup_column)} < ?"
        with lake.read(key) as path, self._duckdb().get_connection() as conn:
            self._create_table(conn, service)
            conn.begin()
            try:
                conn.execute(f"DELETE FROM {table} WHERE {where}", [month.start, month.end])
                started = time.monotonic()
                (inserted,) = conn.execute(
                    f"INSERT INTO {table} ({column_list(service)}) SELECT {column_list(service)} FROM read_parquet(?)",
                    [str(path)],
                ).fetchone()
                seconds = time.monotonic() - started
                dg.get_dagster_logger().info(
                    f"INSERT into {self.schema_name}.{service.table_name} from {path.name}: {inserted:,} rows in "
                    f"{seconds:.1f}s ({inserted / max(seconds, 1e-9):,.0f} rows/s)"
                )
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
            (rows,) = conn.execute(f"SELECT count(*) FROM {table} WHERE {where}", [month.start, month.end]).fetchone()
        return LoadResult(table=f"{self.schema_name}.{service.table_name}", rows=rows, metadata={"database": self.database})

    def replace_table(self, contract: DataContract, lake: Lake, key: str) -> LoadResult:
        table = self._table(contract)
        with lake.read(key) as path, self._duckdb().get_connection() as conn:
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {ident(self.schema_name)}")
            conn.begin()
            try:
                conn.execute(
                    f"CREATE OR REPLACE TABLE {table} AS SELECT {column_list(contract)} FROM read_parquet(?)",
                    [str(path)],
                )
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
            (rows,) = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        return LoadResult(table=f"{self.schema_name}.{contract.table_name}", rows=rows, metadata={"database": self.database})

    def month_row_count(self, service: TripService, month: Month) -> int:
        if not Path(self.database).exists():
            return 0
        with self._duckdb().get_connection() as conn:
            self._create_table(conn, service)
            (rows,) = conn.execute(
                f"SELECT count(*) FROM {self._table(service)} WHERE {ident(service.pickup_column)} >= ? "
                f"AND {ident(service.pickup_column)} < ?",
                [month.start, month.end],
            ).fetchone()
        return rows
