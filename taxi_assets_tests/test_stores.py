"""The table stores on their own, against real DuckDB and Postgres: replacement, atomic failure, secrets,
schema evolution."""

import dataclasses
import os
import threading
import time
from datetime import datetime

import duckdb
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from taxi_assets.concurrency import each_finished
from taxi_assets.months import Month
from taxi_assets.resources.duckdb_warehouse import DuckDBWarehouse
from taxi_assets.resources.lake import LocalLake
from taxi_assets.resources.postgres import PostgresStore, driver_url, passwords
from taxi_assets.secrets import redact
from taxi_assets.services import TAXI_ZONES, YELLOW, ContractError, DataContract
from taxi_assets_tests.faults import postgres_support

JAN, FEB = Month.parse("2021-01"), Month.parse("2021-02")
# The yellow contract before the TLC added cbd_congestion_fee (2025): what a deployment loaded until then.
YELLOW_BEFORE_CBD = dataclasses.replace(YELLOW, columns=YELLOW.columns[:-1])


def write_month(
    lake: LocalLake, key: str, pickups: list[datetime], contract: DataContract = YELLOW, **values: pa.Array
) -> None:
    """A clean file of ``contract``: the pickups, vendor_id 0, 1, 2..., the other columns null unless in ``values``."""
    columns = {f.name: pa.nulls(len(pickups), f.type) for f in contract.schema}
    columns["pickup_datetime"] = pa.array(pickups, pa.timestamp("us"))
    columns["vendor_id"] = pa.array(range(len(pickups)), pa.int64())
    columns.update(values)
    with lake.write(key) as path:
        pq.write_table(pa.table(columns, schema=file_schema(contract, values)), path)


def file_schema(contract: DataContract, values: dict[str, pa.Array]) -> pa.Schema:
    """``contract``'s schema with the types of ``values`` (which may be of other types, or of unknown columns)."""
    fields = [f.with_type(values[f.name].type) if f.name in values else f for f in contract.schema]
    return pa.schema([*fields, *(pa.field(n, a.type) for n, a in values.items() if n not in contract.schema.names)])


def query(store, sql: str) -> list[tuple]:
    """Rows of ``sql``, asked of the store's database directly."""
    if isinstance(store, DuckDBWarehouse):
        with duckdb.connect(store.database, read_only=True) as conn:
            return conn.execute(sql).fetchall()
    with psycopg.connect(store.url) as conn:
        return conn.execute(sql).fetchall()


def table_columns(store, table: str) -> list[str]:
    rows = query(
        store,
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'nyc_taxi' "
        f"AND table_name = '{table}' ORDER BY ordinal_position",
    )
    return [name for (name,) in rows]


def months(store) -> list[tuple]:
    """Per month of yellow_trips: rows, non-null and sum of cbd_congestion_fee, sum of vendor_id."""
    rows = query(
        store,
        "SELECT date_trunc('month', pickup_datetime), count(*), count(cbd_congestion_fee), sum(cbd_congestion_fee), "
        "sum(vendor_id) FROM nyc_taxi.yellow_trips GROUP BY 1 ORDER BY 1",
    )
    return [(m.strftime("%Y-%m"), n, filled, cbd, int(vendors)) for m, n, filled, cbd, vendors in rows]


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


# Each form libpq takes a password in, and how messages show it.
PASSWORD_FORMS = [
    ("postgresql://taxi:s3cret-pw@db.example:5432/nyc", "postgresql://taxi:***@db.example:5432/nyc"),
    ("postgres://taxi:s3cret%40pw@db.example/nyc", "postgres://taxi:***@db.example/nyc"),
    (
        "postgresql://taxi:s3cret@p@w@db.example:1/nyc?sslmode=require",
        "postgresql://taxi:***@db.example:1/nyc?sslmode=require",
    ),
    (
        "postgresql://taxi@db.example/nyc?password=s3cret-pw&sslmode=require",
        "postgresql://taxi@db.example/nyc?password=***&sslmode=require",
    ),
    (
        "postgresql://taxi@db.example/nyc?sslmode=require&password=s3cret-pw",
        "postgresql://taxi@db.example/nyc?sslmode=require&password=***",
    ),
    ("host=db.example user=taxi password=s3cret-pw dbname=nyc", "host=db.example user=taxi password=*** dbname=nyc"),
    ("host=db.example password = 's3cret \\' pw' dbname=nyc", "host=db.example password = *** dbname=nyc"),
    ("postgresql://postgres:@/postgres?host=/tmp/pg", "postgresql://postgres:@/postgres?host=/tmp/pg"),  # none
]


@pytest.mark.parametrize(("conninfo", "shown"), PASSWORD_FORMS)
def test_redact_masks_the_password_in_every_form(conninfo, shown):
    assert redact(conninfo) == shown
    # A driver message that quotes the password alone (or a URL libpq split at its first @) is masked too.
    secrets = passwords(conninfo)
    for password in ("s3cret-pw", "s3cret@pw", "s3cret@p@w", "s3cret ' pw"):
        if password in secrets:
            assert redact(f'could not translate host name "{password}" to address', values=secrets) == (
                'could not translate host name "***" to address'
            )
    assert "s3cret" not in redact(f"failed: {conninfo} (for {conninfo})", values=secrets)


def test_a_password_with_an_unencoded_at_reaches_libpq_encoded():
    assert driver_url("postgresql://taxi:s3cret@p@w@db:1/nyc?x=1") == "postgresql://taxi:s3cret%40p%40w@db:1/nyc?x=1"
    assert driver_url("postgresql://taxi:s3cret-pw@db/nyc") == "postgresql://taxi:s3cret-pw@db/nyc"  # untouched
    assert driver_url("host=db password=a@b") == "host=db password=a@b"


def test_the_warehouse_tells_tables_from_views(lake, tmp_path):
    store = DuckDBWarehouse(database=str(tmp_path / "w.duckdb"))
    write_month(lake, "jan.parquet", [datetime(2021, 1, 5)])
    store.replace_month(YELLOW, JAN, lake, "jan.parquet")
    with store.connection() as conn:
        kinds = [store.relation_type(name, conn) for name in ("yellow_trips", "yellow_trips_2021_01", "green_trips")]
    assert kinds == ["VIEW", "BASE TABLE", None]
    assert store.relation_type("yellow_trips") == "VIEW"  # on a connection of its own


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


# -- schema evolution ----------------------------------------------------------------------------------------


def test_a_month_loaded_before_a_new_column_is_intact_after_a_month_with_it(store, lake):
    """January loaded by the code of before cbd_congestion_fee; after the upgrade, February brings the column."""
    write_month(lake, "jan.parquet", [datetime(2021, 1, d) for d in range(1, 11)], YELLOW_BEFORE_CBD)
    assert store.replace_month(YELLOW_BEFORE_CBD, JAN, lake, "jan.parquet").rows == 10
    assert "cbd_congestion_fee" not in table_columns(store, "yellow_trips")
    if isinstance(store, PostgresStore):
        storage = "SELECT relfilenode FROM pg_class WHERE oid = 'nyc_taxi.yellow_trips_2021_01'::regclass"
        january_storage = query(store, storage)

    cbd = pa.array([0.75, 1.5, None, 0.0], pa.float64())
    write_month(lake, "feb.parquet", [datetime(2021, 2, d) for d in range(1, 5)], cbd_congestion_fee=cbd)
    assert store.replace_month(YELLOW, FEB, lake, "feb.parquet").rows == 4

    assert table_columns(store, "yellow_trips") == YELLOW.schema.names  # the whole contract, in its order
    assert months(store) == [
        ("2021-01", 10, 0, None, sum(range(10))),  # every January row, unchanged, cbd null
        ("2021-02", 4, 3, 2.25, sum(range(4))),
    ]
    assert store.month_row_count(YELLOW, JAN) == 10 and store.month_row_count(YELLOW, FEB) == 4
    if isinstance(store, DuckDBWarehouse):  # January's table was not touched: it still has the old columns
        assert table_columns(store, "yellow_trips_2021_01") == YELLOW_BEFORE_CBD.schema.names
        assert table_columns(store, "yellow_trips_2021_02") == YELLOW.schema.names
    else:  # the column was added to the parent, January's partition was not rewritten (same storage file)
        assert query(store, storage) == january_storage
        assert table_columns(store, "yellow_trips_2021_01") == YELLOW.schema.names

    # January again, with the new code, from its clean file of before: the missing optional column reads null.
    assert store.replace_month(YELLOW, JAN, lake, "jan.parquet").rows == 10
    assert months(store)[0] == ("2021-01", 10, 0, None, sum(range(10)))
    assert months(store)[1] == ("2021-02", 4, 3, 2.25, sum(range(4)))


def test_a_file_that_does_not_fit_the_contract_names_file_and_column_and_changes_nothing(store, lake):
    write_month(lake, "jan.parquet", [datetime(2021, 1, 5)] * 3, YELLOW_BEFORE_CBD)  # optional column missing
    assert store.replace_month(YELLOW, JAN, lake, "jan.parquet").rows == 3
    assert months(store) == [("2021-01", 3, 0, None, 3)]

    surprise = pa.array([1.0] * 5)
    write_month(lake, "unknown.parquet", [datetime(2021, 1, 6)] * 5, surprise_fee=surprise)
    with pytest.raises(ContractError, match=r"unknown\.parquet: column 'surprise_fee' is not in the yellow"):
        store.replace_month(YELLOW, JAN, lake, "unknown.parquet")

    without_fare = dataclasses.replace(YELLOW, columns=tuple(c for c in YELLOW.columns if c.name != "fare_amount"))
    write_month(lake, "no_fare.parquet", [datetime(2021, 1, 6)] * 5, without_fare)
    with pytest.raises(ContractError, match=r"no_fare\.parquet: required column\(s\) 'fare_amount' missing"):
        store.replace_month(YELLOW, JAN, lake, "no_fare.parquet")

    write_month(lake, "text_vendor.parquet", [datetime(2021, 1, 6)] * 5, vendor_id=pa.array(["1"] * 5))
    with pytest.raises(ContractError, match=r"text_vendor\.parquet: column 'vendor_id' is string"):
        store.replace_month(YELLOW, JAN, lake, "text_vendor.parquet")

    assert months(store) == [("2021-01", 3, 0, None, 3)]
    assert table_columns(store, "yellow_trips") == YELLOW.schema.names


def test_replace_table_loads_a_lookup_whole(store, lake):
    def write_zones(key: str, count: int, **extra: pa.Array) -> None:
        zones = {
            "location_id": pa.array(range(1, count + 1), pa.int64()),
            "borough": pa.array(["Queens"] * count),
            "zone": pa.array([f"Zone {i}" for i in range(1, count + 1)]),
            "service_zone": pa.array(["Boro Zone"] * count),
            **extra,
        }
        with lake.write(key) as path:
            pq.write_table(pa.table(zones, schema=file_schema(TAXI_ZONES, extra)), path)

    write_zones("zones.parquet", 265)
    write_zones("zones_small.parquet", 3)
    write_zones("zones_extra.parquet", 3, shape=pa.array(["x"] * 3))
    assert store.replace_table(TAXI_ZONES, lake, "zones.parquet").rows == 265
    result = store.replace_table(TAXI_ZONES, lake, "zones_small.parquet")
    assert (result.table, result.rows) == ("nyc_taxi.taxi_zones", 3)
    with pytest.raises(ContractError, match=r"zones_extra\.parquet: column 'shape' is not in the taxi_zones"):
        store.replace_table(TAXI_ZONES, lake, "zones_extra.parquet")
    assert table_columns(store, "taxi_zones") == TAXI_ZONES.schema.names
    assert query(store, "SELECT count(*), sum(location_id) FROM nyc_taxi.taxi_zones") == [(3, 6)]


def test_stores_say_how_many_months_they_load_at_once(tmp_path):
    assert DuckDBWarehouse(database=str(tmp_path / "w.duckdb")).parallel_loads == 1  # one writer
    assert PostgresStore(url="postgresql://localhost/x").parallel_loads == 2
    assert PostgresStore(url="postgresql://localhost/x", copy_streams=3).parallel_loads == 3


def test_each_finished_runs_at_most_parallel_at_once_and_reports_every_item():
    running, most, lock = 0, 0, threading.Lock()

    def load(item: int) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        if item in (2, 4):
            raise ValueError(f"item {item}")
        return item * 10

    ended = list(each_finished(range(6), load, parallel=2))

    assert most == 2
    assert sorted((item, result) for item, result, _ in ended) == [
        (0, 0),
        (1, 10),
        (2, None),
        (3, 30),
        (4, None),
        (5, 50),
    ]
    assert {item: str(error) for item, _, error in ended if error} == {2: "item 2", 4: "item 4"}
    threads = set()
    assert [r for _, r, _ in each_finished(range(3), lambda i: threads.add(threading.get_ident()) or i, 1)] == [0, 1, 2]
    assert threads == {threading.get_ident()}  # one at a time: in the caller's thread


def test_a_postgres_load_table_is_created_in_its_copys_transaction(lake, postgres_db_url):
    postgres_support.write_month(lake, "big.parquet", "2021-01", 300_000)
    store = PostgresStore(url=postgres_db_url)
    results = []
    loading = threading.Thread(target=lambda: results.append(store.replace_month(YELLOW, JAN, lake, "big.parquet")))
    loading.start()
    try:
        postgres_support.wait_for(
            lambda: postgres_support.sessions(postgres_db_url, "query LIKE 'COPY%' AND state = 'active'"), "the COPY"
        )
        # Mid-COPY the load table is not there for other sessions: its CREATE is not committed yet. With
        # wal_level=minimal that is what lets Postgres skip the WAL for its rows.
        assert postgres_support.load_tables(postgres_db_url) == []
    finally:
        loading.join(timeout=60)
    assert results[0].rows == 300_000
