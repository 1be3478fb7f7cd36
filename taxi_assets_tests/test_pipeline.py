"""A month of every service, in process, from a local HTTP source into the lake, DuckDB and a real Postgres."""

import gzip
import os
import shutil

import dagster as dg
import pytest

from taxi_assets.definitions import build_defs
from taxi_assets.services import MIRROR, SERVICES
from taxi_assets.targets import load_target
from taxi_assets_tests.conftest import SERVICES as MIRROR_SERVICES
from taxi_assets_tests.conftest import run_job, serve_folder
from taxi_assets_tests.stores import counts_in_every_store, duckdb_rows, postgres_rows


def materialization_metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == asset]
    return {k: v.value for k, v in event.event_specific_data.materialization.metadata.items()}


@pytest.mark.parametrize("service", MIRROR_SERVICES)
def test_a_month_of_every_service_reaches_every_store(local_defs, local_env, source_manifest, service):
    expected = source_manifest["files"][SERVICES[service].source_path("2021-01", MIRROR)]

    result = run_job(local_defs, f"{service}_trips_job", "2021-01")

    url = os.environ["TAXI_POSTGRES_URL"]
    assert counts_in_every_store(local_env, url, service, "2021-01") == dict.fromkeys(
        ["lake", "duckdb", "postgres"], expected["kept"]
    )
    clean = materialization_metadata(result, f"{service}/clean_trips")
    assert clean["dagster/partition_row_count"] == expected["kept"]
    assert clean["rows_read"] == expected["rows"]
    assert clean["dropped_pickup_outside_month"] == expected["pickup_outside_month"] > 0
    assert clean["dropped_dropoff_before_pickup"] == expected["dropoff_before_pickup"] > 0
    assert [c.name for c in clean["dagster/column_schema"].columns] == SERVICES[service].schema.names
    raw = materialization_metadata(result, f"{service}/raw_trips")
    assert raw["bytes"] == expected["bytes"]
    assert raw["source_url"] == f"{os.environ['TAXI_SOURCE_URL']}/{service}/{service}_tripdata_2021-01.csv.gz"
    for store in ("warehouse_trips", "postgres_trips"):
        loaded = materialization_metadata(result, f"{service}/{store}")
        assert loaded["dagster/partition_row_count"] == loaded["dagster/row_count"] == expected["kept"]
        assert loaded["dagster/table_name"] == f"nyc_taxi.{service}_trips"
    checks = {(c.asset_key.to_user_string(), c.check_name): c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {
        (f"{service}/clean_trips", "dropped_rows_below_1_percent"): True,
        (f"{service}/warehouse_trips", "rows_match_clean_trips"): True,
        (f"{service}/postgres_trips", "rows_match_clean_trips"): True,
    }


def test_zone_lookup_reaches_every_store(local_defs, local_env):
    result = run_job(local_defs, "taxi_zones_job")
    assert materialization_metadata(result, "taxi_zones")["dagster/row_count"] == 265
    assert duckdb_rows(local_env, "taxi_zones") == 265
    assert postgres_rows(os.environ["TAXI_POSTGRES_URL"], "taxi_zones") == 265
    run_job(local_defs, "taxi_zones_job")  # replaced, not appended
    assert duckdb_rows(local_env, "taxi_zones") == postgres_rows(os.environ["TAXI_POSTGRES_URL"], "taxi_zones") == 265


def test_rematerializing_replaces_the_month_and_a_second_month_leaves_the_first(local_defs, local_env, source_manifest):
    url = os.environ["TAXI_POSTGRES_URL"]
    kept = {m: source_manifest["files"][f"yellow/yellow_tripdata_{m}.csv.gz"]["kept"] for m in ("2021-01", "2021-02")}
    assert kept["2021-01"] != kept["2021-02"]

    run_job(local_defs, "yellow_trips_job", "2021-01")
    run_job(local_defs, "yellow_trips_job", "2021-01")
    assert counts_in_every_store(local_env, url, "yellow", "2021-01") == dict.fromkeys(
        ["lake", "duckdb", "postgres"], kept["2021-01"]
    )

    second = run_job(local_defs, "yellow_trips_job", "2021-02")
    for store in ("warehouse_trips", "postgres_trips"):  # the month's rows, and the whole table's
        counts = materialization_metadata(second, f"yellow/{store}")
        assert (counts["dagster/partition_row_count"], counts["dagster/row_count"]) == (
            kept["2021-02"],
            kept["2021-01"] + kept["2021-02"],
        )
    for month in ("2021-01", "2021-02"):
        assert counts_in_every_store(local_env, url, "yellow", month) == dict.fromkeys(
            ["lake", "duckdb", "postgres"], kept[month]
        )
    assert duckdb_rows(local_env, "yellow_trips") == postgres_rows(url, "yellow_trips") == sum(kept.values())


def _break_with_404(path):
    path.unlink()


def _break_with_html(path):
    path.write_bytes(b"\n\n<!DOCTYPE html><html><body>Not the file</body></html>")


def _break_with_truncation(path):
    path.write_bytes(path.read_bytes()[:5000])


def _break_with_unknown_column(path):
    lines = gzip.decompress(path.read_bytes()).decode().splitlines()
    lines = [lines[0] + ",mystery"] + [line + ",1" for line in lines[1:]]
    path.write_bytes(gzip.compress("\n".join(lines).encode()))


@pytest.mark.parametrize(
    "breakage, error",
    [
        (_break_with_404, "HTTP 404, not published"),
        (_break_with_html, "the server sent an HTML page"),
        (_break_with_truncation, "the gzip stream is truncated"),
        (_break_with_unknown_column, "column 'mystery' is not in the green data contract"),
    ],
    ids=["404", "html", "truncated", "unknown-column"],
)
def test_a_failed_month_leaves_the_previous_version_in_every_store(
    local_env, source_dir, source_manifest, monkeypatch, tmp_path, breakage, error
):
    mirror = tmp_path / "mirror"
    shutil.copytree(source_dir, mirror)
    url = os.environ["TAXI_POSTGRES_URL"]
    kept = source_manifest["files"]["green/green_tripdata_2021-01.csv.gz"]["kept"]
    with serve_folder(mirror) as base_url:
        monkeypatch.setenv("TAXI_SOURCE_URL", base_url)
        defs = build_defs(load_target())
        run_job(defs, "green_trips_job", "2021-01")
        lake = local_env / "lake"
        before = {p: p.read_bytes() for p in lake.rglob("*") if p.is_file()}

        breakage(mirror / "green" / "green_tripdata_2021-01.csv.gz")
        result = run_job(defs, "green_trips_job", "2021-01", raise_on_error=False)

    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert failure.step_key == "green__raw_trips"
    message = failure.step_failure_data.error.to_string()
    assert f"{base_url}/green/green_tripdata_2021-01.csv.gz: " in message and error in message
    after = {p: p.read_bytes() for p in lake.rglob("*") if p.is_file()}
    assert after == before  # nothing replaced, nothing half-written left behind
    assert counts_in_every_store(local_env, url, "green", "2021-01") == dict.fromkeys(
        ["lake", "duckdb", "postgres"], kept
    )


def test_a_range_runs_in_one_run_with_metadata_per_month(local_env, source_manifest):
    defs = build_defs(load_target())
    selection = [
        dg.AssetKey(["fhv", name]) for name in ("raw_trips", "clean_trips", "warehouse_trips", "postgres_trips")
    ]
    job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection=set(selection))
    result = job.execute_in_process(
        instance=dg.DagsterInstance.ephemeral(),
        tags={"dagster/asset_partition_range_start": "2021-01", "dagster/asset_partition_range_end": "2021-02"},
    )
    assert result.success
    clean = {
        e.partition: e.event_specific_data.materialization.metadata["dagster/partition_row_count"].value
        for e in result.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey(["fhv", "clean_trips"])
    }
    assert clean == {
        m: source_manifest["files"][f"fhv/fhv_tripdata_{m}.csv.gz"]["kept"] for m in ("2021-01", "2021-02")
    }
    for month, kept in clean.items():
        assert counts_in_every_store(local_env, os.environ["TAXI_POSTGRES_URL"], "fhv", month) == dict.fromkeys(
            ["lake", "duckdb", "postgres"], kept
        )


def test_summary_command_reads_the_month_back_from_every_store(local_defs, local_env, source_manifest, capsys):
    from taxi_assets.cli import main

    run_job(local_defs, "fhv_trips_job", "2021-02")
    assert main(["summary", "--month", "2021-02", "--data-dir", str(local_env)]) == 0
    kept = source_manifest["files"]["fhv/fhv_tripdata_2021-02.csv.gz"]["kept"]
    lines = capsys.readouterr().out.splitlines()
    assert lines[3].split() == ["fhv", *[f"{kept:,}"] * 3]
    assert lines[1].split() == ["yellow", "0", "0", "0"]


def test_stop_postgres_command_stops_the_embedded_server(tmp_path, capsys):
    import psycopg

    from taxi_assets.cli import main
    from taxi_assets.resources.postgres import start_embedded_postgres

    url = start_embedded_postgres(tmp_path / "postgres")
    assert psycopg.connect(url).execute("SELECT 1").fetchone() == (1,)
    assert main(["stop-postgres", "--data-dir", str(tmp_path)]) == 0
    assert main(["stop-postgres", "--data-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{tmp_path / 'postgres'}: stopped",
        f"{tmp_path / 'postgres'}: no server running",
    ]
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=3)


def test_bad_data_fails_the_loads_at_once_and_a_retry_is_not_attempted(local_defs, local_env, source_manifest):
    run_job(local_defs, "fhv_trips_job", "2021-01")
    clean = local_env / "lake" / SERVICES["fhv"].clean_key("2021-01")
    clean.write_bytes(b"PAR1 this is not parquet PAR1")  # corrupted by someone else: retrying cannot help
    loads = {dg.AssetKey(["fhv", "warehouse_trips"]), dg.AssetKey(["fhv", "postgres_trips"])}
    job = local_defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection=loads)

    result = job.execute_in_process(
        partition_key="2021-01", instance=dg.DagsterInstance.ephemeral(), raise_on_error=False
    )

    events = [e.event_type for e in result.all_events]
    assert dg.DagsterEventType.STEP_UP_FOR_RETRY not in events
    failures = {e.step_key: e.step_failure_data.error.to_string() for e in result.all_events if e.is_step_failure}
    assert set(failures) == {"fhv__warehouse_trips", "fhv__postgres_trips"}
    assert all(str(clean) in message for message in failures.values())  # each error names the file
    kept = source_manifest["files"]["fhv/fhv_tripdata_2021-01.csv.gz"]["kept"]
    assert (
        duckdb_rows(local_env, "fhv_trips", "2021-01")
        == postgres_rows(os.environ["TAXI_POSTGRES_URL"], "fhv_trips", "2021-01")
        == kept
    )
