"""The lake sensor, evaluated with build_sensor_context on a LocalLake: files put into the raw zone by another
system are reported as their month's raw_trips (no run: the automation conditions of the downstream assets follow
them, see test_automation_conditions.py); files our own runs wrote are not."""

import json

import dagster as dg
import pytest

from taxi_assets.automation.lake_sensor import build_lake_sensor, raw_month
from taxi_assets.definitions import build_defs
from taxi_assets.partitions import Calendar
from taxi_assets.resources.lake import LocalLake
from taxi_assets.services import MIRROR, SERVICES, TLC, SourceLayout
from taxi_assets.targets import load_target
from taxi_assets_tests.automation.conftest import add_run, mark_loaded

MIRROR_CALENDAR = Calendar(MIRROR)  # most tests: CSV.gz raw files


@pytest.fixture
def lake(tmp_path) -> LocalLake:
    return LocalLake(root=str(tmp_path / "lake"))


def drop(
    lake: LocalLake, service: str, month: str, content: bytes = b"\x1f\x8b raw", layout: SourceLayout = MIRROR
) -> str:
    """Another system puts a raw file into the lake (as an upload to the bucket would)."""
    key = SERVICES[service].raw_key(month, layout)
    with lake.write(key) as path:
        path.write_bytes(content)
    return key


def tick(instance, lake, cursor=None, calendar: Calendar = MIRROR_CALENDAR, **bounds) -> dg.SensorResult:
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"lake": lake})
    return build_lake_sensor(calendar, **bounds)(context)


def store_events(instance, result: dg.SensorResult) -> None:
    """What the daemon does with a tick's asset events: store them in the event log."""
    for event in result.asset_events:
        instance.report_runless_asset_event(event)


def reported(result: dg.SensorResult) -> list[tuple[str, str]]:
    return [(e.asset_key.to_user_string(), e.partition) for e in result.asset_events]


def test_a_dropped_raw_file_is_reported_as_its_months_raw_trips_without_a_run(instance, lake):
    key = drop(lake, "green", "2021-03")

    result = tick(instance, lake)

    assert result.run_requests == []  # the automation conditions load the month
    (event,) = result.asset_events
    assert event.asset_key == dg.AssetKey(["green", "raw_trips"]) and event.partition == "2021-03"
    assert event.metadata["bytes"].value == lake.size(key)
    assert event.metadata["dagster/uri"].value == lake.uri(key)
    assert json.loads(result.cursor) == {key: lake.size(key)}


def test_the_reported_month_makes_the_conditions_request_its_downstream_assets_only(
    monkeypatch, tmp_path, instance, lake
):
    monkeypatch.setenv("TAXI_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("TAXI_SOURCE", "mirror")
    defs = build_defs(load_target("local"))
    drop(lake, "yellow", "2021-03")
    context = dg.build_sensor_context(instance=instance, resources={"lake": lake}, definitions=defs)
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance)

    store_events(instance, defs.resolve_sensor_def("lake_raw_files_sensor")(context))
    after = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)

    assert {
        r.key.to_user_string(): sorted(r.true_subset.expensively_compute_partition_keys())
        for r in after.results
        if r.true_subset.size
    } == {
        "yellow/clean_trips": ["2021-03"],
        "yellow/warehouse_trips": ["2021-03"],
        "yellow/postgres_trips": ["2021-03"],
    }  # not raw_trips: no download


def test_a_file_seen_before_does_not_trigger_again_but_a_replaced_one_does(instance, lake):
    key = drop(lake, "fhv", "2020-05")
    first = tick(instance, lake)
    store_events(instance, first)
    assert tick(instance, lake, first.cursor).asset_events == []

    drop(lake, "fhv", "2020-05", b"\x1f\x8b a corrected, longer file")
    third = tick(instance, lake, first.cursor)

    assert reported(third) == [("fhv/raw_trips", "2020-05")]
    assert (
        third.asset_events[0].metadata["bytes"].value == lake.size(key) != first.asset_events[0].metadata["bytes"].value
    )


def test_files_our_own_runs_wrote_are_recorded_without_a_report(instance, lake):
    key = drop(lake, "yellow", "2021-01")  # as raw_trips writes it, and records its size
    mark_loaded(instance, "yellow", "2021-01", bytes=lake.size(key))

    result = tick(instance, lake)

    assert result.run_requests == [] and result.asset_events == []
    assert json.loads(result.cursor) == {key: lake.size(key)}


def test_a_month_with_a_run_in_flight_waits_for_the_run(instance, lake):
    key = drop(lake, "yellow", "2021-02")
    run = add_run(instance, "yellow_trips_job", dg.DagsterRunStatus.STARTED, {"dagster/partition": "2021-02"})

    waiting = tick(instance, lake)
    assert waiting.asset_events == [] and key not in json.loads(waiting.cursor)

    # The run was ours and wrote the file: once done, its materialization records the size.
    instance.report_run_failed(run)
    mark_loaded(instance, "yellow", "2021-02", assets=("raw_trips",), bytes=lake.size(key))
    after = tick(instance, lake, waiting.cursor)
    assert after.asset_events == [] and json.loads(after.cursor) == {key: lake.size(key)}


def test_other_files_and_months_outside_the_partitions_are_ignored(instance, lake):
    drop(lake, "yellow", "2018-12")  # before the first partition
    drop(lake, "yellow", "2021-08")  # after the mirror's last month
    for name in (
        "raw/yellow/README.txt",
        "raw/yellow/yellow_tripdata_2021-01.parquet",  # the TLC layout's file: not the mirror's
        "raw/misc/taxi_zone_lookup.csv",
    ):
        with lake.write(name) as path:
            path.write_bytes(b"x")
    result = tick(instance, lake)
    assert result.asset_events == [] and json.loads(result.cursor) == {}


def test_reports_are_bounded_per_tick_and_the_rest_come_next_tick(instance, lake):
    for month in ("2021-01", "2021-02", "2021-03"):
        drop(lake, "green", month)
    first = tick(instance, lake, max_reports_per_tick=2)
    assert [e.partition for e in first.asset_events] == ["2021-01", "2021-02"]
    store_events(instance, first)
    second = tick(instance, lake, first.cursor, max_reports_per_tick=2)
    assert [e.partition for e in second.asset_events] == ["2021-03"]


def test_a_deleted_file_leaves_the_cursor(instance, lake):
    key = drop(lake, "green", "2021-01")
    first = tick(instance, lake)
    (lake._path(key)).unlink()
    assert json.loads(tick(instance, lake, first.cursor).cursor) == {}


# --------------------------------------------------------------------------------------------------------------
# The TLC layout: parquet raw files


def test_a_tlc_raw_parquet_file_is_noticed_under_the_tlc_calendar(instance, lake):
    key = drop(lake, "yellow", "2021-01", b"PAR1 raw parquet PAR1", layout=TLC)
    assert key == "raw/yellow/yellow_tripdata_2021-01.parquet"
    with lake.write("raw/yellow/yellow_tripdata_2021-02.csv.gz") as path:  # the mirror's name: not this layout's
        path.write_bytes(b"\x1f\x8b")

    result = tick(instance, lake, calendar=Calendar(TLC))

    assert result.run_requests == [] and reported(result) == [("yellow/raw_trips", "2021-01")]
    assert result.asset_events[0].metadata["dagster/uri"].value == lake.uri(key)
    assert json.loads(result.cursor) == {key: lake.size(key)}


def test_a_tlc_fhvhv_file_counts_from_fhvhvs_first_month(instance, lake):
    drop(lake, "fhvhv", "2019-01", b"PAR1 x", layout=TLC)  # before fhvhv's first month
    key = drop(lake, "fhvhv", "2019-02", b"PAR1 y", layout=TLC)
    result = tick(instance, lake, calendar=Calendar(TLC))
    assert reported(result) == [("fhvhv/raw_trips", "2019-02")]
    assert json.loads(result.cursor) == {key: lake.size(key)}


def test_a_raw_key_names_its_month_in_its_own_layout_only():
    yellow = SERVICES["yellow"]
    assert raw_month(yellow, "raw/yellow/yellow_tripdata_2021-01.parquet", TLC) == "2021-01"
    assert raw_month(yellow, "raw/yellow/yellow_tripdata_2021-01.csv.gz", MIRROR) == "2021-01"
    assert raw_month(yellow, "raw/yellow/yellow_tripdata_2021-01.parquet", MIRROR) is None
    assert raw_month(yellow, "raw/yellow/yellow_tripdata_2021-01.csv.gz", TLC) is None
    assert raw_month(yellow, "raw/green/green_tripdata_2021-01.parquet", TLC) is None


def test_on_the_mirror_a_fhvhv_raw_file_is_not_reported(instance, lake):
    with lake.write("raw/fhvhv/fhvhv_tripdata_2021-01.csv.gz") as path:
        path.write_bytes(b"\x1f\x8b")
    assert tick(instance, lake).asset_events == []
