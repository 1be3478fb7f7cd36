"""The default source, the TLC's own parquet files, from a local HTTP server in the TLC's layout into the lake,
DuckDB and a real Postgres: every service, re-issued months, new columns, and bad files."""

import os

import dagster as dg
import duckdb
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from taxi_assets.definitions import build_defs
from taxi_assets.fake_source import read_manifest, write_fake_month, write_fake_source
from taxi_assets.months import Month
from taxi_assets.services import SERVICES, TLC
from taxi_assets.targets import load_target
from taxi_assets_tests.conftest import TLC_SERVICES, run_job, serve_folder
from taxi_assets_tests.stores import counts_in_every_store
from taxi_assets_tests.test_pipeline import materialization_metadata

EVERY_STORE = ("lake", "duckdb", "postgres")


def expected(manifest: dict, service: str, month: str) -> dict:
    return manifest["files"][SERVICES[service].source_path(month, TLC)]


@pytest.mark.parametrize("service", TLC_SERVICES)
def test_a_month_of_every_service_from_the_tlc_reaches_every_store(tlc_env, tlc_source_dir, service):
    files = expected(read_manifest(tlc_source_dir), service, "2021-01")

    result = run_job(build_defs(load_target()), f"{service}_trips_job", "2021-01")

    counts = counts_in_every_store(tlc_env, os.environ["TAXI_POSTGRES_URL"], service, "2021-01")
    assert counts == dict.fromkeys(EVERY_STORE, files["kept"])
    raw = materialization_metadata(result, f"{service}/raw_trips")
    assert raw["source_url"] == f"{os.environ['TAXI_TLC_URL']}/trip-data/{service}_tripdata_2021-01.parquet"
    assert raw["bytes"] == files["bytes"]
    assert (tlc_env / "lake" / "raw" / service / f"{service}_tripdata_2021-01.parquet").stat().st_size == files["bytes"]
    clean = materialization_metadata(result, f"{service}/clean_trips")
    assert (clean["rows_read"], clean["dropped_pickup_outside_month"], clean["dropped_dropoff_before_pickup"]) == (
        files["rows"],
        files["pickup_outside_month"],
        files["dropoff_before_pickup"],
    )
    lake_file = tlc_env / "lake" / SERVICES[service].clean_key("2021-01")
    assert pq.read_schema(lake_file).equals(SERVICES[service].schema)
    assert all(check.passed for check in result.get_asset_check_evaluations())


def test_a_reissued_month_with_other_physical_types_replaces_the_old_one(tlc_env, tlc_copy):
    defs, url = build_defs(load_target()), os.environ["TAXI_POSTGRES_URL"]
    first = expected(read_manifest(tlc_copy), "green", "2021-01")
    run_job(defs, "green_trips_job", "2021-01")
    path = tlc_copy / SERVICES["green"].source_path("2021-01", TLC)
    types_before = pq.read_schema(path)

    reissued = write_fake_month(tlc_copy, "green", "2021-01", rows=first["rows"], seed=11, reissue=True)
    assert pq.read_schema(path) != types_before  # the same trips, other physical types
    result = run_job(defs, "green_trips_job", "2021-01")

    assert reissued["kept"] == first["kept"]
    assert counts_in_every_store(tlc_env, url, "green", "2021-01") == dict.fromkeys(EVERY_STORE, first["kept"])
    assert materialization_metadata(result, "green/raw_trips")["bytes"] == reissued["bytes"]
    with duckdb.connect(str(tlc_env / "warehouse.duckdb"), read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM nyc_taxi.green_trips").fetchone()[0] == first["kept"]


def test_a_month_loaded_before_a_new_column_appeared_stays_correct_after_it(tlc_env, tmp_path, monkeypatch):
    folder = tmp_path / "tlc-2025"
    manifest = write_fake_source(folder, ["yellow"], ["2024-12", "2025-01"], rows=600, seed=3, layout="tlc")
    old_path, new_path = (folder / SERVICES["yellow"].source_path(m, TLC) for m in ("2024-12", "2025-01"))
    assert "cbd_congestion_fee" not in pq.read_schema(old_path).names
    assert "cbd_congestion_fee" in pq.read_schema(new_path).names
    url = os.environ["TAXI_POSTGRES_URL"]
    with serve_folder(folder) as base_url:
        monkeypatch.setenv("TAXI_TLC_URL", base_url)
        defs = build_defs(load_target())
        run_job(defs, "yellow_trips_job", "2024-12")
        run_job(defs, "yellow_trips_job", "2025-01")

    kept = {m: manifest["files"][SERVICES["yellow"].source_path(m, TLC)]["kept"] for m in ("2024-12", "2025-01")}
    new_fees = pq.read_table(tlc_env / "lake" / SERVICES["yellow"].clean_key("2025-01"), columns=["cbd_congestion_fee"])
    fees_2025 = pc.count(new_fees.column(0)).as_py()
    assert fees_2025 > 0
    for month in kept:
        assert counts_in_every_store(tlc_env, url, "yellow", month) == dict.fromkeys(EVERY_STORE, kept[month])
    # Rows with a fee, per month: none before the column existed, the lake's count after.
    with duckdb.connect(str(tlc_env / "warehouse.duckdb"), read_only=True) as conn:
        assert fee_counts(conn, "?") == {"2024-12": 0, "2025-01": fees_2025}
    with psycopg.connect(url) as conn:
        assert fee_counts(conn, "%s") == {"2024-12": 0, "2025-01": fees_2025}


def fee_counts(conn, marker: str) -> dict[str, int]:
    counts = {}
    for key in ("2024-12", "2025-01"):
        month = Month.parse(key)
        sql = (
            "SELECT count(cbd_congestion_fee) FROM nyc_taxi.yellow_trips "
            f"WHERE pickup_datetime >= {marker} AND pickup_datetime < {marker}"
        )
        counts[key] = conn.execute(sql, [month.start, month.end]).fetchone()[0]
    return counts


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _not_parquet(path):
    path.write_bytes(b"VendorID,lpep_pickup_datetime\n2,2021-01-01 00:15:56\n")


def _unknown_column(path):
    table = pq.read_table(path)
    pq.write_table(table.append_column("mystery", pa.array([1.0] * table.num_rows)), path)


def _fractional_passengers(path):
    table = pq.read_table(path)
    index = table.schema.get_field_index("passenger_count")
    values = [1.5] + [1.0] * (table.num_rows - 1)
    pq.write_table(table.set_column(index, "passenger_count", pa.array(values)), path)


@pytest.mark.parametrize(
    "breakage, error",
    [
        (_truncate, "not a readable parquet file"),
        (_not_parquet, "not a parquet file (starts with b'VendorID')"),
        (_unknown_column, "column 'mystery' is not in the green data contract"),
        (_fractional_passengers, "column 'passenger_count' does not fit int64"),
    ],
    ids=["truncated", "not-parquet", "unknown-column", "fractional-integer"],
)
def test_a_bad_parquet_month_fails_naming_the_url_and_leaves_every_store_as_it_was(tlc_env, tlc_copy, breakage, error):
    defs, url = build_defs(load_target()), os.environ["TAXI_POSTGRES_URL"]
    kept = expected(read_manifest(tlc_copy), "green", "2021-01")["kept"]
    run_job(defs, "green_trips_job", "2021-01")
    lake = tlc_env / "lake"
    before = {p: p.read_bytes() for p in lake.rglob("*") if p.is_file()}

    breakage(tlc_copy / SERVICES["green"].source_path("2021-01", TLC))
    result = run_job(defs, "green_trips_job", "2021-01", raise_on_error=False)

    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert failure.step_key == "green__raw_trips"
    message = failure.step_failure_data.error.to_string()
    assert f"{os.environ['TAXI_TLC_URL']}/trip-data/green_tripdata_2021-01.parquet: " in message
    assert error in message
    assert {p: p.read_bytes() for p in lake.rglob("*") if p.is_file()} == before
    assert counts_in_every_store(tlc_env, url, "green", "2021-01") == dict.fromkeys(EVERY_STORE, kept)


def test_fhvhv_on_the_mirror_fails_with_the_reason(local_env):
    result = run_job(build_defs(load_target()), "fhvhv_trips_job", "2021-01", raise_on_error=False)
    (failure,) = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert "the mirror's fhvhv files have the 7-column fhv layout" in failure.step_failure_data.error.to_string()
