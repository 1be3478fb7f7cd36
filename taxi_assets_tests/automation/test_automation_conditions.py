"""The automation conditions of the trip assets (automation/conditions.py), evaluated with
``dg.evaluate_automation_conditions`` on the location's real definitions and an in-memory instance: a raw month
reported without a run (as ``lake_raw_files_sensor`` does) makes clean, warehouse and Postgres of that month, and
only that month, follow; a job run that loaded all four assets of a month is not followed again; nothing is
requested on a fresh instance."""

import dagster as dg
import pytest
from dagster._core.events import (
    AssetMaterializationPlannedData,
    DagsterEvent,
    DagsterEventType,
    StepMaterializationData,
)

from taxi_assets.automation.conditions import (
    AUTOMATION_SENSOR_NAME,
    FOLLOWS_UPSTREAM,
    FOLLOWS_UPSTREAM_SUMMARY,
    TRIPS_JOB_TAG,
)
from taxi_assets.definitions import build_defs
from taxi_assets.targets import load_target
from taxi_assets_tests.automation.conftest import TRIP_ASSETS, add_run, mark_loaded

DOWNSTREAM = TRIP_ASSETS[1:]


@pytest.fixture(scope="module")
def defs(tmp_path_factory) -> dg.Definitions:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("TAXI_DATA_DIR", str(tmp_path_factory.mktemp("data")))
        env.setenv("TAXI_SOURCE", "mirror")
        return build_defs(load_target("local"))


class Automation:
    """Successive evaluations of every condition of ``defs``, as the ticks of taxi_automation_sensor."""

    def __init__(self, defs: dg.Definitions, instance: dg.DagsterInstance):
        self.defs, self.instance, self.cursor = defs, instance, None

    def tick(self) -> dict[str, list[str]]:
        """``{"green/clean_trips": ["2019-03"], ...}``: what this evaluation requests."""
        result = dg.evaluate_automation_conditions(
            defs=self.defs, instance=self.instance, asset_selection=dg.AssetSelection.all(), cursor=self.cursor
        )
        self.cursor = result.cursor
        return {
            r.key.to_user_string(): sorted(r.true_subset.expensively_compute_partition_keys())
            for r in result.results
            if r.true_subset.size
        }


@pytest.fixture
def automation(defs, instance) -> Automation:
    return Automation(defs, instance)


def requested(service: str, months: list[str], assets=DOWNSTREAM) -> dict[str, list[str]]:
    return {f"{service}/{name}": months for name in assets}


class JobRun:
    """A ``<service>_trips_job`` run of one month as the daemon launches it for a source sensor or a schedule:
    the whole job (no asset selection), its four assets planned at the start, then materialized one by one."""

    def __init__(self, instance: dg.DagsterInstance, service: str, month: str):
        self.instance, self.service, self.month = instance, service, month
        self.job_name = f"{service}_trips_job"
        tags = {"dagster/partition": month, TRIPS_JOB_TAG: service}  # the job's own tag, on each of its runs
        self.run = add_run(instance, self.job_name, dg.DagsterRunStatus.STARTED, tags)
        for name in TRIP_ASSETS:
            planned = AssetMaterializationPlannedData(dg.AssetKey([service, name]), partition=month)
            self._report(
                DagsterEvent.build_asset_materialization_planned_event(self.job_name, f"{service}__{name}", planned)
            )

    def _report(self, event: DagsterEvent) -> None:
        self.instance.report_dagster_event(event, run_id=self.run.run_id)

    def materialize(self, *names: str) -> None:
        for name in names:
            materialization = dg.AssetMaterialization(asset_key=dg.AssetKey([self.service, name]), partition=self.month)
            self._report(
                DagsterEvent(
                    event_type_value=DagsterEventType.ASSET_MATERIALIZATION.value,
                    job_name=self.job_name,
                    step_key=f"{self.service}__{name}",
                    event_specific_data=StepMaterializationData(materialization),
                )
            )

    def end(self, status: dg.DagsterRunStatus = dg.DagsterRunStatus.SUCCESS) -> None:
        event_type = (
            DagsterEventType.RUN_SUCCESS if status == dg.DagsterRunStatus.SUCCESS else DagsterEventType.RUN_FAILURE
        )
        self._report(DagsterEvent(event_type_value=event_type.value, job_name=self.job_name))
        assert self.instance.get_run_by_id(self.run.run_id).status == status


def report_raw(instance: dg.DagsterInstance, service: str, month: str) -> None:
    """A raw month reported without a run, as lake_raw_files_sensor reports a file another system uploaded."""
    mark_loaded(instance, service, month, assets=("raw_trips",))


def test_the_downstream_assets_follow_every_month_and_nothing_else(defs):
    graph = defs.resolve_asset_graph()
    for service in ("yellow", "green", "fhv", "fhvhv"):
        assert graph.get(dg.AssetKey([service, "raw_trips"])).automation_condition is None
        for name in DOWNSTREAM:
            assert graph.get(dg.AssetKey([service, name])).automation_condition == FOLLOWS_UPSTREAM
        for name in ("warehouse_trips_by_borough_day", "postgres_trips_by_borough_day"):
            assert graph.get(dg.AssetKey([service, name])).automation_condition == FOLLOWS_UPSTREAM_SUMMARY
    assert "in_latest_time_window" not in str(FOLLOWS_UPSTREAM)
    sensor = defs.resolve_sensor_def(AUTOMATION_SENSOR_NAME)
    assert isinstance(sensor, dg.AutomationConditionSensorDefinition)
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED


def test_nothing_is_requested_on_a_fresh_instance(automation):
    assert automation.tick() == {}
    assert automation.tick() == {}


def test_nothing_is_requested_on_a_first_evaluation_against_loaded_and_half_loaded_months(automation, instance):
    # Months loaded before the conditions existed, and months whose raw file is there but nothing downstream.
    for month in ("2019-01", "2019-02"):
        mark_loaded(instance, "yellow", month)
    for month in ("2019-03", "2020-06", "2021-07"):
        report_raw(instance, "green", month)
    assert automation.tick() == {}
    assert automation.tick() == {}


def test_a_raw_month_reported_without_a_run_requests_its_downstream_assets_once(automation, instance):
    assert automation.tick() == {}
    report_raw(instance, "green", "2019-03")

    # Warehouse and Postgres follow clean in the same tick (it will be requested): one run for the month.
    assert automation.tick() == requested("green", ["2019-03"])
    assert automation.tick() == {}  # requested once: not again while the run is queued or running

    # The automation run loads clean, then warehouse and Postgres: no one follows again.
    mark_loaded(instance, "green", "2019-03", assets=DOWNSTREAM)
    assert automation.tick() == {}


def test_an_old_month_is_followed_not_only_the_latest(automation, instance, defs):
    partitions = defs.get_assets_def(dg.AssetKey(["yellow", "clean_trips"])).partitions_def
    keys = partitions.get_partition_keys()
    oldest, latest = keys[0], keys[-1]
    automation.tick()
    for month in (oldest, "2020-04"):
        report_raw(instance, "yellow", month)

    assert automation.tick() == requested("yellow", [oldest, "2020-04"])
    assert latest not in (oldest, "2020-04")


def test_clean_loaded_alone_makes_warehouse_and_postgres_follow(automation, instance):
    automation.tick()
    mark_loaded(instance, "fhv", "2020-02", assets=("raw_trips",))
    mark_loaded(instance, "fhv", "2020-02", assets=("clean_trips",))  # e.g. clean re-run from the UI

    assert automation.tick() == requested("fhv", ["2020-02"], ("warehouse_trips", "postgres_trips"))
    assert automation.tick() == {}


def test_a_corrected_raw_file_reloads_its_month(automation, instance):
    mark_loaded(instance, "yellow", "2019-05")
    automation.tick()
    assert automation.tick() == {}

    report_raw(instance, "yellow", "2019-05")  # replaced by another system

    assert automation.tick() == requested("yellow", ["2019-05"])


def test_a_job_run_of_the_four_assets_is_not_followed_again(automation, instance):
    automation.tick()
    run = JobRun(instance, "yellow", "2019-02")
    assert automation.tick() == {}  # planned: in progress

    run.materialize("raw_trips")
    assert automation.tick() == {}  # raw updated, but clean is in progress in this very run
    run.materialize("clean_trips")
    assert automation.tick() == {}
    run.materialize("warehouse_trips", "postgres_trips")
    run.end()

    assert automation.tick() == {}
    assert automation.tick() == {}


def test_a_job_run_seen_only_once_it_ended_is_not_followed_either(automation, instance):
    automation.tick()
    run = JobRun(instance, "green", "2019-01")
    run.materialize(*TRIP_ASSETS)
    run.end()

    assert automation.tick() == {}
    assert automation.tick() == {}


def test_a_job_run_whose_last_step_shows_only_after_its_end_is_not_followed(automation, instance):
    # A tick may read the run as ended but not yet its last materialization (the daemon reads the event log and
    # the runs at different moments): clean was updated by the job run, which loads postgres_trips itself.
    automation.tick()
    run = JobRun(instance, "yellow", "2019-01")
    run.materialize("raw_trips", "clean_trips", "warehouse_trips")
    run.end()
    assert automation.tick() == {}
    run.materialize("postgres_trips")
    assert automation.tick() == {}


def test_a_job_run_that_failed_after_raw_is_left_to_its_alert(automation, instance):
    # raw was updated by a trips job run, which loads clean itself: it failed, and its failure alert says so; the
    # conditions do not launch a second attempt.
    automation.tick()
    run = JobRun(instance, "green", "2019-02")
    run.materialize("raw_trips")
    assert automation.tick() == {}  # in progress
    run.end(dg.DagsterRunStatus.FAILURE)

    assert automation.tick() == {}
    assert automation.tick() == {}
    # A later update of the raw month (a corrected file reported by the lake sensor) is followed again.
    report_raw(instance, "green", "2019-02")
    assert automation.tick() == requested("green", ["2019-02"])


def test_with_the_zones_in_the_warehouse_the_summaries_follow_a_job_run_once(automation, instance):
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=dg.AssetKey("warehouse_taxi_zones")))
    automation.tick()
    run = JobRun(instance, "yellow", "2019-02")
    run.materialize(*TRIP_ASSETS)
    run.end()

    # The job loads the four trip assets; both summaries of its month follow, in one request.
    summaries = ("warehouse_trips_by_borough_day", "postgres_trips_by_borough_day")
    assert automation.tick() == requested("yellow", ["2019-02"], summaries)
    assert automation.tick() == {}
