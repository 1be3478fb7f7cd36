"""The summaries (trips, revenue, average distance per pickup borough and day) on DuckDB and Postgres, from
hand-made months with exact expected values; re-materialized without duplicates; the IO managers' atomicity.

The months are loaded into the stores directly (the stores' own ``replace_month`` from small clean files), so the
expected values below are worked out by hand from the rows, not from the pipeline's generated data.
"""

import datetime as dt
import math

import dagster as dg
import duckdb
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from taxi_assets.assets.summary import MEASURES, SUMMARY, TRIPS_CHECK, normalized, table_name
from taxi_assets.definitions import build_defs
from taxi_assets.months import Month
from taxi_assets.resources.io_managers import AtomicDuckDBPandasIOManager, PostgresPandasIOManager
from taxi_assets.resources.postgres import PostgresStore
from taxi_assets.services import SERVICES, TAXI_ZONES, ZONES_CLEAN_KEY
from taxi_assets.targets import load_target

JAN, FEB = "2021-01", "2021-02"
T = dt.datetime
ZONES = [(1, "Manhattan"), (2, "Queens"), (3, "Brooklyn")]  # zone 99 is not in the lookup: "Unknown"

# Hand-made trips per (service, month): the columns given, every other contract column null.
TRIPS = {
    ("yellow", JAN): [
        {"pickup_datetime": T(2021, 1, 1, 8), "pu_location_id": 1, "total_amount": 10.5, "trip_distance": 1.5},
        {"pickup_datetime": T(2021, 1, 1, 9), "pu_location_id": 1, "total_amount": 20.0, "trip_distance": 2.5},
        {"pickup_datetime": T(2021, 1, 1, 10), "pu_location_id": 2, "total_amount": 7.25, "trip_distance": 4.0},
        {"pickup_datetime": T(2021, 1, 2, 23, 59), "pu_location_id": 3, "total_amount": 12.0, "trip_distance": 3.0},
        {"pickup_datetime": T(2021, 1, 31, 12), "pu_location_id": 99, "total_amount": 5.0, "trip_distance": 1.0},
        {"pickup_datetime": T(2021, 1, 31, 13)},  # no zone, no amount, no distance
    ],
    ("yellow", FEB): [
        {"pickup_datetime": T(2021, 2, 14, 1), "pu_location_id": 2, "total_amount": 8.5, "trip_distance": 2.0},
        {"pickup_datetime": T(2021, 2, 14, 2), "pu_location_id": 2, "total_amount": 1.5, "trip_distance": 1.0},
    ],
    ("fhvhv", JAN): [
        # 10 + 1 + 0.25 + 0.75 + 2.75 + 2 = 16.75 (airport and cbd fees null: 0); driver_pay is not revenue
        {
            "pickup_datetime": T(2021, 1, 5, 7),
            "pu_location_id": 1,
            "base_passenger_fare": 10.0,
            "tolls": 1.0,
            "bcf": 0.25,
            "sales_tax": 0.75,
            "congestion_surcharge": 2.75,
            "tips": 2.0,
            "driver_pay": 100.0,
            "trip_miles": 3.5,
        },
        # 20 + 0 + 0.5 + 1.5 + 0 + 2.5 (airport) + 0 = 24.5
        {
            "pickup_datetime": T(2021, 1, 5, 8),
            "pu_location_id": 1,
            "base_passenger_fare": 20.0,
            "tolls": 0.0,
            "bcf": 0.5,
            "sales_tax": 1.5,
            "congestion_surcharge": 0.0,
            "airport_fee": 2.5,
            "tips": 0.0,
            "trip_miles": 6.5,
        },
    ],
    ("fhv", JAN): [{"pickup_datetime": T(2021, 1, 3, h), "pu_location_id": 3} for h in (1, 2, 3)],
}
NAN = float("nan")
# (month, pickup_date, borough, trips, revenue, avg_distance), worked out from TRIPS.
EXPECTED = {
    ("yellow", JAN): [
        (JAN, dt.date(2021, 1, 1), "Manhattan", 2, 30.5, 2.0),
        (JAN, dt.date(2021, 1, 1), "Queens", 1, 7.25, 4.0),
        (JAN, dt.date(2021, 1, 2), "Brooklyn", 1, 12.0, 3.0),
        (JAN, dt.date(2021, 1, 31), "Unknown", 2, 5.0, 1.0),
    ],
    ("yellow", FEB): [(FEB, dt.date(2021, 2, 14), "Queens", 2, 10.0, 1.5)],
    ("fhvhv", JAN): [(JAN, dt.date(2021, 1, 5), "Manhattan", 2, 41.25, 5.0)],
    ("fhv", JAN): [(JAN, dt.date(2021, 1, 3), "Brooklyn", 3, NAN, NAN)],
}
SUMMARY_COLUMNS = "month, pickup_date, borough, trips, revenue, avg_distance"


def trips_table(service: str, rows: list[dict]) -> pa.Table:
    schema = SERVICES[service].schema
    return pa.table({f.name: pa.array([r.get(f.name) for r in rows], f.type) for f in schema}, schema=schema)


def zones_table() -> pa.Table:
    values = {"location_id": [z for z, _ in ZONES], "borough": [b for _, b in ZONES]}
    return pa.table(
        {f.name: pa.array(values.get(f.name, [f"zone {z}" for z, _ in ZONES]), f.type) for f in TAXI_ZONES.schema},
        schema=TAXI_ZONES.schema,
    )


def load_zones(lake, *stores) -> None:
    with lake.write(ZONES_CLEAN_KEY) as path:
        pq.write_table(zones_table(), path)
    for store in stores:
        store.replace_table(TAXI_ZONES, lake, ZONES_CLEAN_KEY)


def load_month(lake, warehouse, service: str, month: str) -> None:
    """The hand-made month into the lake's clean zone and the warehouse (what ``warehouse_trips`` would do)."""
    key = SERVICES[service].clean_key(month)
    with lake.write(key) as path:
        pq.write_table(trips_table(service, TRIPS[(service, month)]), path)
    warehouse.replace_month(SERVICES[service], Month.parse(month), lake, key)


def summary_keys(service: str) -> list[dg.AssetKey]:
    return [dg.AssetKey([service, f"{store}_{SUMMARY}"]) for store in ("warehouse", "postgres")]


def materialize(defs: dg.Definitions, service: str, month: str, instance=None) -> dg.ExecuteInProcessResult:
    job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection=set(summary_keys(service)))
    return job.execute_in_process(partition_key=month, instance=instance or dg.DagsterInstance.ephemeral())


def as_tuples(rows) -> list[tuple]:
    """Rows as comparable tuples: dates as dates, NaN and None alike (as NaN)."""
    out = []
    for month, day, borough, trips, revenue, distance in rows:
        day = day.date() if isinstance(day, dt.datetime) else day
        nan = lambda v: NAN if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)  # noqa: E731
        out.append((month, day, borough, int(trips), nan(revenue), nan(distance)))
    return sorted(out, key=lambda r: (r[0], r[1], r[2]))


def same(found: list[tuple], expected: list[tuple]) -> bool:
    """Exact equality, NaN equal to NaN (the hand-made amounts are exact in binary floating point)."""
    key = lambda r: tuple("nan" if isinstance(v, float) and math.isnan(v) else v for v in r)  # noqa: E731
    return [key(r) for r in found] == [key(r) for r in as_tuples(expected)]


def duckdb_summary(database: str, service: str) -> list[tuple]:
    with duckdb.connect(database, read_only=True) as conn:
        rows = conn.execute(f"SELECT {SUMMARY_COLUMNS} FROM nyc_taxi.{table_name(SERVICES[service])}").fetchall()
    return as_tuples(rows)


def postgres_summary(url: str, service: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(f"SELECT {SUMMARY_COLUMNS} FROM nyc_taxi.{table_name(SERVICES[service])}").fetchall()
    return as_tuples(rows)


def test_every_service_has_measures_that_name_its_contract_columns():
    assert set(MEASURES) == set(SERVICES)
    for name, measures in MEASURES.items():
        columns = {c.name for c in SERVICES[name].columns}
        assert set(measures.revenue) <= columns and measures.distance in columns | {None}


@pytest.fixture
def local(local_env, postgres_db_url):
    target = load_target("local")
    lake, warehouse = target.resources["lake"], target.resources["warehouse"]
    load_zones(lake, warehouse)
    return build_defs(target), lake, warehouse, postgres_db_url


def test_summaries_on_duckdb_and_postgres_are_exact_and_months_are_replaced(local):
    defs, lake, warehouse, postgres_url = local
    for service in ("yellow", "fhvhv", "fhv"):
        load_month(lake, warehouse, service, JAN)
        result = materialize(defs, service, JAN)
        expected = EXPECTED[(service, JAN)]
        assert same(duckdb_summary(warehouse.database, service), expected), service
        assert same(postgres_summary(postgres_url, service), expected), service

        # The UI's view of the month: a markdown preview, the month's and the table's row counts, the check.
        for key in summary_keys(service):
            (materialization,) = result.asset_materializations_for_node(_node(key))
            metadata = materialization.metadata
            header = [cell.strip() for cell in metadata["preview"].value.splitlines()[0].strip("|").split("|")]
            assert header == list(SUMMARY_COLUMNS.split(", "))
            assert metadata["dagster/partition_row_count"].value == len(expected)
            assert metadata["dagster/table_name"].value == f"nyc_taxi.{table_name(SERVICES[service])}"
        (check,) = result.get_asset_check_evaluations()
        assert check.check_name == TRIPS_CHECK and check.passed, check.metadata

    # The same month again: replaced, not appended.
    materialize(defs, "yellow", JAN)
    assert same(duckdb_summary(warehouse.database, "yellow"), EXPECTED[("yellow", JAN)])
    assert same(postgres_summary(postgres_url, "yellow"), EXPECTED[("yellow", JAN)])

    # A second month leaves the first as it was; the other services' tables are untouched.
    load_month(lake, warehouse, "yellow", FEB)
    materialize(defs, "yellow", FEB)
    both = EXPECTED[("yellow", JAN)] + EXPECTED[("yellow", FEB)]
    assert same(duckdb_summary(warehouse.database, "yellow"), both)
    assert same(postgres_summary(postgres_url, "yellow"), both)
    assert same(postgres_summary(postgres_url, "fhvhv"), EXPECTED[("fhvhv", JAN)])


def _node(key: dg.AssetKey) -> str:
    return "__".join(key.path)


def test_a_changed_month_in_the_warehouse_flows_to_both_summaries(local):
    defs, lake, warehouse, postgres_url = local
    load_month(lake, warehouse, "yellow", JAN)
    materialize(defs, "yellow", JAN)
    changed = [{"pickup_datetime": T(2021, 1, 9), "pu_location_id": 2, "total_amount": 3.5, "trip_distance": 0.5}]
    key = SERVICES["yellow"].clean_key(JAN)
    with lake.write(key) as path:
        pq.write_table(trips_table("yellow", changed), path)
    warehouse.replace_month(SERVICES["yellow"], Month.parse(JAN), lake, key)
    materialize(defs, "yellow", JAN)
    expected = [(JAN, dt.date(2021, 1, 9), "Queens", 1, 3.5, 0.5)]
    assert same(duckdb_summary(warehouse.database, "yellow"), expected)
    assert same(postgres_summary(postgres_url, "yellow"), expected)


# -- the IO managers on their own: a failed write leaves the month as it was --------------------------------------

MONTHS = dg.MonthlyPartitionsDefinition(start_date="2021-01", end_date="2021-03", fmt="%Y-%m")


def _toy_asset(io_manager_key: str, frames: dict[str, pd.DataFrame]) -> dg.AssetsDefinition:
    @dg.asset(
        name="toy_summary",
        partitions_def=MONTHS,
        io_manager_key=io_manager_key,
        metadata={"partition_expr": "CAST(pickup_date AS TIMESTAMP)", "table": "toy_trips_by_borough_day"},
    )
    def toy(context: dg.AssetExecutionContext) -> pd.DataFrame:
        return frames[context.partition_key]

    return toy


def _frame(month: str, day: int, trips) -> pd.DataFrame:
    return normalized(
        pd.DataFrame(
            {
                "pickup_date": [dt.date(2021, int(month[-2:]), day)],
                "borough": ["Queens"],
                "trips": [trips],
                "revenue": [1.0],
                "avg_distance": [2.0],
            }
        )
    )


@pytest.mark.parametrize("store", ["duckdb", "postgres"])
def test_a_failed_write_leaves_the_month_as_it_was(store, tmp_path, postgres_db_url):
    if store == "duckdb":
        database = str(tmp_path / "io.duckdb")
        io_manager = AtomicDuckDBPandasIOManager(database=database, schema="nyc_taxi")

        def rows():
            with duckdb.connect(database, read_only=True) as conn:
                return conn.execute(f"SELECT {SUMMARY_COLUMNS} FROM nyc_taxi.toy_trips_by_borough_day").fetchall()
    else:
        io_manager = PostgresPandasIOManager(postgres=PostgresStore(url=postgres_db_url))

        def rows():
            with psycopg.connect(postgres_db_url) as conn:
                return conn.execute(f"SELECT {SUMMARY_COLUMNS} FROM nyc_taxi.toy_trips_by_borough_day").fetchall()

    frames = {JAN: _frame(JAN, 3, 5), FEB: _frame(FEB, 4, 6)}
    resources = {"summary_io": io_manager}
    instance = dg.DagsterInstance.ephemeral()
    for month in (JAN, FEB, JAN):  # January twice: replaced, not appended
        dg.materialize([_toy_asset("summary_io", frames)], partition_key=month, resources=resources, instance=instance)
    before = as_tuples(rows())
    assert before == [
        (JAN, dt.date(2021, 1, 3), "Queens", 5, 1.0, 2.0),
        (FEB, dt.date(2021, 2, 4), "Queens", 6, 1.0, 2.0),
    ]

    # January again, with a value the table's BIGINT column cannot take: the delete is rolled back with the insert.
    broken = frames[JAN].assign(trips=["many"])
    result = dg.materialize(
        [_toy_asset("summary_io", {JAN: broken})],
        partition_key=JAN,
        resources=resources,
        instance=instance,
        raise_on_error=False,
    )
    assert not result.success
    assert as_tuples(rows()) == before

    # Reading a month back (what the Postgres summary's input does through the warehouse IO manager).
    @dg.asset(partitions_def=MONTHS, ins={"toy_summary": dg.AssetIn()})
    def reader(toy_summary: pd.DataFrame) -> None:
        assert as_tuples(normalized(toy_summary).itertuples(index=False)) == [before[1]]

    dg.materialize(
        [_toy_asset("summary_io", frames), reader],
        selection=[reader],
        partition_key=FEB,
        resources=resources,
        instance=instance,
    )


def test_without_the_zone_lookup_in_the_warehouse_the_summary_fails_at_once_naming_it(local_env, postgres_db_url):
    target = load_target("local")
    load_month(target.resources["lake"], target.resources["warehouse"], "yellow", JAN)

    job = (
        build_defs(target)
        .resolve_implicit_global_asset_job_def()
        .get_subset(asset_selection=set(summary_keys("yellow")))
    )
    result = job.execute_in_process(partition_key=JAN, instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)

    (failure,) = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert failure.step_key == f"yellow__warehouse_{SUMMARY}"
    message = failure.step_failure_data.error.message
    assert "nyc_taxi.taxi_zones, loaded by warehouse_taxi_zones (taxi_zones_job)" in message
    assert not [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
