"""deploy/vm/dagster.yaml as the instance of a deployment, on a real Postgres (the embedded one).

A partition is materialized through it and read back from the Postgres storage tables themselves; and two
runs of the same month, queued together and launched by a real `dagster-daemon`, do not run at the same time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import psycopg
import pytest
from dagster._core.events import DagsterEventType
from dagster._core.storage.dagster_run import DagsterRunStatus, RunsFilter

from taxi_assets.definitions import build_defs
from taxi_assets.targets import load_target
from taxi_assets_tests.conftest import run_job
from taxi_assets_tests.deploy.support import ROOT, artifact_dir, running, sqlalchemy_url, tail, wait_for
from taxi_assets_tests.stores import counts_in_every_store

MONTH = "2021-01"
SERVICE = "yellow"
ASSETS = [f"{SERVICE}/{name}" for name in ("raw_trips", "clean_trips", "warehouse_trips", "postgres_trips")]


def test_instance_is_the_deployment_one(deploy_home):
    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert instance.event_log_storage.supports_global_concurrency_limits
        assert instance.run_retries_enabled and instance.run_monitoring_enabled
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1


def test_a_partition_run_on_the_deployment_instance_is_stored_in_postgres(
    deploy_home, storage_db, local_env, source_manifest
):
    kept = source_manifest["files"][f"{SERVICE}/{SERVICE}_tripdata_{MONTH}.csv.gz"]["kept"]
    with dg.DagsterInstance.get() as instance:
        result = run_job(build_defs(load_target()), f"{SERVICE}_trips_job", MONTH, instance=instance)
    assert result.success

    # Read back from Dagster's tables in Postgres, not through Dagster.
    with psycopg.connect(storage_db) as conn:
        status, job_name = conn.execute(
            "SELECT status, pipeline_name FROM runs WHERE run_id = %s", [result.run_id]
        ).fetchone()
        tags = dict(conn.execute("SELECT key, value FROM run_tags WHERE run_id = %s", [result.run_id]).fetchall())
        materialized = conn.execute(
            "SELECT asset_key, partition FROM event_logs WHERE run_id = %s AND dagster_event_type = %s",
            [result.run_id, "ASSET_MATERIALIZATION"],
        ).fetchall()
        event_types = {
            row[0]
            for row in conn.execute(
                "SELECT DISTINCT dagster_event_type FROM event_logs WHERE run_id = %s", [result.run_id]
            )
        }
        last_runs = dict(conn.execute("SELECT asset_key, last_run_id FROM asset_keys").fetchall())
        checks = conn.execute(
            "SELECT check_name, execution_status FROM asset_check_executions WHERE run_id = %s", [result.run_id]
        ).fetchall()
        # The pools' slots, created at their first claim with the instance file's default limit.
        pools = dict(conn.execute('SELECT concurrency_key, "limit" FROM concurrency_limits').fetchall())
    assert (status, job_name) == ("SUCCESS", f"{SERVICE}_trips_job")
    assert tags["dagster/partition"] == MONTH and tags["taxi/service"] == SERVICE
    assert sorted((json.loads(key), partition) for key, partition in materialized) == sorted(
        (asset.split("/"), MONTH) for asset in ASSETS
    )
    expected_events = {
        DagsterEventType.RUN_START,
        DagsterEventType.STEP_SUCCESS,
        DagsterEventType.RUN_SUCCESS,
        DagsterEventType.ASSET_CHECK_EVALUATION,
    }
    assert {e.value for e in expected_events} <= event_types  # stored under their old names (PIPELINE_START...)
    last_run_of = {asset: last_runs.get(json.dumps(asset.split("/"))) for asset in ASSETS}
    assert last_run_of == dict.fromkeys(ASSETS, result.run_id)
    assert sorted(name for name, status in checks if status == "SUCCEEDED") == [
        "dropped_rows_below_1_percent",
        "rows_match_clean_trips",
        "rows_match_clean_trips",
    ]
    assert {status for _, status in checks} <= {"PLANNED", "SUCCEEDED"}
    assert pools == {"warehouse": 1, "postgres": 1}

    # A new instance from the same file sees it: the state is in Postgres, not in this process.
    with dg.DagsterInstance.get() as instance:
        for asset in ASSETS:
            assert instance.get_materialized_partitions(dg.AssetKey(asset.split("/"))) == {MONTH}

    assert counts_in_every_store(local_env, os.environ["TAXI_POSTGRES_URL"], SERVICE, MONTH) == dict.fromkeys(
        ["lake", "duckdb", "postgres"], kept
    )


def test_two_runs_of_the_same_month_queued_together_do_not_run_together(
    deploy_home, local_env, source_manifest, request
):
    """Both runs are queued before the daemon starts, so it sees them in one dequeue pass; the tag limit on
    dagster/partition must hold the second back until the first has finished."""
    artifacts = artifact_dir(request)
    bin_dir = Path(sys.executable).parent
    launch = [
        str(bin_dir / "dagster"),
        "job",
        "launch",
        "-w",
        str(ROOT / "workspace.yaml"),
        "-j",
        f"{SERVICE}_trips_job",
        "--tags",
        json.dumps({"dagster/partition": MONTH}),
    ]
    launches = [subprocess.Popen(launch, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in range(2)]
    for process in launches:
        output, _ = process.communicate(timeout=120)
        assert process.returncode == 0, output.decode()[-3000:]

    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs(RunsFilter(tags={"dagster/partition": MONTH}))
        assert [run.status for run in runs] == [DagsterRunStatus.QUEUED] * 2
        run_ids = [run.run_id for run in runs]

        log = artifacts / "dagster-daemon.log"
        with running([str(bin_dir / "dagster-daemon"), "run", "-w", str(ROOT / "workspace.yaml")], log) as daemon:

            def finished():
                records = instance.get_run_records(RunsFilter(run_ids=run_ids))
                return records if all(r.dagster_run.is_finished for r in records) else None

            records = wait_for(finished, 180, "both runs finished", interval=1, process=daemon, log=log)

    assert [r.dagster_run.status for r in records] == [DagsterRunStatus.SUCCESS] * 2, tail(log)
    first, second = sorted(records, key=lambda r: r.start_time)
    assert first.end_time <= second.start_time, (
        f"the runs overlapped: {first.start_time}-{first.end_time} and {second.start_time}-{second.end_time}"
    )
    # The daemon's own account: its first pass saw both runs and launched one.
    assert "Launched 2 runs" not in log.read_text()
    kept = source_manifest["files"][f"{SERVICE}/{SERVICE}_tripdata_{MONTH}.csv.gz"]["kept"]
    assert counts_in_every_store(local_env, os.environ["TAXI_POSTGRES_URL"], SERVICE, MONTH) == dict.fromkeys(
        ["lake", "duckdb", "postgres"], kept
    )


@pytest.mark.parametrize("variant", ["deploy/docker/dagster.yaml"])
def test_compose_instance_loads_on_postgres_with_the_docker_run_launcher(variant, tmp_path, storage_db, monkeypatch):
    """The compose variant builds a working instance too (its DockerRunLauncher needs no engine until a run)."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text((ROOT / variant).read_text())
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("DAGSTER_PG_URL", sqlalchemy_url(storage_db))
    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_launcher).__name__ == "DockerRunLauncher"
        assert type(instance.compute_log_manager).__name__ == "LocalComputeLogManager"
        assert instance.get_runs() == []
