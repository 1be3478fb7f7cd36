"""The code location loads, and everything in it is named, found and described."""

import re
import subprocess
import sys

import dagster as dg
import pytest

from taxi_assets.assets.summary import SUMMARY
from taxi_assets.definitions import build_defs
from taxi_assets.partitions import Calendar
from taxi_assets.services import FHVHV, MIRROR, SERVICES, TLC, YELLOW
from taxi_assets.settings import ConfigurationError
from taxi_assets.targets import load_target

TRIP_ASSETS = ("raw_trips", "clean_trips", "warehouse_trips", "postgres_trips")
ZONE_ASSETS = ("taxi_zones", "warehouse_taxi_zones", "postgres_taxi_zones")


def test_every_asset_is_found_in_its_group_with_kinds_and_a_description(local_defs):
    graph = local_defs.resolve_asset_graph()
    monthly = (*TRIP_ASSETS, f"warehouse_{SUMMARY}", f"postgres_{SUMMARY}")
    expected = {dg.AssetKey([s, a]) for s in SERVICES for a in monthly} | {dg.AssetKey(a) for a in ZONE_ASSETS}
    assert set(graph.get_all_asset_keys()) == expected
    for key in expected:
        spec = local_defs.resolve_assets_def(key).specs_by_key[key]
        assert spec.group_name == (key.path[0] if len(key.path) == 2 else "taxi_zones")
        assert spec.description and spec.kinds, key
        assert spec.owners == ["team:taxi-data"] and spec.code_version.startswith("1-"), key
        if len(key.path) == 2:
            assert spec.partitions_def == Calendar(MIRROR).partitions(SERVICES[key.path[0]])
            assert local_defs.resolve_assets_def(key).backfill_policy == dg.BackfillPolicy.single_run()


def test_the_embedded_default_shows_duckdb_and_postgres(local_defs):
    kinds = local_defs.resolve_assets_def(dg.AssetKey(["yellow", "warehouse_trips"])).specs_by_key
    assert "duckdb" in next(iter(kinds.values())).kinds
    postgres = local_defs.resolve_assets_def(dg.AssetKey(["yellow", "postgres_trips"]))
    assert "postgres" in next(iter(postgres.specs_by_key.values())).kinds


def test_partitions_are_months_from_2019_01_or_the_services_first_month_to_the_sources_last():
    tlc, mirror = Calendar(TLC).partitions(YELLOW), Calendar(MIRROR).partitions(YELLOW)
    assert tlc.get_first_partition_key() == mirror.get_first_partition_key() == "2019-01"
    assert tlc.get_partition_keys_between_indexes(24, 27) == ["2021-01", "2021-02", "2021-03"]
    assert mirror.get_last_partition_key() == "2021-07"
    assert Calendar(TLC).partitions(FHVHV).get_first_partition_key() == "2019-02"  # fhvhv begins there
    assert Calendar(TLC, first_month="2024-06").partitions(FHVHV).get_first_partition_key() == "2024-06"


def test_source_and_first_month_come_from_the_environment(monkeypatch):
    monkeypatch.delenv("TAXI_SOURCE_URL", raising=False)
    monkeypatch.delenv("TAXI_SOURCE", raising=False)
    monkeypatch.setenv("TAXI_TLC_URL", "http://tlc.example")
    monkeypatch.setenv("TAXI_FIRST_MONTH", "2024-01")
    target = load_target("local")
    assert target.calendar == Calendar(TLC, first_month="2024-01")
    assert target.resources["source"].base_url == "http://tlc.example"
    monkeypatch.setenv("TAXI_SOURCE", "mirror")
    monkeypatch.setenv("TAXI_SOURCE_URL", "/srv/mirror")
    monkeypatch.setenv("TAXI_FIRST_MONTH", "2021-07")
    target = load_target("local")
    assert (target.calendar.layout, target.resources["source"].base_url) == (MIRROR, "/srv/mirror")


@pytest.mark.parametrize(
    "settings, named",
    [
        ({"TAXI_SOURCE": "ftp"}, "TAXI_SOURCE='ftp' is not one of tlc, mirror"),
        ({"TAXI_SOURCE_URL": "/srv/mirror"}, "TAXI_SOURCE_URL is set but TAXI_SOURCE is not"),
        ({"TAXI_FIRST_MONTH": "2019-13"}, "TAXI_FIRST_MONTH='2019-13' is not a month like 2019-01"),
        ({"TAXI_SOURCE": "mirror", "TAXI_FIRST_MONTH": "2022-01"}, "TAXI_FIRST_MONTH=2022-01 is after 2021-07"),
        (
            {"TAXI_SOURCE": "mirror", "TAXI_SOURCE_URL": "ftp://user:secret@mirror.example/tlc"},
            "TAXI_SOURCE_URL: ftp:// is not supported (http, https, file, or a folder)",
        ),
    ],
)
def test_a_wrong_source_setting_is_named(monkeypatch, settings, named):
    for name in ("TAXI_SOURCE", "TAXI_SOURCE_URL", "TAXI_FIRST_MONTH"):
        monkeypatch.delenv(name, raising=False)
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=re.escape(named)) as raised:
        load_target("local")
    assert "secret" not in str(raised.value)


# The public names: the UI, the docs, dagster.yaml's run limits and people's launch scripts refer to them.
JOBS = {"yellow_trips_job", "green_trips_job", "fhv_trips_job", "fhvhv_trips_job", "taxi_zones_job"}
SCHEDULES = {  # schedule -> the job it launches
    "yellow_trips_job_schedule": "yellow_trips_job",
    "green_trips_job_schedule": "green_trips_job",
    "fhv_trips_job_schedule": "fhv_trips_job",
    "fhvhv_trips_job_schedule": "fhvhv_trips_job",
}
SENSORS = {
    "yellow_source_sensor",
    "green_source_sensor",
    "fhv_source_sensor",
    "fhvhv_source_sensor",
    "lake_raw_files_sensor",
    "taxi_automation_sensor",
    "run_failure_alert_sensor",
    "warehouse_freshness_sensor",
    "dead_run_sensor",
}


def test_every_job_schedule_and_sensor_is_found_by_name(local_defs):
    assert {job.name for job in local_defs.resolve_all_job_defs()} - {"__ASSET_JOB"} == JOBS
    assert {schedule.name: schedule.job_name for schedule in local_defs.schedules} == SCHEDULES
    assert {sensor.name for sensor in local_defs.sensors} == SENSORS
    # And each is found by that name.
    assert {name: local_defs.resolve_job_def(name).name for name in JOBS} == {name: name for name in JOBS}
    assert {name: local_defs.resolve_schedule_def(name).job_name for name in SCHEDULES} == SCHEDULES
    assert {name: local_defs.resolve_sensor_def(name).name for name in SENSORS} == {name: name for name in SENSORS}


def test_trips_job_selects_the_services_four_assets(local_defs):
    job = local_defs.resolve_job_def("green_trips_job")
    assert job.asset_layer.executable_asset_keys == {dg.AssetKey(["green", a]) for a in TRIP_ASSETS}


def test_the_package_exposes_defs_for_dagster_dash_m(local_env):
    """What `dagster ... -m taxi_assets` loads, in a fresh interpreter."""
    code = "import taxi_assets, dagster as dg; assert isinstance(taxi_assets.defs, dg.Definitions); print('ok')"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "ok\n"


def test_an_unknown_target_is_an_error_naming_the_setting(monkeypatch):
    monkeypatch.setenv("TAXI_TARGET", "azure")
    with pytest.raises(ConfigurationError, match="TAXI_TARGET='azure' is not one of local, gcp"):
        build_defs(load_target())


def test_readme_shows_the_data_contract_of_the_code():
    from pathlib import Path

    from taxi_assets.cli import contract_markdown

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    embedded = readme.split("<!-- contract:start -->\n")[1].split("<!-- contract:end -->")[0]
    assert embedded == contract_markdown()


def test_backfills_run_whole_ranges_unless_told_how_many_months_per_run(local_env, monkeypatch):
    key = dg.AssetKey(["fhv", "postgres_trips"])
    assert build_defs(load_target()).resolve_assets_def(key).backfill_policy == dg.BackfillPolicy.single_run()

    monkeypatch.setenv("TAXI_BACKFILL_MONTHS_PER_RUN", "1")  # one pod per month on Kubernetes
    assert build_defs(load_target()).resolve_assets_def(key).backfill_policy == dg.BackfillPolicy.multi_run(1)

    monkeypatch.setenv("TAXI_BACKFILL_MONTHS_PER_RUN", "all")
    with pytest.raises(ConfigurationError, match="TAXI_BACKFILL_MONTHS_PER_RUN='all' is not a whole number"):
        load_target()


def test_a_code_version_changes_with_the_data_contract():
    from dataclasses import replace

    from taxi_assets.assets.metadata import code_version

    before_cbd = replace(YELLOW, columns=YELLOW.columns[:-1])  # the contract before cbd_congestion_fee
    assert code_version(before_cbd, 1) != code_version(YELLOW, 1) != code_version(YELLOW, 2)
    assert code_version(YELLOW, 1) == code_version(replace(YELLOW), 1)  # stable across processes: a hash


def test_every_setting_is_in_the_readme():
    from pathlib import Path

    from taxi_assets import settings

    names = {value for name, value in vars(settings).items() if name.isupper() and isinstance(value, str)}
    variables = {n for n in names if n.startswith(("TAXI_", "STORAGE_"))}
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert len(variables) == 28 and sorted(v for v in variables if f"`{v}`" not in readme) == []
