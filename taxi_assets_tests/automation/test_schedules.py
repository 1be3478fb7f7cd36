"""The monthly schedules, evaluated with build_schedule_context; and every automation definition by name."""

from datetime import datetime
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from taxi_assets.definitions import build_defs
from taxi_assets.schedules import MONTHLY_CRON, SCHEDULE_TIMEZONE, build_schedules
from taxi_assets.services import SERVICES
from taxi_assets.source import TaxiSource
from taxi_assets.targets import load_target
from taxi_assets_tests.automation.conftest import add_run, mark_loaded

NEW_YORK = ZoneInfo("America/New_York")
SCHEDULES = {s.name: s for s in build_schedules()}


def tick(schedule, instance, source_url: str, when: datetime):
    # Closed after the tick: the context opens the instance from its reference, and an instance left open
    # stays Dagster's "current" one for code loaded later in the session.
    with dg.build_schedule_context(
        instance=instance,
        scheduled_execution_time=when,
        resources={"source": TaxiSource(base_url=source_url, backoff_seconds=0.05)},
    ) as context:
        return schedule(context)


def test_every_job_schedule_and_sensor_is_defined_by_name(monkeypatch, tmp_path):
    monkeypatch.setenv("TAXI_DATA_DIR", str(tmp_path))
    defs = build_defs(load_target("local"))
    for service in SERVICES:
        assert defs.resolve_job_def(f"{service}_trips_job").partitions_def is not None
        schedule = defs.resolve_schedule_def(f"{service}_trips_job_schedule")
        assert (schedule.cron_schedule, schedule.execution_timezone) == (MONTHLY_CRON, SCHEDULE_TIMEZONE)
        assert schedule.job_name == f"{service}_trips_job"
        assert defs.resolve_sensor_def(f"{service}_source_sensor").job_name == f"{service}_trips_job"
    defs.resolve_job_def("taxi_zones_job")
    for name in ("lake_raw_files_sensor", "run_failure_alert_sensor", "warehouse_freshness_sensor"):
        defs.resolve_sensor_def(name)
    repo = defs.get_repository_def()
    assert all(s.default_status == dg.DefaultScheduleStatus.STOPPED for s in repo.schedule_defs)
    assert all(s.default_status == dg.DefaultSensorStatus.STOPPED for s in repo.sensor_defs)


def test_the_tick_is_3am_new_york_on_the_first_in_winter_and_summer():
    from dagster._utils.schedules import cron_string_iterator

    schedule = SCHEDULES["yellow_trips_job_schedule"]
    start = datetime(2021, 1, 15, tzinfo=NEW_YORK).timestamp()
    ticks = cron_string_iterator(start, schedule.cron_schedule, schedule.execution_timezone)
    first, second = next(ticks), next(ticks)
    assert first.isoformat() == "2021-02-01T03:00:00-05:00"  # EST: 08:00 UTC
    assert [next(ticks) for _ in range(3)][-1].isoformat() == "2021-06-01T03:00:00-04:00"  # EDT: 07:00 UTC
    assert second.isoformat() == "2021-03-01T03:00:00-05:00"


def test_a_published_month_just_ended_is_requested_with_its_month_as_run_key(stored_instance, scripted_source):
    scripted_source.routes = {SERVICES["green"].source_path("2021-01"): b"\x1f\x8b"}
    schedule = SCHEDULES["green_trips_job_schedule"]
    when = datetime(2021, 2, 1, 3, tzinfo=NEW_YORK)

    request = tick(schedule, stored_instance, scripted_source.url, when)
    again = tick(schedule, stored_instance, scripted_source.url, when)  # the same tick evaluated twice

    assert isinstance(request, dg.RunRequest)
    assert (request.partition_key, request.run_key) == ("2021-01", "2021-01")
    assert again.run_key == request.run_key  # the daemon launches one run per run_key
    assert [m for m, p in scripted_source.requests] == ["HEAD", "HEAD"]


def test_a_month_not_published_yet_skips_and_names_the_source_sensor(stored_instance, scripted_source):
    result = tick(
        SCHEDULES["yellow_trips_job_schedule"],
        stored_instance,
        scripted_source.url,
        datetime(2021, 9, 1, 3, tzinfo=NEW_YORK),
    )
    assert isinstance(result, dg.SkipReason)
    assert "2021-08 is not published" in result.skip_message and "yellow_source_sensor" in result.skip_message


def test_a_source_error_still_requests_the_run(stored_instance, scripted_source):
    scripted_source.routes = {SERVICES["fhv"].source_path("2021-01"): 502}
    result = tick(
        SCHEDULES["fhv_trips_job_schedule"],
        stored_instance,
        scripted_source.url,
        datetime(2021, 2, 1, 3, tzinfo=NEW_YORK),
    )
    assert isinstance(result, dg.RunRequest) and result.partition_key == "2021-01"


@pytest.mark.parametrize("state", ["loaded", "in_flight"])
def test_a_month_loaded_or_being_loaded_is_skipped_without_asking_the_source(stored_instance, scripted_source, state):
    if state == "loaded":
        mark_loaded(stored_instance, "yellow", "2021-01")
    else:
        add_run(stored_instance, "yellow_trips_job", dg.DagsterRunStatus.STARTED, {"dagster/partition": "2021-01"})
    result = tick(
        SCHEDULES["yellow_trips_job_schedule"],
        stored_instance,
        scripted_source.url,
        datetime(2021, 2, 1, 3, tzinfo=NEW_YORK),
    )
    assert isinstance(result, dg.SkipReason) and scripted_source.requests == []
