"""Reading the stores back in tests: the lake's parquet, DuckDB and Postgres, each asked directly."""

from pathlib import Path

import duckdb
import psycopg
import pyarrow.parquet as pq

from taxi_assets.months import Month
from taxi_assets.services import SERVICES


def lake_rows(data_dir: Path, service: str, month: str) -> int:
    return pq.ParquetFile(data_dir / "lake" / SERVICES[service].clean_key(month)).metadata.num_rows


def duckdb_rows(data_dir: Path, table: str, month: str | None = None) -> int:
    with duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True) as conn:
        return _count(conn, table, month, "?")


def postgres_rows(url: str, table: str, month: str | None = None) -> int:
    with psycopg.connect(url) as conn:
        return _count(conn, table, month, "%s")


def _count(conn, table: str, month: str | None, marker: str) -> int:
    if month is None:
        return conn.execute(f"SELECT count(*) FROM nyc_taxi.{table}").fetchone()[0]
    m = Month.parse(month)
    return conn.execute(
        f"SELECT count(*) FROM nyc_taxi.{table} WHERE pickup_datetime >= {marker} AND pickup_datetime < {marker}",
        [m.start, m.end],
    ).fetchone()[0]


def counts_in_every_store(data_dir: Path, postgres_url: str, service: str, month: str) -> dict[str, int]:
    table = SERVICES[service].table_name
    return {
        "lake": lake_rows(data_dir, service, month),
        "duckdb": duckdb_rows(data_dir, table, month),
        "postgres": postgres_rows(postgres_url, table, month),
    }
