"""The automation settings the target reads (sensor intervals, the freshness cap) reach the sensors and checks,
and a wrong one fails the load with its name."""

import pytest

from taxi_assets.automation.alerts import FAILURE_SENSOR_INTERVAL
from taxi_assets.automation.conditions import AUTOMATION_SENSOR_INTERVAL
from taxi_assets.automation.dead_runs import DEAD_RUN_SENSOR_INTERVAL
from taxi_assets.automation.freshness import FRESHNESS_SENSOR_INTERVAL
from taxi_assets.automation.lake_sensor import LAKE_SENSOR_INTERVAL
from taxi_assets.automation.source_sensor import SOURCE_SENSOR_INTERVAL
from taxi_assets.definitions import build_defs
from taxi_assets.settings import ConfigurationError
from taxi_assets.targets import AutomationSettings, load_target


@pytest.fixture
def target_env(monkeypatch, tmp_path):
    monkeypatch.setenv("TAXI_DATA_DIR", str(tmp_path))
    for name in ("TAXI_SENSOR_INTERVAL_SECONDS", "TAXI_FRESHNESS_LAST_MONTH"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def intervals(target) -> dict[str, int]:
    return {s.name: s.minimum_interval_seconds for s in build_defs(target).sensors}


def test_each_sensor_has_its_own_interval_by_default(target_env):
    target = load_target("local")
    assert target.automation == AutomationSettings(sensor_interval_seconds=None, freshness_last_month=None)
    assert intervals(target) == {
        "yellow_source_sensor": SOURCE_SENSOR_INTERVAL,
        "green_source_sensor": SOURCE_SENSOR_INTERVAL,
        "fhv_source_sensor": SOURCE_SENSOR_INTERVAL,
        "fhvhv_source_sensor": SOURCE_SENSOR_INTERVAL,
        "lake_raw_files_sensor": LAKE_SENSOR_INTERVAL,
        "taxi_automation_sensor": AUTOMATION_SENSOR_INTERVAL,
        "run_failure_alert_sensor": FAILURE_SENSOR_INTERVAL,
        "warehouse_freshness_sensor": FRESHNESS_SENSOR_INTERVAL,
        "dead_run_sensor": DEAD_RUN_SENSOR_INTERVAL,
    }


def test_the_interval_setting_overrides_every_sensor(target_env):
    target_env.setenv("TAXI_SENSOR_INTERVAL_SECONDS", "5")
    target_env.setenv("TAXI_FRESHNESS_LAST_MONTH", "2021-07")
    target = load_target("local")
    assert target.automation == AutomationSettings(sensor_interval_seconds=5, freshness_last_month="2021-07")
    assert set(intervals(target).values()) == {5}


@pytest.mark.parametrize("value", ["0", "-5", "5s", "1.5"])
def test_a_wrong_interval_is_an_error_naming_the_setting(target_env, value):
    target_env.setenv("TAXI_SENSOR_INTERVAL_SECONDS", value)
    with pytest.raises(ConfigurationError, match=f"TAXI_SENSOR_INTERVAL_SECONDS='{value}' is not a positive number"):
        load_target("local")
