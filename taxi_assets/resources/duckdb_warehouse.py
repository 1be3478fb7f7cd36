"""The embedded default's warehouse: a DuckDB file, loaded straight from the lake's parquet files.

Each month of a trips service is a table of its own (``nyc_taxi.yellow_trips_2021_01``, named like the Postgres
partitions) and ``nyc_taxi.yellow_trips`` is a view over all of them. A month is replaced by building a fresh
table from the parquet file and swapping it in with the view, in one transaction: a reader sees the old month or
the new one. Nothing is deleted row by row: DuckDB keeps every deleted row's version in memory until the
checkpoint, so deleting a 7.8M-row month needed more than 80 MB of buffer pool (below that the checkpoint failed
and invalidated the database), and the peak grew with the month; building a table streams in constant memory.

Schema evolution: a month table keeps the columns it was loaded with (one built before the contract gained
``cbd_congestion_fee`` has none), and the view selects every contract column from each month table, a typed NULL
where the table lacks it. Loading a month never touches another month's table. A clean file that lacks an
optional column (written before the contract gained it) loads with that column null.

A load killed mid-way leaves nothing: the month's table is built and swapped in one transaction, which DuckDB
discards when it reopens the file (no staging table, nothing to sweep; see the fault "DuckDB load killed").
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb
from dagster_duckdb import DuckDBResource
from pydantic import Field

from taxi_assets.months import Month
from taxi_assets.resources.lake import Lake
from taxi_assets.resources.sql import (
    column_definitions,
    column_list,
    file_columns,
    ident,
    parquet_schema,
    select_list,
    timestamp_literal,
)
from taxi_assets.resources.stores import LoadResult, TableStore
from taxi_assets.services import DataContract, TripService


class DuckDBWarehouse(TableStore):
    """Tables in a DuckDB database file: a table per month behind one view per service, a table per lookup.

    Example:
        .. code-block:: python

            warehouse = DuckDBWarehouse(database="data/warehouse.duckdb")
            warehouse.replace_month(YELLOW, Month.parse("2021-01"), lake, YELLOW.clean_key("2021-01"))
            # then: SELECT count(*) FROM nyc_taxi.yellow_trips   (the view over every month's table)
    """

    # A missing or corrupt parquet file, one that does not fit the contract (ContractError is a ValueError), or rows
    # of another month (the month table's CHECK).
    permanent_errors = (FileNotFoundError, ValueError, duckdb.InvalidInputException, duckdb.ConstraintException)

    database: str = Field(description="Path of the DuckDB database file (created with its folder when missing).")
    schema_name: str = Field(default="nyc_taxi", description="Schema that holds the tables.")
    # DuckDB's defaults are 80% of the machine's memory and a thread per core; left so, it caches what a load
    # touches (measured on a 1.37M-row yellow month, 2 cores: +370 MB resident). Building a month's table from
    # parquet needs little: at 64MB (1 thread) a 1.37M-row and a 7.8M-row month both took +160 MB, in the same
    # time as at 48MB or 256MB. See docs/BENCHMARKS.md.
    memory_limit: str = Field(
        default="64MB", description="DuckDB memory_limit of the store's connections (beyond it, DuckDB spills to disk)."
    )
    threads: int | None = Field(default=1, description="DuckDB threads of the store's connections; None: one per core.")

    @contextmanager
    def connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection to the database file with the store's memory limit and threads, retried while another
        process holds the file's write lock; closed afterwards, also when the block fails."""
        with self._duckdb().get_connection() as conn:
            try:
                yield conn
            finally:
                conn.close()  # DuckDBResource closes only when the block succeeds; a failed load must not leak it

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

    def _month_table_name(self, service: TripService, month: Month) -> str:
        return f"{service.table_name}_{month.start:%Y_%m}"

    def relation_type(self, name: str, conn: duckdb.DuckDBPyConnection | None = None) -> str | None:
        """``'BASE TABLE'``, ``'VIEW'`` or None when ``name`` does not exist in the store's schema; asked on
        ``conn`` (from ``connection()``) if given, else on a connection of its own."""
        if conn is None:
            with self.connection() as own:
                return self.relation_type(name, own)
        row = conn.execute(
            "SELECT table_type FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
            [self.schema_name, name],
        ).fetchone()
        return row[0] if row else None

    def _month_tables(self, conn, service: TripService) -> list[str]:
        pattern = re.compile(re.escape(service.table_name) + r"_\d{4}_\d{2}")
        rows = conn.execute(
            "SELECT table_name FROM duckdb_tables() WHERE schema_name = ? ORDER BY table_name", [self.schema_name]
        ).fetchall()
        return [name for (name,) in rows if pattern.fullmatch(name)]

    def _create_month_table(self, conn, service: TripService, month: Month) -> str:
        """An empty table for ``month`` (replacing any), whose CHECK keeps out rows of other months."""
        table = ident(self.schema_name, self._month_table_name(service, month))
        pickup = ident(service.pickup_column)
        conn.execute(
            f"CREATE OR REPLACE TABLE {table} ({column_definitions(service)}, CHECK ({pickup} IS NOT NULL AND "
            f"{pickup} >= {timestamp_literal(month.start)} AND {pickup} < {timestamp_literal(month.end)}))"
        )
        return table

    def _columns(self, conn, tables: list[str]) -> dict[str, list[str]]:
        """The columns of each of ``tables``, in one query."""
        rows = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = ? "
            "ORDER BY table_name, ordinal_position",
            [self.schema_name],
        ).fetchall()
        columns: dict[str, list[str]] = {name: [] for name in tables}
        for table, column in rows:
            if table in columns:
                columns[table].append(column)
        return columns

    def _replace_view(self, conn, service: TripService) -> None:
        # Each month table has the columns of the contract it was loaded with: a typed NULL stands in for a
        # column the contract gained later, so the view has the whole contract whatever the months hold.
        columns = self._columns(conn, self._month_tables(conn, service))
        selects = [
            f"SELECT {select_list(service, present)} FROM {ident(self.schema_name, name)}"
            for name, present in columns.items()
        ]
        conn.execute(f"CREATE OR REPLACE VIEW {self._table(service)} AS {' UNION ALL '.join(selects)}")

    def replace_month(self, service: TripService, month: Month, lake: Lake, key: str) -> LoadResult:
        with lake.read(key) as path, self.connection() as conn:
            # Only the file's columns are inserted: the contract's others (optional, newer than the file) stay null.
            present = column_list(file_columns(service, parquet_schema(path, str(path)), str(path)))
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {ident(self.schema_name)}")
            conn.begin()
            try:
                table = self._create_month_table(conn, service, month)
                started = time.monotonic()
                try:
                    (inserted,) = conn.execute(
                        f"INSERT INTO {table} ({present}) SELECT {present} FROM read_parquet(?)", [str(path)]
                    ).fetchone()
                except duckdb.ConstraintException as error:
                    raise ValueError(
                        f"{path}: a row's {service.pickup_column} is not in {month.key}: {error}"
                    ) from error
                except duckdb.Error as error:  # a data page DuckDB cannot decode: the file, not the warehouse
                    raise ValueError(f"{path}: the parquet file cannot be read ({error})") from error
                seconds = time.monotonic() - started
                dg.get_dagster_logger().info(
                    f"INSERT into {self.schema_name}.{self._month_table_name(service, month)} from {path.name}: "
                    f"{inserted:,} rows in {seconds:.1f}s ({inserted / max(seconds, 1e-9):,.0f} rows/s)"
                )
                self._replace_view(conn, service)
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
            # The month's rows are the INSERT's count (its table is new, and its CHECK holds only the month): no
            # scan of every month to count it.
            (table_rows,) = conn.execute(f"SELECT count(*) FROM {self._table(service)}").fetchone()
        return LoadResult(
            table=f"{self.schema_name}.{service.table_name}",
            rows=inserted,
            table_rows=table_rows,
            metadata={
                "database": self.database,
                "month_table": f"{self.schema_name}.{self._month_table_name(service, month)}",
            },
        )

    def replace_table(self, contract: DataContract, lake: Lake, key: str) -> LoadResult:
        table = self._table(contract)
        with lake.read(key) as path, self.connection() as conn:
            present = [c.name for c in file_columns(contract, parquet_schema(path, str(path)), str(path))]
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {ident(self.schema_name)}")
            conn.begin()
            try:
                conn.execute(
                    f"CREATE OR REPLACE TABLE {table} AS SELECT {select_list(contract, present)} FROM read_parquet(?)",
                    [str(path)],
                )
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
            (rows,) = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        return LoadResult(
            table=f"{self.schema_name}.{contract.table_name}", rows=rows, metadata={"database": self.database}
        )

    def month_row_count(self, service: TripService, month: Month) -> int:
        if not Path(self.database).exists():
            return 0
        with self.connection() as conn:
            if self.relation_type(service.table_name, conn) is None:
                return 0
            (rows,) = conn.execute(
                f"SELECT count(*) FROM {self._table(service)} WHERE {ident(service.pickup_column)} >= ? "
                f"AND {ident(service.pickup_column)} < ?",
                [month.start, month.end],
            ).fetchone()
        return rows
