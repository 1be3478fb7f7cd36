"""Months of a range loaded into Postgres at once (``PostgresStore.copy_streams``), and the embedded server's WAL
settings: a real Postgres, a real Dagster run of ``load_months``."""

import dagster as dg
import psycopg
import pytest

from taxi_assets.assets.trips import load_months
from taxi_assets.checks import row_count_spec
from taxi_assets.months import Month
from taxi_assets.partitions import MONTH_FORMAT
from taxi_assets.resources.lake import Lake, LocalLake
from taxi_assets.resources.postgres import (
    EMBEDDED_SETTINGS,
    PostgresStore,
    start_embedded_postgres,
    stop_embedded_postgres,
)
from taxi_assets.resources.stores import TableStore
from taxi_assets.services import YELLOW
from taxi_assets_tests.faults.postgres_support import load_tables, write_month

MONTHS = {"2021-01": 3_000, "2021-02": 2_000, "2021-03": 4_000}
# Per month: rows, and sums over columns that tell one row set from another.
CONTENT = (
    "SELECT to_char(pickup_datetime, 'YYYY-MM'), count(*), sum(vendor_id), sum(pu_location_id), "
    "round(sum(fare_amount)::numeric, 6), count(DISTINCT (pickup_datetime, vendor_id, fare_amount)) "
    "FROM nyc_taxi.yellow_trips GROUP BY 1 ORDER BY 1"
)


@dg.asset(
    key=["yellow", "postgres_trips"],
    partitions_def=dg.MonthlyPartitionsDefinition(start_date="2021-01", fmt=MONTH_FORMAT),
    backfill_policy=dg.BackfillPolicy.single_run(),
    check_specs=[row_count_spec(YELLOW, "postgres_trips")],
    retry_policy=dg.RetryPolicy(max_retries=1),
)
def postgres_trips(context: dg.AssetExecutionContext, postgres: TableStore, lake: Lake) -> dg.MaterializeResult:
    return load_months(context, YELLOW, postgres, lake, "postgres")


def run_range(
    store: PostgresStore, lake: LocalLake, first: str, last: str, instance: dg.DagsterInstance | None = None
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [postgres_trips],
        resources={"postgres": store, "lake": lake},
        instance=instance or dg.DagsterInstance.ephemeral(),
        tags={"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last},
        raise_on_error=False,
    )


def partition_counts(result: dg.ExecuteInProcessResult) -> dict[str, int]:
    return {
        e.partition: e.event_specific_data.materialization.metadata["dagster/partition_row_count"].value
        for e in result.get_asset_materialization_events()
    }


def recorded_counts(instance: dg.DagsterInstance, months: list[str]) -> dict[str, int]:
    """Each month's rows in its latest recorded materialization of yellow/postgres_trips in ``instance``."""
    found = {}
    for month in months:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=postgres_trips.key, asset_partitions=[month]), limit=1
        ).records
        if records:
            found[month] = records[0].asset_materialization.metadata["dagster/partition_row_count"].value
    return found


@pytest.fixture
def lake(tmp_path) -> LocalLake:
    lake = LocalLake(root=str(tmp_path / "lake"))
    for seed, (month, rows) in enumerate(MONTHS.items(), start=1):
        write_month(lake, YELLOW.clean_key(month), month, rows, seed=seed)
    return lake


def test_a_range_loaded_two_months_at_a_time_holds_the_same_rows_as_one_at_a_time(lake, postgres_url):
    contents = {}
    for streams in (1, 2):
        url = postgres_url.replace("@/postgres?", f"@/t_parallel_{streams}?")
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS t_parallel_{streams}")
            conn.execute(f"CREATE DATABASE t_parallel_{streams}")
        store = PostgresStore(url=url, copy_streams=streams)
        assert store.parallel_loads == streams

        result = run_range(store, lake, "2021-01", "2021-03")

        assert result.success
        assert partition_counts(result) == MONTHS
        (check,) = result.get_asset_check_evaluations()
        assert check.passed and check.metadata["months_checked"].value == 3
        with psycopg.connect(url) as conn:
            contents[streams] = conn.execute(CONTENT).fetchall()
        assert [(m, n) for m, n, *_ in contents[streams]] == list(MONTHS.items())
        assert load_tables(url) == []
    assert contents[2] == contents[1]


def test_a_failed_month_of_a_parallel_range_keeps_its_previous_partition_and_the_others_load(lake, postgres_db_url):
    store = PostgresStore(url=postgres_db_url, copy_streams=2)
    assert run_range(store, lake, "2021-01", "2021-03").success
    # New versions of the months; February's holds rows of March, which break its partition's CHECK after the
    # COPY: that month keeps its previous partition, the other two (loading meanwhile) get their new rows.
    write_month(lake, YELLOW.clean_key("2021-01"), "2021-01", 1_500, seed=11)
    write_month(lake, YELLOW.clean_key("2021-02"), "2021-03", 2_500, seed=12)
    write_month(lake, YELLOW.clean_key("2021-03"), "2021-03", 3_500, seed=13)

    instance = dg.DagsterInstance.ephemeral()
    result = run_range(store, lake, "2021-01", "2021-03", instance)

    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "2021-02" in failure.event_specific_data.error.message
    assert "check constraint" in failure.event_specific_data.error.message
    # The months that loaded are recorded (a re-run skips them); the failed one is not.
    assert recorded_counts(instance, ["2021-01", "2021-02", "2021-03"]) == {"2021-01": 1_500, "2021-03": 3_500}
    with psycopg.connect(postgres_db_url) as conn:
        counts = conn.execute(CONTENT).fetchall()
        tables = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'nyc_taxi' ORDER BY 1").fetchall()
    assert [(m, n) for m, n, *_ in counts] == [("2021-01", 1_500), ("2021-02", 2_000), ("2021-03", 3_500)]
    assert [t for (t,) in tables] == [
        "yellow_trips",
        "yellow_trips_2021_01",
        "yellow_trips_2021_02",
        "yellow_trips_2021_03",
    ]


def test_two_failed_months_are_both_named(lake, postgres_db_url):
    write_month(lake, YELLOW.clean_key("2021-01"), "2021-02", 100, seed=21)  # rows of another month: permanent
    write_month(lake, YELLOW.clean_key("2021-03"), "2021-02", 100, seed=22)
    store = PostgresStore(url=postgres_db_url, copy_streams=2)

    result = run_range(store, lake, "2021-01", "2021-03")

    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.event_specific_data.error.message
    assert message.removeprefix("dagster._core.definitions.events.Failure: ").startswith(
        "Loading into postgres failed for 2 of 3 months (2021-01, 2021-03); 2021-02 done and recorded: 2021-01: "
    )
    assert "; 2021-03: " in message
    with psycopg.connect(postgres_db_url) as conn:
        assert [(m, n) for m, n, *_ in conn.execute(CONTENT).fetchall()] == [("2021-02", 2_000)]
    # Rows that break a constraint cannot pass on a retry: one attempt only.
    assert len([e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]) == 0


def wal_bytes(url: str, load) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        before = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
        load()
        return conn.execute("SELECT pg_current_wal_lsn() - %s::pg_lsn", [before]).fetchone()[0]


def test_the_embedded_server_skips_the_wal_for_a_load_and_a_server_given_by_url_is_left_alone(
    lake, postgres_url, tmp_path, caplog
):
    rows = 60_000  # about 10 MB of table: above wal_skip_threshold (2 MB), below it the table is WAL-logged
    write_month(lake, "big.parquet", "2021-01", rows, seed=5)
    jan = Month.parse("2021-01")

    # The server given by URL (the session's server, embedded but not the store's): never reconfigured.
    database = postgres_url.replace("@/postgres?", "@/t_wal_url?")
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS t_wal_url")
        conn.execute("CREATE DATABASE t_wal_url")
        started = conn.execute("SELECT pg_postmaster_start_time()").fetchone()[0]
    by_url = PostgresStore(url=database)
    logged = wal_bytes(database, lambda: by_url.replace_month(YELLOW, jan, lake, "big.parquet"))
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SHOW wal_level").fetchone()[0] == "replica"
        assert conn.execute("SELECT pg_postmaster_start_time()").fetchone()[0] == started  # not restarted

    # The store's own embedded server: started, reconfigured (restarted) on first use, then the load skips the WAL.
    data_dir = tmp_path / "postgres"
    try:
        url = start_embedded_postgres(data_dir)  # as another program would start it: default settings
        with psycopg.connect(url) as held:  # that program's session: no restart under it
            assert start_embedded_postgres(data_dir, EMBEDDED_SETTINGS) == url
            assert held.execute("SHOW wal_level").fetchone()[0] == "replica"
        assert "needs a restart for wal_level=minimal (was replica)" in caplog.text
        embedded = PostgresStore(embedded_dir=str(data_dir))
        embedded.month_row_count(YELLOW, jan)  # the server is unused now: restarted with the settings
        with psycopg.connect(url) as conn:
            assert conn.execute("SHOW wal_level").fetchone()[0] == "minimal"
            assert conn.execute("SHOW max_wal_senders").fetchone()[0] == "0"
        skipped = wal_bytes(url, lambda: embedded.replace_month(YELLOW, jan, lake, "big.parquet"))
        assert embedded.month_row_count(YELLOW, jan) == rows
        with psycopg.connect(url) as conn:
            table_bytes = conn.execute("SELECT pg_table_size('nyc_taxi.yellow_trips_2021_01')").fetchone()[0]
        # Logged: every row goes to the WAL as well. Skipped: the load table, created in its COPY's transaction,
        # is synced at commit instead; what is left is the catalog and the index build.
        assert logged > table_bytes / 2
        assert skipped < table_bytes / 10
    finally:
        stop_embedded_postgres(data_dir)
