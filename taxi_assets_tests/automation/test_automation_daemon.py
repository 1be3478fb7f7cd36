"""For real: dagster-daemon and dagster-webserver as subprocesses on a temporary DAGSTER_HOME, a local HTTP source
with generated months in the mirror's layout (``TAXI_SOURCE=mirror``, CSV.gz), a local webhook receiver, DuckDB
and a real Postgres.

One deployment serves the module (starting it costs ~20 s); each test uses its own service so they do not meet:
- yellow: ``yellow_source_sensor`` finds three published months and they reach the lake, DuckDB and Postgres;
- fhv: a backfill of three months launched through the webserver's GraphQL API runs as one run, each month
  materialized once;
- green: files dropped into the lake's raw zone are reported by ``lake_raw_files_sensor`` and the automation
  conditions (``taxi_automation_sensor``) load their month's downstream assets, once each; one of them is broken,
  its run fails and ``run_failure_alert_sensor`` posts the alert to the webhook receiver.
"""

import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import psycopg
import pytest
from dagster._core.instance.ref import InstanceRef
from dagster_graphql import DagsterGraphQLClient

from taxi_assets.automation.freshness import freshness_check_key
from taxi_assets.fake_source import source_header, write_fake_month, write_fake_source
from taxi_assets.services import MIRROR, SERVICES
from taxi_assets_tests.automation.conftest import TRIP_ASSETS, WebhookReceiver, webhook_receiver
from taxi_assets_tests.conftest import serve_folder
from taxi_assets_tests.deploy.support import local_deployment_env
from taxi_assets_tests.processes import free_port, stop_process_group
from taxi_assets_tests.stores import counts_in_every_store

MONTHS = ("2019-01", "2019-02", "2019-03")
ROWS = 400
STARTUP_TIMEOUT = 120
WAIT = 180
# The dagster-graphql client passes variables the way gql 4 deprecates.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
LOCATION = {"repositoryLocationName": "taxi_assets", "repositoryName": "__repository__"}

# The instance of the test deployment: SQLite under DAGSTER_HOME (the default), queued runs launched by the
# daemon, and the limits of the shared dagster.yaml that matter here: one run per month at a time, a pool slot
# per database step, run retries.
INSTANCE_YAML = """
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    dequeue_interval_seconds: 1
run_launcher:
  module: dagster.core.launcher
  class: DefaultRunLauncher
concurrency:
  runs:
    max_concurrent_runs: 2
    tag_concurrency_limits:
      - key: dagster/partition
        value:
          applyLimitPerUniqueValue: true
        limit: 1
  pools:
    granularity: op
    default_limit: 1
run_retries:
  enabled: true
  max_retries: 1
  retry_on_asset_or_op_failure: false
telemetry:
  enabled: false
"""


def wait_until(predicate: Callable[[], object], what: str, timeout: float = WAIT, every: float = 1.0, logs=()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    tails = "\n".join(f"--- {p.name} ---\n{p.read_text(errors='replace')[-4000:]}" for p in logs if p.exists())
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{tails}")


@dataclass
class Deployment:
    home: Path
    data_dir: Path
    postgres_url: str
    ui_url: str
    client: DagsterGraphQLClient
    webhook: WebhookReceiver
    logs: tuple
    instance: dg.DagsterInstance

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        return self.client._execute(query, variables or {})

    def start_sensor(self, name: str) -> None:
        result = self.graphql(
            """mutation($s: SensorSelector!) { startSensor(sensorSelector: $s) {
                 __typename ... on Sensor { sensorState { status } } ... on PythonError { message } } }""",
            {"s": {**LOCATION, "sensorName": name}},
        )["startSensor"]
        assert result["__typename"] == "Sensor" and result["sensorState"]["status"] == "RUNNING", result

    def ticks(self, name: str) -> list[dict]:
        result = self.graphql(
            """query($s: SensorSelector!) { sensorOrError(sensorSelector: $s) { ... on Sensor {
                 sensorState { ticks(limit: 20) { status skipReason runKeys error { message } } } } } }""",
            {"s": {**LOCATION, "sensorName": name}},
        )
        return result["sensorOrError"]["sensorState"]["ticks"]

    def wait(self, predicate, what: str, timeout: float = WAIT):
        return wait_until(predicate, what, timeout, logs=self.logs)

    def loaded(self, service: str, assets=TRIP_ASSETS) -> set[str]:
        months = [self.instance.get_materialized_partitions(dg.AssetKey([service, a])) for a in assets]
        return set.intersection(*months)

    def runs(self, **filters) -> list[dg.DagsterRun]:
        return list(self.instance.get_runs(filters=dg.RunsFilter(**filters)))

    def idle(self) -> bool:
        return not self.runs(
            statuses=[
                dg.DagsterRunStatus.QUEUED,
                dg.DagsterRunStatus.STARTING,
                dg.DagsterRunStatus.STARTED,
                dg.DagsterRunStatus.NOT_STARTED,
            ]
        )


def _start(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        args, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True, cwd=log.parent
    )


@pytest.fixture(scope="module")
def database_url(postgres_url) -> str:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute('DROP DATABASE IF EXISTS "t_automation_daemon"')
        conn.execute('CREATE DATABASE "t_automation_daemon"')
    return postgres_url.replace("@/postgres?", "@/t_automation_daemon?")


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, database_url) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("automation")
    home, data_dir, source = root / "dagster_home", root / "data", root / "source"
    home.mkdir()
    (home / "dagster.yaml").write_text(INSTANCE_YAML)
    write_fake_source(source, ["yellow", "fhv"], MONTHS, rows=ROWS, seed=11, layout="mirror")
    bin_dir = Path(sys.executable).parent
    port = free_port()
    ui_url = f"http://127.0.0.1:{port}"

    with serve_folder(source) as source_url, webhook_receiver() as webhook:
        env = local_deployment_env(
            data_dir,
            database_url,
            home,
            TAXI_TARGET="local",
            TAXI_SOURCE="mirror",  # the CSV.gz files written above; TAXI_SOURCE_URL alone would be an error
            TAXI_SOURCE_URL=source_url,
            TAXI_SENSOR_INTERVAL_SECONDS="5",
            TAXI_ALERT_WEBHOOK_URL=webhook.url,
            TAXI_UI_BASE_URL=ui_url,
            TAXI_FRESHNESS_LAST_MONTH=MONTHS[-1],
            PYTHONWARNINGS="ignore",
        )
        # Create the SQLite storage once, here, before three processes race to create (and migrate) it.
        instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))
        instance.get_runs(limit=1)
        instance.all_instigator_state()
        instance.get_materialized_partitions(dg.AssetKey(["yellow", "raw_trips"]))
        logs = (root / "webserver.log", root / "daemon.log")
        processes = [
            _start(
                [str(bin_dir / "dagster-webserver"), "-m", "taxi_assets", "-h", "127.0.0.1", "-p", str(port)],
                env,
                logs[0],
            ),
            _start([str(bin_dir / "dagster-daemon"), "run", "-m", "taxi_assets"], env, logs[1]),
        ]
        try:
            client = DagsterGraphQLClient("127.0.0.1", port_number=port, timeout=30)
            deployment = Deployment(home, data_dir, database_url, ui_url, client, webhook, logs, instance)

            def webserver_up() -> bool:
                try:
                    return bool(deployment.graphql("{ version }")["version"])
                except Exception:
                    return False

            wait_until(webserver_up, "the webserver", STARTUP_TIMEOUT, logs=logs)
            # The failure sensor's first tick only sets its cursor: let it happen before anything can fail.
            deployment.start_sensor("run_failure_alert_sensor")
            deployment.wait(
                lambda: deployment.ticks("run_failure_alert_sensor"), "the failure sensor's first tick", STARTUP_TIMEOUT
            )
            # The automation conditions are evaluated through every test: they must follow the lake's files only,
            # never the months that the source sensor's job runs and the backfill loaded themselves.
            deployment.start_sensor("taxi_automation_sensor")
            yield deployment
        finally:
            for process in processes:
                stop_process_group(process)
            instance.dispose()


def test_the_source_sensor_loads_the_published_months_into_every_store(deployment, source_manifest_for):
    deployment.start_sensor("yellow_source_sensor")

    deployment.wait(lambda: deployment.loaded("yellow") >= set(MONTHS), "yellow months in all four assets")
    deployment.wait(deployment.idle, "the yellow runs to end")

    runs = deployment.runs(job_name="yellow_trips_job")
    assert sorted(r.tags["dagster/partition"] for r in runs) == list(MONTHS)  # one run per month, no more
    assert all(
        r.status == dg.DagsterRunStatus.SUCCESS and r.tags["dagster/sensor_name"] == "yellow_source_sensor"
        for r in runs
    )
    for month in MONTHS:
        kept = source_manifest_for("yellow", month)["kept"]
        assert counts_in_every_store(deployment.data_dir, deployment.postgres_url, "yellow", month) == dict.fromkeys(
            ["lake", "duckdb", "postgres"], kept
        )
    # Later ticks ask only about months still unpublished, and request nothing more.
    deployment.wait(
        lambda: any("none published" in (t["skipReason"] or "") for t in deployment.ticks("yellow_source_sensor")),
        "a tick that found nothing new",
    )
    # The automation conditions ticked through these runs and did not load the months again.
    wait_for_automation_ticks(deployment, 2)
    assert not deployment.runs(tags={"dagster/sensor_name": "taxi_automation_sensor"})


def test_a_backfill_of_three_months_through_graphql_runs_once_per_month(deployment, source_manifest_for):
    keys = [{"path": ["fhv", name]} for name in TRIP_ASSETS]
    launched = deployment.graphql(
        """mutation($p: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $p) {
             __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }""",
        {"p": {"assetSelection": keys, "partitionNames": list(MONTHS), "title": "fhv 2019 Q1"}},
    )["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id = launched["backfillId"]

    def status() -> str | None:
        result = deployment.graphql(
            "query($id: String!) { partitionBackfillOrError(backfillId: $id) { ... on PartitionBackfill { status } } }",
            {"id": backfill_id},
        )
        value = result["partitionBackfillOrError"]["status"]
        return value if value in ("COMPLETED_SUCCESS", "COMPLETED", "COMPLETED_FAILED", "FAILED", "CANCELED") else None

    assert deployment.wait(status, "the backfill to complete") in ("COMPLETED_SUCCESS", "COMPLETED")

    (run,) = deployment.runs(tags={"dagster/backfill": backfill_id})  # BackfillPolicy.single_run(): one run
    assert run.status == dg.DagsterRunStatus.SUCCESS
    assert (run.tags["dagster/asset_partition_range_start"], run.tags["dagster/asset_partition_range_end"]) == (
        MONTHS[0],
        MONTHS[-1],
    )
    for name in TRIP_ASSETS:
        for month in MONTHS:
            records = deployment.instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey(["fhv", name]), asset_partitions=[month]), limit=5
            ).records
            assert len(records) == 1, (name, month)  # materialized once
    wait_for_automation_ticks(deployment, 2)
    assert not deployment.runs(tags={"dagster/sensor_name": "taxi_automation_sensor"})  # not followed again
    for month in MONTHS:
        kept = source_manifest_for("fhv", month)["kept"]
        assert counts_in_every_store(deployment.data_dir, deployment.postgres_url, "fhv", month) == dict.fromkeys(
            ["lake", "duckdb", "postgres"], kept
        )


def wait_for_automation_ticks(deployment: Deployment, count: int) -> None:
    """Until ``taxi_automation_sensor`` has ticked ``count`` more times (evaluated what happened so far)."""

    def ids() -> set:
        return {
            t["tickId"]
            for t in deployment.graphql(
                """query($s: SensorSelector!) { sensorOrError(sensorSelector: $s) { ... on Sensor {
                 sensorState { ticks(limit: 50) { tickId } } } } }""",
                {"s": {**LOCATION, "sensorName": "taxi_automation_sensor"}},
            )["sensorOrError"]["sensorState"]["ticks"]
        }

    before = ids()
    deployment.wait(lambda: len(ids() - before) >= count, f"{count} more ticks of taxi_automation_sensor")


def materializations(deployment: Deployment, service: str, name: str, month: str) -> int:
    return len(
        deployment.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey([service, name]), asset_partitions=[month]), limit=10
        ).records
    )


def test_raw_files_dropped_into_the_lake_load_through_the_conditions_and_a_broken_one_alerts(deployment, tmp_path):
    green = SERVICES["green"]
    good = write_fake_month(tmp_path, "green", "2019-01", rows=ROWS, seed=3, layout="mirror", update_manifest=False)
    broken = tmp_path / "broken.csv.gz"  # a yellow header in a green file: cleaning fails on the data contract
    broken.write_bytes(gzip.compress((",".join(source_header("yellow")) + "\n").encode()))
    deployment.start_sensor("lake_raw_files_sensor")

    for month, file in (("2019-01", tmp_path / good["path"]), ("2019-02", broken)):
        target = deployment.data_dir / "lake" / green.raw_key(month, MIRROR)  # as another system uploads it
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(file, target.with_name(f".{target.name}.uploading"))
        os.replace(target.with_name(f".{target.name}.uploading"), target)

    deployment.wait(
        lambda: "2019-01" in deployment.loaded("green", TRIP_ASSETS[1:]), "green 2019-01 loaded from the lake"
    )
    path, body = deployment.webhook.wait_for_post(timeout=WAIT)
    deployment.wait(deployment.idle, "the green runs to end")

    automation = deployment.runs(tags={"dagster/sensor_name": "taxi_automation_sensor"})
    (failed,) = [r for r in automation if r.status == dg.DagsterRunStatus.FAILURE]
    lines = body["text"].splitlines()
    assert path.endswith("/secret-token")
    assert lines[:2] == [
        "Dagster run failed: assets green/clean_trips, green/postgres_trips, green/warehouse_trips",
        "Partition: 2019-02",
    ]
    assert lines[2].startswith("Failed step: green__clean_trips (ContractError: ")
    assert "'tpep_pickup_datetime' is not in the green data contract" in lines[2]
    assert lines[-1] == f"Run: {deployment.ui_url}/runs/{failed.run_id}"
    assert "secret-token" not in body["text"]

    # One run per month, of the three downstream assets (no download), launched by the conditions.
    assert sorted((r.tags["dagster/partition"], r.status) for r in automation) == [
        ("2019-01", dg.DagsterRunStatus.SUCCESS),
        ("2019-02", dg.DagsterRunStatus.FAILURE),
    ]
    for run in automation:
        assert {k.to_user_string() for k in run.asset_selection} == {f"green/{a}" for a in TRIP_ASSETS[1:]}
        assert run.asset_check_selection and not any(k.name == "months_on_time" for k in run.asset_check_selection)
    assert deployment.loaded("green", ("raw_trips",)) == {"2019-01", "2019-02"}  # reported by the sensor
    assert not deployment.runs(tags={"dagster/sensor_name": "lake_raw_files_sensor"})  # it requests no run
    # A few more ticks of both sensors: each asset of the month was materialized once, and nothing follows the
    # yellow and fhv months our own job runs and backfill loaded.
    wait_for_automation_ticks(deployment, 3)
    assert deployment.idle() and len(deployment.runs(tags={"dagster/sensor_name": "taxi_automation_sensor"})) == 2
    assert {name: materializations(deployment, "green", name, "2019-01") for name in TRIP_ASSETS} == dict.fromkeys(
        TRIP_ASSETS, 1
    )
    assert deployment.webhook.posts.empty()


def test_the_freshness_sensor_reports_each_warehouse_table(deployment):
    deployment.start_sensor("warehouse_freshness_sensor")

    def evaluations():
        records = {
            name: deployment.instance.get_latest_asset_check_evaluation_record(freshness_check_key(service))
            for name, service in SERVICES.items()
        }
        return records if all(records.values()) else None

    records = deployment.wait(evaluations, "freshness evaluations")
    passed = {name: r.event.dagster_event.event_specific_data.passed for name, r in records.items()}
    # TAXI_FRESHNESS_LAST_MONTH=2019-03: a service of the mirror passes when it holds 2019-01..03 (after the tests
    # above: yellow and fhv do, green has 2019-01 only). fhvhv, which the mirror lacks, is reported too.
    assert set(passed) == set(SERVICES)
    expected = {name: set(MONTHS) <= deployment.loaded(name, ("warehouse_trips",)) for name in MIRROR.services}
    assert {name: passed[name] for name in MIRROR.services} == expected
    assert not deployment.runs(tags={"dagster/sensor_name": "warehouse_freshness_sensor"})  # evaluated without runs


@pytest.fixture(scope="module")
def source_manifest_for(deployment):
    manifest = json.loads(next(deployment.home.parent.glob("source/manifest.json")).read_text())
    return lambda service, month: manifest["files"][SERVICES[service].source_path(month, MIRROR)]
