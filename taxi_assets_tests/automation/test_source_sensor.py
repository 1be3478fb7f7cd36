"""The source sensor, evaluated with build_sensor_context against a scripted HTTP source: which months it asks
about, which it requests, its cursor, its bounds, a source that answers 404, 500 or slowly, and the publication
lag (a month is never asked about before the 1st of M + lag)."""

import json
import time
from datetime import datetime, timezone

import dagster as dg
import pytest

from taxi_assets.automation.source_sensor import SourceCursor, build_source_sensor
from taxi_assets.jobs import trips_jobs
from taxi_assets.months import months_between
from taxi_assets.partitions import Calendar
from taxi_assets.services import MIRROR, SERVICES, TLC
from taxi_assets.source import TaxiSource
from taxi_assets_tests.automation.conftest import add_run, mark_loaded

UTC = timezone.utc
YELLOW = SERVICES["yellow"]
MIRROR_CALENDAR = Calendar(MIRROR)  # 2019-01 .. 2021-07, every month long published


def path(month: str, layout=MIRROR) -> str:
    return YELLOW.source_path(month, layout)


def sensor(calendar: Calendar = MIRROR_CALENDAR, service=YELLOW, **bounds) -> dg.SensorDefinition:
    bounds = {"max_requests_per_tick": 2, "probe_timeout_seconds": 1.0, **bounds}
    return build_source_sensor(service, trips_jobs[service.name], calendar, **bounds)


def heads(source) -> list[str]:
    return [p for method, p in source.requests if method == "HEAD"]


def tick(sensor_def, instance, source_url: str, cursor: str | None = None) -> dg.SensorResult:
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"source": TaxiSource(base_url=source_url, backoff_seconds=0.05)}
    )
    return sensor_def(context)


def requested(result: dg.SensorResult) -> list[tuple[str, str]]:
    return [(r.partition_key, r.run_key) for r in result.run_requests]


def test_requests_published_months_oldest_first_a_bounded_number_per_tick(instance, scripted_source):
    scripted_source.routes = {path(m): b"\x1f\x8b" for m in ("2019-01", "2019-02", "2019-03")}
    yellow_source_sensor = sensor()

    first = tick(yellow_source_sensor, instance, scripted_source.url)
    assert requested(first) == [("2019-01", "2019-01"), ("2019-02", "2019-02")]  # run_key = month
    cursor = SourceCursor.parse(first.cursor)
    assert cursor.published == {"2019-01", "2019-02", "2019-03"}
    assert cursor.requested == {"2019-01", "2019-02"}
    # 12 HEADs at most, the oldest unseen months first
    assert heads(scripted_source) == [path(f"2019-{m:02d}") for m in range(1, 13)]
    assert heads(scripted_source)[0] == "yellow/yellow_tripdata_2019-01.csv.gz"

    second = tick(yellow_source_sensor, instance, scripted_source.url, first.cursor)
    assert requested(second) == [("2019-03", "2019-03")]
    # The cursor spares the source: a month seen published is never asked about again.
    assert [scripted_source.heads(path(m)) for m in ("2019-01", "2019-02", "2019-03")] == [1, 1, 1]
    # The round of questions about unpublished months goes on where it stopped.
    assert SourceCursor.parse(second.cursor).last_probed == "2020-12"

    third = tick(yellow_source_sensor, instance, scripted_source.url, second.cursor)
    assert third.run_requests == [] and "none published" in third.skip_reason.skip_message


def test_loaded_months_and_months_in_flight_are_left_alone(instance, scripted_source):
    scripted_source.routes = {path(m): b"\x1f\x8b" for m in ("2019-01", "2019-02", "2019-03", "2019-04")}
    mark_loaded(instance, "yellow", "2019-01")
    mark_loaded(instance, "yellow", "2019-02", assets=("raw_trips", "clean_trips"))  # half done: not loaded
    add_run(instance, "yellow_trips_job", dg.DagsterRunStatus.NOT_STARTED, {"dagster/partition": "2019-03"})
    # A running single-run backfill of another service does not hold yellow months.
    add_run(
        instance,
        "__ASSET_JOB",
        dg.DagsterRunStatus.STARTED,
        {"dagster/asset_partition_range_start": "2019-01", "dagster/asset_partition_range_end": "2019-12"},
        asset_selection=[dg.AssetKey(["green", "raw_trips"])],
    )

    result = tick(sensor(max_requests_per_tick=5), instance, scripted_source.url)

    assert requested(result) == [("2019-02", "2019-02"), ("2019-04", "2019-04")]
    assert scripted_source.heads(path("2019-01")) == 0 and scripted_source.heads(path("2019-03")) == 0


def test_a_yellow_range_run_in_flight_holds_every_month_of_its_range(instance, scripted_source):
    scripted_source.routes = {path(m): b"\x1f\x8b" for m in ("2019-01", "2019-02", "2019-03")}
    add_run(
        instance,
        "__ASSET_JOB",
        dg.DagsterRunStatus.STARTED,
        {"dagster/asset_partition_range_start": "2019-01", "dagster/asset_partition_range_end": "2019-02"},
        asset_selection=[dg.AssetKey(["yellow", "raw_trips"])],
    )
    assert requested(tick(sensor(), instance, scripted_source.url)) == [("2019-03", "2019-03")]


def test_loaded_months_leave_the_cursor(instance, scripted_source):
    scripted_source.routes = {path("2019-01"): b"\x1f\x8b"}
    first = tick(sensor(), instance, scripted_source.url)
    assert SourceCursor.parse(first.cursor).requested == {"2019-01"}
    mark_loaded(instance, "yellow", "2019-01")
    second = tick(sensor(), instance, scripted_source.url, first.cursor)
    assert json.loads(second.cursor)["requested"] == [] and json.loads(second.cursor)["published"] == []


def test_a_month_requested_once_is_not_requested_again_even_if_its_run_failed(instance, scripted_source):
    scripted_source.routes = {path("2019-01"): b"\x1f\x8b"}
    first = tick(sensor(), instance, scripted_source.url)
    add_run(instance, "yellow_trips_job", dg.DagsterRunStatus.FAILURE, {"dagster/partition": "2019-01"})
    second = tick(sensor(), instance, scripted_source.url, first.cursor)
    assert requested(first) == [("2019-01", "2019-01")] and second.run_requests == []


def test_404_is_not_published_and_asked_again_on_a_later_round(instance, scripted_source):
    late = sensor(max_probes_per_tick=100)
    first = tick(late, instance, scripted_source.url)  # every month answers 404
    assert first.run_requests == [] and scripted_source.heads(path("2019-01")) == 1

    scripted_source.routes[path("2019-01")] = b"\x1f\x8b"  # published late
    second = tick(late, instance, scripted_source.url, first.cursor)
    assert requested(second) == [("2019-01", "2019-01")]
    assert scripted_source.heads(path("2019-01")) == 2


def test_500_stops_the_questions_for_this_tick_and_keeps_what_was_found(instance, scripted_source):
    scripted_source.routes = {path("2019-01"): b"\x1f\x8b", path("2019-02"): 500, path("2019-03"): b"\x1f\x8b"}
    result = tick(sensor(), instance, scripted_source.url)

    assert requested(result) == [("2019-01", "2019-01")]
    assert scripted_source.heads(path("2019-02")) == 2  # one retry for a 5xx, then the sensor gives up
    assert scripted_source.heads(path("2019-03")) == 0  # not asked after the error
    cursor = SourceCursor.parse(result.cursor)
    assert "2019-02" not in cursor.published

    scripted_source.routes[path("2019-02")] = b"\x1f\x8b"  # the source recovered
    again = tick(sensor(), instance, scripted_source.url, result.cursor)
    # The round went on after 2019-02; it comes back to 2019-02 once the other unseen months had their turn.
    assert requested(again) == [("2019-03", "2019-03")]


def test_a_source_error_with_nothing_to_request_is_the_skip_reason(instance, scripted_source):
    scripted_source.routes = {path("2019-01"): 503}
    result = tick(sensor(), instance, scripted_source.url)
    assert result.run_requests == []
    assert result.skip_reason.skip_message.startswith("Source error:") and "HTTP 503" in result.skip_reason.skip_message


def test_a_slow_source_does_not_hold_the_tick(instance, scripted_source):
    scripted_source.routes = {path("2019-01"): ("slow", 3.0), path("2019-02"): b"\x1f\x8b"}
    started = time.monotonic()
    result = tick(sensor(probe_timeout_seconds=0.3), instance, scripted_source.url)
    elapsed = time.monotonic() - started

    assert elapsed < 2.5  # two attempts of 0.3 s (and a short backoff), not 3 s each
    assert result.run_requests == [] and "Source error" in result.skip_reason.skip_message
    assert scripted_source.heads(path("2019-02")) == 0


def test_the_probe_budget_bounds_a_tick_of_slow_answers(instance, scripted_source):
    scripted_source.routes = {path(f"2019-{m:02d}"): ("slow", 0.3, 404) for m in range(1, 13)}
    started = time.monotonic()
    result = tick(sensor(probe_budget_seconds=0.5, probe_timeout_seconds=2.0), instance, scripted_source.url)
    assert time.monotonic() - started < 2.0
    assert len([r for r in scripted_source.requests if r[0] == "HEAD"]) <= 3
    assert result.run_requests == []


# --------------------------------------------------------------------------------------------------------------
# The publication lag: month M is not asked about before the 1st of M + 2 (00:00 UTC)


def tlc_path(month: str, service=YELLOW) -> str:
    return service.source_path(month, TLC)


@pytest.mark.parametrize(
    ("now", "asked"),
    [
        # 2021-02 is complete but may not be published before 2021-04-01; 2021-01 may from 2021-03-01 on.
        (datetime(2021, 3, 15, 12, tzinfo=UTC), ["2020-10", "2020-11", "2020-12", "2021-01"]),
        (datetime(2021, 3, 1, 0, 0, tzinfo=UTC), ["2020-10", "2020-11", "2020-12", "2021-01"]),
        (datetime(2021, 2, 28, 23, 59, tzinfo=UTC), ["2020-10", "2020-11", "2020-12"]),
        (datetime(2020, 12, 31, 23, 59, tzinfo=UTC), ["2020-10"]),  # 2020-11 is complete, not publishable yet
        (datetime(2020, 11, 30, 23, 59, tzinfo=UTC), []),  # 2020-10 is complete; it may appear from 2020-12-01
    ],
)
def test_months_newer_than_the_lag_are_never_asked_about(instance, scripted_source, clock, now, asked):
    clock(now)
    calendar = Calendar(TLC, first_month="2020-10")
    result = tick(sensor(calendar, max_probes_per_tick=100), instance, scripted_source.url)

    assert heads(scripted_source) == [tlc_path(m) for m in asked]
    assert result.run_requests == []
    assert result.skip_reason.skip_message.startswith(f"{len(asked)} month(s) not loaded; asked the source about")


def test_the_exact_paths_asked_of_a_tlc_source_as_the_months_become_publishable(instance, scripted_source, clock):
    calendar = Calendar(TLC, first_month="2020-11")
    tlc_sensor = sensor(calendar, max_probes_per_tick=100, max_requests_per_tick=4)
    # The source already has a file for every month up to 2021-03 (a source ahead of the calendar): the
    # sensor must still not ask about a month before its first publication.
    scripted_source.routes = {tlc_path(m): b"PAR1" for m in months_between("2020-11", "2021-03")}

    clock(datetime(2021, 2, 10, tzinfo=UTC))
    first = tick(tlc_sensor, instance, scripted_source.url)
    assert heads(scripted_source) == [
        "trip-data/yellow_tripdata_2020-11.parquet",
        "trip-data/yellow_tripdata_2020-12.parquet",
    ]
    assert requested(first) == [("2020-11", "2020-11"), ("2020-12", "2020-12")]

    scripted_source.requests.clear()
    clock(datetime(2021, 4, 1, 0, 0, tzinfo=UTC))  # 2021-01 and 2021-02 may now be there; 2021-03 not before 05-01
    second = tick(tlc_sensor, instance, scripted_source.url, first.cursor)
    assert heads(scripted_source) == [
        "trip-data/yellow_tripdata_2021-01.parquet",
        "trip-data/yellow_tripdata_2021-02.parquet",
    ]
    assert requested(second) == [("2021-01", "2021-01"), ("2021-02", "2021-02")]
    assert scripted_source.heads(tlc_path("2021-03")) == 0


def test_the_mirror_is_asked_about_its_months_only(instance, scripted_source, clock):
    clock(datetime(2026, 1, 1, tzinfo=UTC))  # years after the mirror's last month
    result = tick(
        sensor(Calendar(MIRROR, first_month="2021-05"), max_probes_per_tick=100), instance, scripted_source.url
    )
    assert heads(scripted_source) == [
        "yellow/yellow_tripdata_2021-05.csv.gz",
        "yellow/yellow_tripdata_2021-06.csv.gz",
        "yellow/yellow_tripdata_2021-07.csv.gz",
    ]
    assert result.run_requests == []


# --------------------------------------------------------------------------------------------------------------
# fhvhv: only the TLC layout has it


def test_the_fhvhv_sensor_skips_on_the_mirror_with_its_reason(instance, scripted_source):
    result = tick(sensor(MIRROR_CALENDAR, SERVICES["fhvhv"]), instance, scripted_source.url)
    assert result.run_requests == []
    assert result.skip_reason.skip_message == f"No fhvhv files in {MIRROR.description}: {MIRROR.missing_reason}"
    assert scripted_source.requests == []  # the mirror is not even asked


def test_the_fhvhv_sensor_on_the_tlc_asks_from_its_first_month(instance, scripted_source, clock):
    fhvhv = SERVICES["fhvhv"]
    clock(datetime(2019, 6, 1, tzinfo=UTC))  # 2019-01 .. 2019-04 may be published, but fhvhv begins 2019-02
    scripted_source.routes = {tlc_path("2019-02", fhvhv): b"PAR1"}
    result = tick(sensor(Calendar(TLC), fhvhv, max_probes_per_tick=100), instance, scripted_source.url)
    assert heads(scripted_source) == [tlc_path(m, fhvhv) for m in ("2019-02", "2019-03", "2019-04")]
    assert heads(scripted_source)[0] == "trip-data/fhvhv_tripdata_2019-02.parquet"
    assert requested(result) == [("2019-02", "2019-02")]
