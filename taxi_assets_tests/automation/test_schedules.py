"""The monthly schedules, evaluated with build_schedule_context; the calendar they ask; and every automation
definition by name."""

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from taxi_assets.automation.schedules import MONTHLY_CRON, SCHEDULE_TIMEZONE, build_schedules
from taxi_assets.definitions import build_defs
from taxi_assets.partitions import Calendar
from taxi_assets.services import MIRROR, SERVICES, TLC
from taxi_assets.source import TaxiSource
from taxi_assets.targets import load_target
from taxi_assets_tests.automation.conftest import add_run, mark_loaded

NEW_YORK = ZoneInfo("America/New_York")
UTC = timezone.utc
SCHEDULES = {s.name: s for s in build_schedules(Calendar(MIRROR))}  # most tests: the mirror's CSV.gz paths
TLC_SCHEDULES = {s.name: s for s in build_schedules(Calendar(TLC))}
GZIP = b"\x1f\x8b"


def tick(schedule, instance, source_url: str, when: datetime):
    # Closed after the tick: the context opens the instance from its reference, and an instance left open
    # stays Dagster's "current" one for code loaded later in the session.
    with dg.build_schedule_context(
        instance=instance,
        scheduled_execution_time=when,
        resources={"source": TaxiSource(base_url=source_url, backoff_seconds=0.05)},
    ) as context:
        return schedule(context)


def heads(source) -> list[str]:
    return [p for method, p in source.requests if method == "HEAD"]


@pytest.mark.parametrize("layout", ["tlc", "mirror"])
def test_every_job_schedule_and_sensor_is_defined_by_name(monkeypatch, tmp_path, layout):
    monkeypatch.setenv("TAXI_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("TAXI_SOURCE", layout)
    defs = build_defs(load_target("local"))
    assert sorted(SERVICES) == ["fhv", "fhvhv", "green", "yellow"]
    for service in SERVICES:  # fhvhv too on the mirror: its schedule and sensor skip with the reason
        assert defs.resolve_job_def(f"{service}_trips_job").partitions_def is not None
        schedule = defs.resolve_schedule_def(f"{service}_trips_job_schedule")
        assert (schedule.cron_schedule, schedule.execution_timezone) == (MONTHLY_CRON, SCHEDULE_TIMEZONE)
        assert schedule.job_name == f"{service}_trips_job"
        assert defs.resolve_sensor_def(f"{service}_source_sensor").job_name == f"{service}_trips_job"
    defs.resolve_job_def("taxi_zones_job")
    for name in (
        "lake_raw_files_sensor",
        "taxi_automation_sensor",
        "run_failure_alert_sensor",
        "warehouse_freshness_sensor",
        "dead_run_sensor",
    ):
        defs.resolve_sensor_def(name)
    repo = defs.get_repository_def()
    assert all(s.default_status == dg.DefaultScheduleStatus.STOPPED for s in repo.schedule_defs)
    # Every sensor starts stopped but dead_run_sensor: freeing the slots of killed runs needs no opt-in.
    assert {s.name for s in repo.sensor_defs if s.default_status != dg.DefaultSensorStatus.STOPPED} == {
        "dead_run_sensor"
    }


def test_the_tick_is_3am_new_york_on_the_first_in_winter_and_summer():
    from dagster._utils.schedules import cron_string_iterator

    schedule = SCHEDULES["yellow_trips_job_schedule"]
    start = datetime(2021, 1, 15, tzinfo=NEW_YORK).timestamp()
    ticks = cron_string_iterator(start, schedule.cron_schedule, schedule.execution_timezone)
    first, second = next(ticks), next(ticks)
    assert first.isoformat() == "2021-02-01T03:00:00-05:00"  # EST: 08:00 UTC
    assert [next(ticks) for _ in range(3)][-1].isoformat() == "2021-06-01T03:00:00-04:00"  # EDT: 07:00 UTC
    assert second.isoformat() == "2021-03-01T03:00:00-05:00"


def test_a_published_due_month_is_requested_with_its_month_as_run_key(stored_instance, scripted_source):
    scripted_source.routes = {SERVICES["green"].source_path("2021-01", MIRROR): GZIP}
    schedule = SCHEDULES["green_trips_job_schedule"]
    when = datetime(2021, 4, 1, 3, tzinfo=NEW_YORK)  # 2021-01 is due on 2021-04-01 (two months' lag)

    request = tick(schedule, stored_instance, scripted_source.url, when)
    again = tick(schedule, stored_instance, scripted_source.url, when)  # the same tick evaluated twice

    assert isinstance(request, dg.RunRequest)
    assert (request.partition_key, request.run_key) == ("2021-01", "2021-01")
    assert again.run_key == request.run_key  # the daemon launches one run per run_key
    assert heads(scripted_source) == ["green/green_tripdata_2021-01.csv.gz"] * 2


# --------------------------------------------------------------------------------------------------------------
# The publication lag: on the 1st of M+3 the schedule loads M, never the month that has just ended


@pytest.mark.parametrize(
    ("when", "due"),
    [
        (datetime(2021, 4, 1, 3, tzinfo=NEW_YORK), "2021-01"),  # EDT
        (datetime(2021, 2, 1, 3, tzinfo=NEW_YORK), "2020-11"),  # EST
        (datetime(2021, 1, 1, 3, tzinfo=NEW_YORK), "2020-10"),  # across the year
        (datetime(2019, 4, 1, 3, tzinfo=NEW_YORK), "2019-01"),  # the first partition's first due tick
    ],
)
def test_the_schedule_requests_the_month_due_at_the_tick_not_the_month_just_ended(
    stored_instance, scripted_source, when, due
):
    yellow = SERVICES["yellow"]
    for layout, schedules in ((MIRROR, SCHEDULES), (TLC, TLC_SCHEDULES)):
        scripted_source.requests.clear()
        scripted_source.routes = {yellow.source_path(due, layout): GZIP}

        request = tick(schedules["yellow_trips_job_schedule"], stored_instance, scripted_source.url, when)

        assert isinstance(request, dg.RunRequest), (layout.name, request)
        assert (request.partition_key, request.run_key) == (due, due)
        assert heads(scripted_source) == [yellow.source_path(due, layout)]  # asked about that month only
    assert heads(scripted_source) == [f"trip-data/yellow_tripdata_{due}.parquet"]


def test_before_the_first_month_is_due_the_schedule_skips_without_asking(stored_instance, scripted_source):
    # 2019-01, the first partition, is due on 2019-04-01: on 2019-03-01 nothing is due yet.
    result = tick(
        SCHEDULES["yellow_trips_job_schedule"],
        stored_instance,
        scripted_source.url,
        datetime(2019, 3, 1, 3, tzinfo=NEW_YORK),
    )
    assert isinstance(result, dg.SkipReason)
    assert result.skip_message == "No yellow month is due at the source yet" and scripted_source.requests == []


def test_the_schedule_uses_the_lag_of_its_layout(stored_instance, scripted_source):
    """A source with a one-month lag gets its month a month earlier: the lag is read, not assumed."""
    from dataclasses import replace

    prompt = Calendar(replace(TLC, publication_lag_months=1))
    (schedule,) = [s for s in build_schedules(prompt) if s.name == "yellow_trips_job_schedule"]
    scripted_source.routes = {SERVICES["yellow"].source_path("2021-02", TLC): GZIP}
    request = tick(schedule, stored_instance, scripted_source.url, datetime(2021, 4, 1, 3, tzinfo=NEW_YORK))
    assert isinstance(request, dg.RunRequest) and request.partition_key == "2021-02"


def test_after_the_mirror_ends_the_schedule_keeps_to_its_last_month(stored_instance, scripted_source):
    mark_loaded(stored_instance, "yellow", "2021-07")
    result = tick(
        SCHEDULES["yellow_trips_job_schedule"],
        stored_instance,
        scripted_source.url,
        datetime(2022, 3, 1, 3, tzinfo=NEW_YORK),
    )
    assert isinstance(result, dg.SkipReason) and result.skip_message == "yellow 2021-07 is already loaded"
    assert scripted_source.requests == []


def test_a_month_not_published_yet_skips_and_names_the_source_sensor(stored_instance, scripted_source):
    result = tick(
        SCHEDULES["yellow_trips_job_schedule"],
        stored_instance,
        scripted_source.url,
        datetime(2021, 9, 1, 3, tzinfo=NEW_YORK),  # due: 2021-06 (2021-08 has just ended, far from published)
    )
    assert isinstance(result, dg.SkipReason)
    assert "2021-06 is not published" in result.skip_message and "yellow_source_sensor" in result.skip_message
    assert heads(scripted_source) == ["yellow/yellow_tripdata_2021-06.csv.gz"]


def test_a_source_error_still_requests_the_run(stored_instance, scripted_source):
    scripted_source.routes = {SERVICES["fhv"].source_path("2021-01", MIRROR): 502}
    result = tick(
        SCHEDULES["fhv_trips_job_schedule"],
        stored_instance,
        scripted_source.url,
        datetime(2021, 4, 1, 3, tzinfo=NEW_YORK),
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
        datetime(2021, 4, 1, 3, tzinfo=NEW_YORK),
    )
    assert isinstance(result, dg.SkipReason) and scripted_source.requests == []
    assert "2021-01" in result.skip_message


# --------------------------------------------------------------------------------------------------------------
# fhvhv: only the TLC layout has it; and the months each calendar offers


def test_the_fhvhv_schedule_skips_on_the_mirror_with_its_reason(stored_instance, scripted_source):
    result = tick(
        SCHEDULES["fhvhv_trips_job_schedule"],
        stored_instance,
        scripted_source.url,
        datetime(2021, 4, 1, 3, tzinfo=NEW_YORK),
    )
    assert isinstance(result, dg.SkipReason)
    assert result.skip_message == f"No fhvhv files in {MIRROR.description}: {MIRROR.missing_reason}"
    assert "TAXI_SOURCE=tlc" in result.skip_message and scripted_source.requests == []


def test_the_fhvhv_schedule_on_the_tlc_starts_with_its_first_month(stored_instance, scripted_source):
    schedule = TLC_SCHEDULES["fhvhv_trips_job_schedule"]
    # 2019-01 would be due on 2019-04-01, but fhvhv begins 2019-02: nothing to load yet.
    early = tick(schedule, stored_instance, scripted_source.url, datetime(2019, 4, 1, 3, tzinfo=NEW_YORK))
    assert isinstance(early, dg.SkipReason) and early.skip_message == "No fhvhv month is due at the source yet"

    scripted_source.routes = {"trip-data/fhvhv_tripdata_2019-02.parquet": b"PAR1"}
    request = tick(schedule, stored_instance, scripted_source.url, datetime(2019, 5, 1, 3, tzinfo=NEW_YORK))
    assert isinstance(request, dg.RunRequest) and request.partition_key == "2019-02"
    assert heads(scripted_source) == ["trip-data/fhvhv_tripdata_2019-02.parquet"]


def test_each_service_starts_at_its_first_month_or_the_calendars_if_later():
    def first(calendar: Calendar) -> dict[str, str]:
        return {name: calendar.partitions(s).get_first_partition_key() for name, s in SERVICES.items()}

    assert first(Calendar(TLC)) == {"yellow": "2019-01", "green": "2019-01", "fhv": "2019-01", "fhvhv": "2019-02"}
    assert first(Calendar(TLC, first_month="2021-01")) == dict.fromkeys(SERVICES, "2021-01")
    assert first(Calendar(TLC, first_month="2015-01")) == {
        "yellow": "2015-01",
        "green": "2015-01",
        "fhv": "2015-01",
        "fhvhv": "2019-02",
    }
    # The mirror ends at 2021-07; the TLC keeps publishing.
    assert Calendar(MIRROR).partitions(SERVICES["yellow"]).get_last_partition_key() == "2021-07"
    now = datetime(2021, 3, 15, tzinfo=UTC)
    assert Calendar(TLC, first_month="2021-01").complete_months(SERVICES["fhvhv"], now) == ["2021-01", "2021-02"]


def test_a_calendar_starting_later_moves_the_schedules_first_due_month(stored_instance, scripted_source):
    (schedule,) = [s for s in build_schedules(Calendar(TLC, first_month="2021-01")) if s.name.startswith("green")]
    early = tick(schedule, stored_instance, scripted_source.url, datetime(2021, 3, 1, 3, tzinfo=NEW_YORK))
    assert isinstance(early, dg.SkipReason) and early.skip_message == "No green month is due at the source yet"
    scripted_source.routes = {"trip-data/green_tripdata_2021-01.parquet": b"PAR1"}
    request = tick(schedule, stored_instance, scripted_source.url, datetime(2021, 4, 1, 3, tzinfo=NEW_YORK))
    assert isinstance(request, dg.RunRequest) and request.partition_key == "2021-01"
