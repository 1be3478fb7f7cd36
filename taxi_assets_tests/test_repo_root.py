"""The repository root just works: in a fresh copy of the repository, with no DAGSTER_HOME and only the source
settings, `dagster asset materialize` succeeds, `dagster dev` serves the assets over GraphQL and runs what the
UI launches, and `dg check defs` / `dg list defs` recognise the project.

The instance is the top-level dagster.yaml (SQLite under .dagster_home/ of the folder the command runs in):
every command here must leave its runs there, in the copy, and nowhere else. The copy holds the working tree's
files (uncommitted changes included, no .venv or data); the package is the one installed in this environment,
imported from the copy because the commands run in it.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from taxi_assets_tests.deploy.support import copy_of_repo, graphql, local_deployment_env, server_up, tail, wait_for
from taxi_assets_tests.processes import default_interrupts, free_port, stop_process_group

MONTH = "2021-01"
BIN = Path(sys.executable).parent
# What the README's demo and CI run, for one month of one service.
MATERIALIZE = ["asset", "materialize", "-m", "taxi_assets", "--select", "yellow/raw_trips,yellow/clean_trips"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A fresh copy of the repository (as `git clone` of the working tree would give)."""
    return copy_of_repo(tmp_path_factory.mktemp("clone") / "taxi-assets")


@pytest.fixture
def root_env(tmp_path, tlc_source_dir, postgres_db_url) -> dict[str, str]:
    """The environment of a new user: no DAGSTER_HOME, no DAGSTER_PG_URL, only the source settings (generated TLC
    files, offline) and a data folder; the trips' Postgres is a fresh database of the session's server, so no
    second embedded Postgres starts."""
    return local_deployment_env(
        tmp_path / "data",
        postgres_db_url,
        TAXI_TLC_URL=str(tlc_source_dir),
        TAXI_FIRST_MONTH=MONTH,
        TAXI_FRESHNESS_LAST_MONTH=MONTH,
    )


def stored_runs(repo: Path) -> dict[str, str]:
    """run id -> status, read from the SQLite run storage the top-level dagster.yaml names."""
    with sqlite3.connect(repo / ".dagster_home" / "history" / "runs.db") as conn:
        return dict(conn.execute("SELECT run_id, status FROM runs").fetchall())


def temp_homes(repo: Path) -> list[str]:
    return [p.name for p in repo.glob(".tmp_dagster_home_*")]


def test_materialize_then_dagster_dev_in_the_repository_root(repo, root_env, tmp_path):
    # 1. `dagster asset materialize`, as the README and CI run it.
    started = time.monotonic()
    result = subprocess.run(
        [str(BIN / "dagster"), *MATERIALIZE, "--partition", MONTH],
        cwd=repo,
        env=root_env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "RUN_SUCCESS" in output and "DAGSTER_PG_URL" not in output
    materialize_seconds = time.monotonic() - started

    # Its run is in the copy's .dagster_home/: run storage, the run's event log, its step logs.
    runs = stored_runs(repo)
    assert list(runs.values()) == ["SUCCESS"], runs
    (cli_run,) = runs
    home = repo / ".dagster_home"
    assert (home / "history" / "runs" / f"{cli_run}.db").is_file()
    assert (home / "logs" / cli_run).is_dir()
    assert temp_homes(repo) == []  # the throw-away home of the command is gone (and held nothing)
    data = Path(root_env["TAXI_DATA_DIR"])
    assert any((data / "lake").rglob(f"*{MONTH}*")), "the month is not in the lake"

    # 2. `dagster dev` in the same folder: the UI of the same instance.
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "dagster-dev.log"
    with open(log, "wb") as out:
        dev = subprocess.Popen(
            [str(BIN / "dagster"), "dev", "--host", "127.0.0.1", "--port", str(port)],
            cwd=repo,
            env=root_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=default_interrupts,
        )
    try:
        wait_for(lambda: server_up(base), 120, "dagster dev serves the UI", process=dev, log=log)
        keys = {
            "/".join(node["assetKey"]["path"])
            for node in graphql(base, "{ assetNodes { assetKey { path } } }")["assetNodes"]
        }
        for service in ("yellow", "green", "fhv", "fhvhv"):
            assert {f"{service}/{a}" for a in ("raw_trips", "clean_trips", "warehouse_trips", "postgres_trips")} <= keys
        assert {"taxi_zones", "warehouse_taxi_zones", "postgres_taxi_zones"} <= keys

        # The instance is the top-level file's: its run queue, and the command line's run and materialization.
        seen = graphql(
            base,
            """{
              instance { runQueuingSupported runQueueConfig { maxConcurrentRuns } }
              runsOrError { ... on Runs { results { runId status } } }
              assetNodeOrError(assetKey: {path: ["yellow", "clean_trips"]}) {
                ... on AssetNode { partitionStats { numMaterialized } }
              }
            }""",
        )
        assert seen["instance"] == {"runQueuingSupported": True, "runQueueConfig": {"maxConcurrentRuns": 4}}
        assert [(r["runId"], r["status"]) for r in seen["runsOrError"]["results"]] == [(cli_run, "SUCCESS")]
        assert seen["assetNodeOrError"]["partitionStats"]["numMaterialized"] == 1

        # A run launched as the UI launches it: queued, started by the daemon through the code server, run by a
        # run worker; all of them write to the same .dagster_home/.
        launched = graphql(
            base,
            """mutation($params: ExecutionParams!) {
              launchRun(executionParams: $params) {
                __typename
                ... on LaunchRunSuccess { run { runId status } }
                ... on PythonError { message }
              }
            }""",
            {
                "params": {
                    "selector": {
                        "repositoryLocationName": "taxi_assets",
                        "repositoryName": "__repository__",
                        "jobName": "__ASSET_JOB",
                        "assetSelection": [{"path": ["yellow", "raw_trips"]}],
                    },
                    "executionMetadata": {"tags": [{"key": "dagster/partition", "value": MONTH}]},
                }
            },
        )["launchRun"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        ui_run = launched["run"]["runId"]
        assert launched["run"]["status"] == "QUEUED"

        status_query = "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"

        def finished():
            status = graphql(base, status_query, {"id": ui_run})["runOrError"]["status"]
            return status if status in ("SUCCESS", "FAILURE", "CANCELED") else None

        assert wait_for(finished, 120, "the launched run finished", interval=1, process=dev, log=log) == "SUCCESS"
        assert stored_runs(repo) == {cli_run: "SUCCESS", ui_run: "SUCCESS"}
        assert (home / "history" / "runs" / f"{ui_run}.db").is_file()
        assert (home / "logs" / ui_run).is_dir()
    finally:
        stop_process_group(dev, timeout=60)

    # Stopped cleanly: dagster dev shut its services down and removed its throw-away home.
    assert dev.returncode == 0, tail(log)
    assert temp_homes(repo) == [], tail(log)
    assert materialize_seconds < 120


def test_dg_recognises_the_project(repo, root_env):
    """`dg check defs` and `dg list defs` in the repository root, on the top-level dagster.yaml."""
    dg = BIN / "dg"
    if not dg.exists():
        pytest.fail('dg is a test requirement: pip install -e ".[test]" (dagster-dg-cli)')

    check = subprocess.run(
        [str(dg), "check", "defs"], cwd=repo, env=root_env, capture_output=True, text=True, timeout=180
    )
    assert check.returncode == 0, (check.stdout + check.stderr)[-4000:]
    assert "All definitions loaded successfully" in check.stdout

    listed = subprocess.run(
        [str(dg), "list", "defs", "--json"], cwd=repo, env=root_env, capture_output=True, text=True, timeout=180
    )
    assert listed.returncode == 0, listed.stderr[-4000:]
    defs = json.loads(listed.stdout)
    keys = {asset["asset_key"] for asset in defs["assets"]}
    assert {"yellow/raw_trips", "yellow/postgres_trips", "fhvhv/postgres_trips", "taxi_zones"} <= keys
    assert {"yellow_trips_job", "fhvhv_trips_job"} <= {job["name"] for job in defs["jobs"]}
    assert defs["schedules"] and defs["sensors"] and defs["asset_checks"]
