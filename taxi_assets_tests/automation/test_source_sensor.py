"""The source sensor, evaluated with build_sensor_context against a scripted HTTP source: which months it asks
about, which it requests, its cursor, its bounds, and a source that answers 404, 500 or slowly."""

import json
import time

import dagster as dg

from taxi_assets.jobs import trips_jobs
from taxi_assets.sensors import SourceCursor, build_source_sensor
from taxi_assets.services import SERVICES
from taxi_assets.source import TaxiSource
from taxi_assets_tests.automation.conftest import add_run, mark_loaded

YELLOW = SERVICES["yellow"]


def path(month: str) -> str:
    return YELLOW.source_path(month)


def sensor(**bounds) -> dg.SensorDefinition:
    bounds = {"max_requests_per_tick": 2, "probe_timeout_seconds": 1.0, **bounds}
    return build_source_sensor(YELLOW, trips_jobs["yellow"], **bounds)


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
    heads = [p for method, p in scripted_source.requests if method == "HEAD"]
    assert heads == [path(f"2019-{m:02d}") for m in range(1, 13)]

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
