"""Freshness: when a month is due (per source layout), the months_on_time check (executed, and reported by its
sensor), and that the loads do not run it."""

from dataclasses import replace
from datetime import datetime, timezone

import dagster as dg
import pytest

from taxi_assets import settings
from taxi_assets.automation import freshness
from taxi_assets.automation.freshness import build_freshness_sensor
from taxi_assets.definitions import build_defs
from taxi_assets.partitions import Calendar
from taxi_assets.services import MIRROR, SERVICES, TLC
from taxi_assets.settings import ConfigurationError
from taxi_assets.targets import load_target
from taxi_assets_tests.automation.conftest import mark_loaded

UTC = timezone.utc
YELLOW = SERVICES["yellow"]
FHVHV = SERVICES["fhvhv"]
TLC_CALENDAR, MIRROR_CALENDAR = Calendar(TLC), Calendar(MIRROR)


@pytest.mark.parametrize("calendar", [TLC_CALENDAR, MIRROR_CALENDAR], ids=["tlc", "mirror"])
def test_a_month_is_due_when_the_third_month_after_it_starts(calendar):
    assert calendar.layout.publication_lag_months == 2
    assert calendar.first_publication("2021-01") == datetime(2021, 3, 1, tzinfo=UTC)
    assert calendar.due_at("2021-01") == datetime(2021, 4, 1, tzinfo=UTC)
    assert calendar.due_at("2020-11") == datetime(2021, 2, 1, tzinfo=UTC)
    assert freshness.due_months(YELLOW, datetime(2021, 3, 31, 23, 59, tzinfo=UTC), calendar)[-1] == "2020-12"
    assert freshness.due_months(YELLOW, datetime(2021, 4, 1, tzinfo=UTC), calendar)[-1] == "2021-01"
    assert freshness.due_months(YELLOW, datetime(2019, 3, 31, tzinfo=UTC), calendar) == []
    assert freshness.due_months(YELLOW, datetime(2019, 4, 1, tzinfo=UTC), calendar) == ["2019-01"]


def test_the_due_months_end_where_the_layout_ends():
    later = datetime(2023, 6, 15, tzinfo=UTC)
    assert freshness.due_months(YELLOW, later, MIRROR_CALENDAR)[-1] == "2021-07"  # the mirror's last month
    assert freshness.due_months(YELLOW, later, TLC_CALENDAR)[-1] == "2023-03"  # the TLC keeps publishing
    assert len(freshness.due_months(YELLOW, later, MIRROR_CALENDAR)) == 31  # 2019-01 .. 2021-07
    # fhvhv begins 2019-02: 2019-01 is never due.
    assert freshness.due_months(FHVHV, datetime(2019, 5, 15, tzinfo=UTC), TLC_CALENDAR) == ["2019-02"]
    # A calendar starting later expects nothing before its first month.
    assert freshness.due_months(YELLOW, later, Calendar(TLC, first_month="2023-01")) == [
        "2023-01",
        "2023-02",
        "2023-03",
    ]


def test_the_due_date_follows_the_layouts_lag():
    """A source with another lag gets other due dates: the lag is read from the layout, not assumed."""
    prompt, slow = Calendar(replace(TLC, publication_lag_months=1)), Calendar(replace(TLC, publication_lag_months=3))
    assert prompt.due_at("2021-01") == datetime(2021, 3, 1, tzinfo=UTC)
    assert slow.due_at("2021-01") == datetime(2021, 5, 1, tzinfo=UTC)
    now = datetime(2021, 4, 1, tzinfo=UTC)
    assert [freshness.due_months(YELLOW, now, c)[-1] for c in (prompt, TLC_CALENDAR, slow)] == [
        "2021-02",
        "2021-01",
        "2020-12",
    ]
    assert freshness.rule(prompt).startswith(
        "A month is due 1 whole months after it ends (at 00:00 UTC on the 1st of M+2)"
    )
    assert freshness.rule(MIRROR_CALENDAR).startswith("A month is due 2 whole months after it ends")
    assert MIRROR.description in freshness.rule(MIRROR_CALENDAR) and TLC.description in freshness.rule(TLC_CALENDAR)


def test_the_verdict_lists_every_due_month_missing():
    now = datetime(2019, 8, 15, tzinfo=UTC)  # due: 2019-01 .. 2019-05
    verdict = freshness.judge(YELLOW, {"2019-01", "2019-03", "2019-04"}, now, MIRROR_CALENDAR)
    assert not verdict.passed and verdict.overdue == ("2019-02", "2019-05")
    assert "2019-02, 2019-05" in verdict.description and "due on 2019-05-01" in verdict.description
    assert verdict.metadata["newest_due_month"].value == "2019-05"
    assert verdict.metadata["next_due"].value == "2019-06 by 2019-09-01"
    assert verdict.metadata["dagster/overdue_deadline_timestamp"].value == datetime(2019, 5, 1, tzinfo=UTC).timestamp()
    assert verdict.metadata["rule"].value == freshness.rule(MIRROR_CALENDAR)

    fresh = freshness.judge(YELLOW, {f"2019-0{m}" for m in range(1, 6)}, now, MIRROR_CALENDAR)
    assert (
        fresh.passed and fresh.overdue == () and fresh.description == "Every due month is loaded (2019-01 to 2019-05)."
    )


def test_nothing_is_due_before_the_first_due_date():
    verdict = freshness.judge(FHVHV, set(), datetime(2019, 4, 15, tzinfo=UTC), TLC_CALENDAR)
    assert verdict.passed and verdict.description == "No month is due yet."
    assert verdict.metadata["next_due"].value == "2019-02 by 2019-05-01"


def test_a_capped_source_expects_no_later_month(monkeypatch, tmp_path):
    monkeypatch.setenv("TAXI_DATA_DIR", str(tmp_path))
    monkeypatch.setenv(settings.FRESHNESS_LAST_MONTH, "2019-02")
    last_month = load_target("local").automation.freshness_last_month
    verdict = freshness.judge(
        YELLOW, {"2019-01", "2019-02"}, datetime(2021, 1, 1, tzinfo=UTC), TLC_CALENDAR, last_month
    )
    assert verdict.passed
    monkeypatch.setenv(settings.FRESHNESS_LAST_MONTH, "2019-13")
    with pytest.raises(ConfigurationError, match="TAXI_FRESHNESS_LAST_MONTH"):
        load_target("local")


def test_the_loads_do_not_run_the_freshness_check(monkeypatch, tmp_path):
    monkeypatch.setenv("TAXI_DATA_DIR", str(tmp_path))
    defs = build_defs(load_target("local"))
    for service in SERVICES:
        nodes = {n.name for n in defs.resolve_job_def(f"{service}_trips_job").graph.nodes}
        assert nodes == {
            f"{service}__{name}" for name in ("raw_trips", "clean_trips", "warehouse_trips", "postgres_trips")
        }


def test_executing_the_check_reads_the_months_the_instance_knows(monkeypatch, tmp_path, stored_instance):
    monkeypatch.setenv("TAXI_DATA_DIR", str(tmp_path))  # TAXI_SOURCE unset: the TLC layout
    monkeypatch.setenv(settings.FRESHNESS_LAST_MONTH, "2019-02")
    mark_loaded(stored_instance, "yellow", "2019-01", assets=("warehouse_trips",))
    mark_loaded(stored_instance, "green", "2019-01", assets=("warehouse_trips",))
    mark_loaded(stored_instance, "green", "2019-02", assets=("warehouse_trips",))
    target = load_target("local")
    assert target.calendar == TLC_CALENDAR
    defs = build_defs(target)
    job = defs.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection=set(), asset_check_selection={freshness.freshness_check_key(s) for s in SERVICES.values()}
    )

    result = job.execute_in_process(instance=stored_instance)

    outcomes = {
        e.asset_key.path[0]: (e.passed, e.metadata["overdue_months"].value)
        for e in result.get_asset_check_evaluations()
    }
    assert outcomes == {
        "yellow": (False, ["2019-02"]),
        "green": (True, []),
        "fhv": (False, ["2019-01", "2019-02"]),
        "fhvhv": (False, ["2019-02"]),  # its first month: 2019-01 is not expected
    }


def test_the_sensor_reports_the_check_when_it_changes(instance):
    sensor = build_freshness_sensor(MIRROR_CALENDAR)
    mark_loaded(instance, "fhv", "2019-01", assets=("warehouse_trips",))

    first = sensor(dg.build_sensor_context(instance=instance))
    evaluations = {e.asset_key.to_user_string(): e for e in first.asset_events}
    assert {"yellow/warehouse_trips", "green/warehouse_trips", "fhv/warehouse_trips"} <= set(evaluations)
    mirrored = [evaluations[f"{name}/warehouse_trips"] for name in MIRROR.services]
    assert all(e.check_name == "months_on_time" and not e.passed for e in mirrored)
    assert evaluations["fhv/warehouse_trips"].metadata["overdue_months"].value[0] == "2019-02"
    assert evaluations["fhv/warehouse_trips"].metadata["overdue_months"].value[-1] == "2021-07"  # the mirror's end
    assert first.run_requests == []  # evaluated in the sensor: no run

    second = sensor(dg.build_sensor_context(instance=instance, cursor=first.cursor))
    assert second.asset_events == [] and "No change" in second.skip_reason.skip_message

    mark_loaded(instance, "fhv", "2019-02", assets=("warehouse_trips",))
    third = sensor(dg.build_sensor_context(instance=instance, cursor=second.cursor))
    assert [e.asset_key.to_user_string() for e in third.asset_events] == ["fhv/warehouse_trips"]


def test_the_sensor_expects_no_month_after_the_last_one(instance):
    mark_loaded(instance, "fhv", "2019-01", assets=("warehouse_trips",))
    result = build_freshness_sensor(TLC_CALENDAR, last_month="2019-01")(dg.build_sensor_context(instance=instance))
    passed = {e.asset_key.path[0]: e.passed for e in result.asset_events}
    # fhvhv begins 2019-02: with nothing expected after 2019-01 it owes nothing.
    assert passed == {"yellow": False, "green": False, "fhv": True, "fhvhv": True}


def test_the_mirror_expects_no_fhvhv_month():
    verdict = freshness.judge(FHVHV, set(), datetime(2022, 1, 1, tzinfo=UTC), MIRROR_CALENDAR)
    assert verdict.passed and verdict.overdue == ()
