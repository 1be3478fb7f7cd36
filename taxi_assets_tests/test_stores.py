"""The table stores on their own, against real DuckDB and Postgres: replacement, atomic failure, secrets."""

import os
from datetime import datetime

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from taxi_assets.partitions import Month
from taxi_assets.resources.duckdb_warehouse import DuckDBWarehouse
from taxi_assets.resources.lake import LocalLake
from taxi_assets.resources.postgres import PostgresStore
from taxi_assets.services import YELLOW

JAN = Month.parse("2021-01")


def write_month(lake: LocalLake, key: str, pickups: list[datetime]) -> None:
    columns = {f.name: pa.nulls(len(pickups), f.type) for f in YELLOW.schema}
    columns["pickup_datetime"] = pa.array(pickups, pa.timestamp("us"))
    columns["vendor_id"] = pa.array(range(len(pickups)), pa.int64())
    with lake.write(key) as path:
        pq.write_table(pa.table(columns, schema=YELLOW.schema), path)


@pytest.fixture
def lake(tmp_path) -> LocalLake:
    return LocalLake(root=str(tmp_path / "lake"))


@pytest.fixture(params=["duckdb", "postgres"])
def store(request, tmp_path, postgres_db_url):
    if request.param == "duckdb":
        return DuckDBWarehouse(database=str(tmp_path / "warehouse.duckdb"))
    return PostgresStore(url=postgres_db_url)


def test_replacing_a_month_replaces_only_that_month(store, lake):
    feb = Month.parse("2021-02")
    write_month(lake, "jan.parquet", [datetime(2021, 1, d) for d in range(1, 11)])
    write_month(lake, "feb.parquet", [datetime(2021, 2, d) for d in range(1, 5)])
    write_month(lake, "jan2.parquet", [datetime(2021, 1, d) for d in range(1, 8)])

    assert store.month_row_count(YELLOW, JAN) == 0
    assert store.replace_month(YELLOW, JAN, lake, "jan.parquet").rows == 10
    assert store.replace_month(YELLOW, feb, lake, "feb.parquet").rows == 4
    result = store.replace_month(YELLOW, JAN, lake, "jan2.parquet")

    assert (result.rows, result.table) == (7, "nyc_taxi.yellow_trips")
    assert store.month_row_count(YELLOW, JAN) == 7
    assert store.month_row_count(YELLOW, feb) == 4


def test_a_failed_postgres_load_keeps_the_previous_month_and_leaves_no_load_table(lake, postgres_db_url):
    store = PostgresStore(url=postgres_db_url)
    write_month(lake, "good.parquet", [datetime(2021, 1, 5)] * 3)
    store.replace_month(YELLOW, JAN, lake, "good.parquet")
    # A row outside the month breaks the partition's CHECK after the COPY: the swap must not happen.
    write_month(lake, "bad.parquet", [datetime(2021, 1, 6)] * 5 + [datetime(2021, 3, 1)])

    with pytest.raises(Exception, match="check constraint"):
        store.replace_month(YELLOW, JAN, lake, "bad.parquet")

    assert store.month_row_count(YELLOW, JAN) == 3
    with psycopg.connect(postgres_db_url) as conn:
        tables = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'nyc_taxi' ORDER BY 1").fetchall()
    assert tables == [("yellow_trips",), ("yellow_trips_2021_01",)]


def test_a_failed_duckdb_load_keeps_the_previous_month(lake, tmp_path):
    store = DuckDBWarehouse(database=str(tmp_path / "w.duckdb"))
    write_month(lake, "good.parquet", [datetime(2021, 1, 5)] * 3)
    store.replace_month(YELLOW, JAN, lake, "good.parquet")
    with lake.write("broken.parquet") as path:
        path.write_bytes(b"PAR1 not really parquet")

    with pytest.raises(Exception, match="broken.parquet"):
        store.replace_month(YELLOW, JAN, lake, "broken.parquet")
    assert store.month_row_count(YELLOW, JAN) == 3


def test_a_missing_lake_file_names_the_file(store, lake):
    with pytest.raises(FileNotFoundError, match=r"lake/clean/yellow/yellow_tripdata_2021-01\.parquet: not in the lake"):
        store.replace_month(YELLOW, JAN, lake, YELLOW.clean_key("2021-01"))


def test_a_connection_error_never_shows_the_password(lake):
    store = PostgresStore(url="postgresql://taxi:s3cret-pw@127.0.0.1:1/nyc?connect_timeout=2")
    write_month(lake, "jan.parquet", [datetime(2021, 1, 5)])
    with pytest.raises(ConnectionError) as error:
        store.replace_month(YELLOW, JAN, lake, "jan.parquet")
    assert "postgresql://taxi:***@127.0.0.1:1/nyc" in str(error.value)
    assert "s3cret" not in str(error.value) and "s3cret" not in repr(error.value.__cause__)


def test_the_lake_publishes_only_complete_files(lake):
    key = "clean/yellow/x.parquet"
    with lake.write(key) as path:
        path.write_text("first")
    with pytest.raises(RuntimeError), lake.write(key) as path:
        path.write_text("half")
        raise RuntimeError("failed half-way")
    assert open(lake.uri(key)).read() == "first"
    assert os.listdir(os.path.dirname(lake.uri(key))) == ["x.parquet"]  # no staging file left behind


def test_the_lake_lists_objects_with_their_sizes_but_not_writes_in_progress(lake):
    with lake.write("raw/yellow/b.csv.gz") as path:
        path.write_bytes(b"12345")
    with lake.write("raw/yellow/a.csv.gz") as path:
        path.write_bytes(b"123")
    with lake.write("raw/green/c.csv.gz") as path:
        path.write_bytes(b"1")
        with lake.write("raw/yellow/c.csv.gz") as staged:  # still being written: not listed
            staged.write_bytes(b"half")
            assert lake.list_objects("raw/yellow/") == {"raw/yellow/a.csv.gz": 3, "raw/yellow/b.csv.gz": 5}
    assert list(lake.list_objects("raw/")) == [
        "raw/green/c.csv.gz",
        "raw/yellow/a.csv.gz",
        "raw/yellow/b.csv.gz",
        "raw/yellow/c.csv.gz",
    ]
    assert lake.list_objects("clean/") == {}
