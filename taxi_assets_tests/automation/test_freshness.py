"""Freshness: when a month is due, the months_on_time check (executed, and reported by its sensor), and that the
loads do not run it."""

from datetime import datetime, timezone

import dagster as dg
import pytest

from taxi_assets import freshness
from taxi_assets.definitions import build_defs
from taxi_assets.sensors import build_freshness_sensor
from taxi_assets.services import SERVICES
from taxi_assets.targets import ConfigurationError, load_target
from taxi_assets_tests.automation.conftest import mark_loaded

UTC = timezone.utc
YELLOW = SERVICES["yellow"]


def test_a_month_is_due_when_the_third_month_after_it_starts():
    assert freshness.due_at("2021-01") == datetime(2021, 4, 1, tzinfo=UTC)
    assert freshness.due_at("2020-11") == datetime(2021, 2, 1, tzinfo=UTC)
    assert freshness.due_months(datetime(2021, 3, 31, 23, 59, tzinfo=UTC))[-1] == "2020-12"
    assert freshness.due_months(datetime(2021, 4, 1, tzinfo=UTC))[-1] == "2021-01"
    assert freshness.due_months(datetime(2019, 3, 31, tzinfo=UTC)) == []


def test_the_verdict_lists_every_due_month_missing():
    now = datetime(2019, 8, 15, tzinfo=UTC)  # due: 2019-01 .. 2019-05
    verdict = freshness.judge(YELLOW, {"2019-01", "2019-03", "2019-04"}, now)
    assert not verdict.passed and verdict.overdue == ("2019-02", "2019-05")
    assert "2019-02, 2019-05" in verdict.description and "due on 2019-05-01" in verdict.description
    assert verdict.metadata["newest_due_month"].value == "2019-05"
    assert verdict.metadata["next_due"].value == "2019-06 by 2019-09-01"

    fresh = freshness.judge(YELLOW, {f"2019-0{m}" for m in range(1, 6)}, now)
    assert (
        fresh.passed and fresh.overdue == () and fresh.description == "Every due month is loaded (2019-01 to 2019-05)."
    )


def test_a_capped_source_expects_no_later_month(monkeypatch, tmp_path):
    monkeypatch.setenv("TAXI_DATA_DIR", str(tmp_path))
    monkeypatch.setenv(freshness.LAST_MONTH_ENV, "2019-02")
    last_month = load_target("local").automation.freshness_last_month
    verdict = freshness.judge(YELLOW, {"2019-01", "2019-02"}, datetime(2021, 1, 1, tzinfo=UTC), last_month)
    assert verdict.passed
    monkeypatch.setenv(freshness.LAST_MONTH_ENV, "2019-13")
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
    monkeypatch.setenv("TAXI_DATA_DIR", str(tmp_path))
    monkeypatch.setenv(freshness.LAST_MONTH_ENV, "2019-02")
    mark_loaded(stored_instance, "yellow", "2019-01", assets=("warehouse_trips",))
    mark_loaded(stored_instance, "green", "2019-01", assets=("warehouse_trips",))
    mark_loaded(stored_instance, "green", "2019-02", assets=("warehouse_trips",))
    defs = build_defs(load_target("local"))
    job = defs.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection=set(), asset_check_selection={freshness.freshness_check_key(s) for s in SERVICES.values()}
    )

    result = job.execute_in_process(instance=stored_instance)

    outcomes = {
        e.asset_key.path[0]: (e.passed, e.metadata["overdue_months"].value)
        for e in result.get_asset_check_evaluations()
    }
    assert outcomes == {"yellow": (False, ["2019-02"]), "green": (True, []), "fhv": (False, ["2019-01", "2019-02"])}


def test_the_sensor_reports_the_check_when_it_changes(instance):
    sensor = build_freshness_sensor()
    mark_loaded(instance, "fhv", "2019-01", assets=("warehouse_trips",))

    first = sensor(dg.build_sensor_context(instance=instance))
    evaluations = {e.asset_key.to_user_string(): e for e in first.asset_events}
    assert set(evaluations) == {"yellow/warehouse_trips", "green/warehouse_trips", "fhv/warehouse_trips"}
    assert all(e.check_name == "months_on_time" and not e.passed for e in evaluations.values())
    assert evaluations["fhv/warehouse_trips"].metadata["overdue_months"].value[0] == "2019-02"
    assert first.run_requests == []  # evaluated in the sensor: no run

    second = sensor(dg.build_sensor_context(instance=instance, cursor=first.cursor))
    assert second.asset_events == [] and "No change" in second.skip_reason.skip_message

    mark_loaded(instance, "fhv", "2019-02", assets=("warehouse_trips",))
    third = sensor(dg.build_sensor_context(instance=instance, cursor=second.cursor))
    assert [e.asset_key.to_user_string() for e in third.asset_events] == ["fhv/warehouse_trips"]


def test_the_sensor_expects_no_month_after_the_last_one(instance):
    mark_loaded(instance, "fhv", "2019-01", assets=("warehouse_trips",))
    result = build_freshness_sensor(last_month="2019-01")(dg.build_sensor_context(instance=instance))
    passed = {e.asset_key.path[0]: e.passed for e in result.asset_events}
    assert passed == {"yellow": False, "green": False, "fhv": True}
