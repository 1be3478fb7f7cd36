"""The executor (automation/executor.py) through `dagster asset materialize` as a user runs it: a run of a range of
months runs the warehouse and Postgres legs at the same time in step processes; a run of one month stays in one
process.

Step processes are forked by a forkserver, not by the test's command, so a pause inside a step (kill_support's
technique) is installed in the forkserver: this module is in the run's ``preload_modules`` and, imported there with
PAUSE_AT_LOG set, pauses each step process at its first log line matching it.
"""

import json
import os
import sys
from pathlib import Path

import dagster as dg
import pytest

from taxi_assets.automation.executor import PRELOAD_MODULES, covers_several_partitions
from taxi_assets.fake_source import read_manifest, write_fake_source
from taxi_assets_tests.conftest import serve_folder
from taxi_assets_tests.faults.kill_support import REPO, SELECT, _install_pauses, kill_group, runs, start, wait_for
from taxi_assets_tests.stores import counts_in_every_store

PAUSE_AT_LOG = "TAXI_TEST_PAUSE_AT_LOG"
PAUSE_MARKER = "TAXI_TEST_PAUSE_MARKER"
if os.environ.get(PAUSE_AT_LOG):  # imported by a range run's forkserver: pause its step processes
    _install_pauses(os.environ[PAUSE_AT_LOG], None, Path(os.environ[PAUSE_MARKER]))

MONTHS = {"2021-01": 1_500, "2021-02": 1_200, "2021-03": 900}  # different sizes, so a mix-up shows
LEGS = ["yellow__warehouse_trips", "yellow__postgres_trips"]


def materialize(*partitions: str, pausing: bool = False) -> list[str]:
    """`dagster asset materialize` of the four yellow assets for one month, or for the range ``first, last``; with
    ``pausing``, its forkserver imports this module (see PAUSE_AT_LOG)."""
    command = [str(Path(sys.executable).parent / "dagster"), "asset", "materialize", "-m", "taxi_assets"]
    command += ["--select", SELECT]
    command += ["--partition", *partitions] if len(partitions) == 1 else ["--partition-range", "...".join(partitions)]
    if pausing:
        preload = [*PRELOAD_MODULES, "taxi_assets_tests.test_executor"]
        command += ["--config-json", json.dumps({"execution": {"config": {"preload_modules": preload}}})]
    return command


def pausing_env(home: Path, pause_at_log: str, marker: Path) -> dict[str, str]:
    """The environment of a run whose step processes pause at ``pause_at_log`` until ``marker``.resume exists."""
    return {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "PYTHONPATH": str(REPO),  # the forkserver imports this module
        PAUSE_AT_LOG: pause_at_log,
        PAUSE_MARKER: str(marker),
    }


def step_windows(instance: dg.DagsterInstance, run_id: str) -> dict[str, tuple[float, float]]:
    """Each step's (STEP_START, STEP_SUCCESS) timestamps in run ``run_id``."""
    starts, windows = {}, {}
    for record in instance.get_records_for_run(run_id).records:
        event = record.event_log_entry.dagster_event
        if event is None:
            continue
        if event.event_type_value == "STEP_START":
            starts[event.step_key] = record.event_log_entry.timestamp
        elif event.event_type_value == "STEP_SUCCESS":
            windows[event.step_key] = (starts[event.step_key], record.event_log_entry.timestamp)
    return windows


def engine_messages(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT).records
    return [r.event_log_entry.dagster_event.message for r in records]


def started_steps(instance: dg.DagsterInstance, run_id: str) -> set[str]:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_START).records
    return {r.event_log_entry.dagster_event.step_key for r in records}


@pytest.fixture
def three_months(local_env, tmp_path, monkeypatch) -> dict[str, int]:
    """Three small yellow months served over HTTP (the mirror layout); the kept rows of each."""
    folder = tmp_path / "source"
    for month, rows in MONTHS.items():
        write_fake_source(folder, ["yellow"], [month], rows=rows, seed=3, layout="mirror")
    files = read_manifest(folder)["files"]
    with serve_folder(folder) as url:
        monkeypatch.setenv("TAXI_SOURCE_URL", url)
        yield {month: files[f"yellow/yellow_tripdata_{month}.csv.gz"]["kept"] for month in MONTHS}


def test_a_range_run_runs_the_warehouse_and_postgres_legs_at_the_same_time(local_env, three_months, tmp_path):
    home, marker = tmp_path / "dagster_home", tmp_path / "paused"
    home.mkdir()
    # Each leg pauses at its first write (DuckDB's INSERT, Postgres's COPY): both paused at once is only possible
    # when they run at the same time; run one after the other, the second would never start.
    env = pausing_env(home, r"INSERT into |COPY into \S+\._load_", marker)
    process = start(materialize("2021-01", "2021-03", pausing=True), env, tmp_path / "range.log")
    try:
        wait_for(marker.exists, 120, "a leg paused in its first write", process, tmp_path / "range.log")
        with dg.DagsterInstance.from_config(str(home)) as instance:
            (run,) = runs(instance)
            wait_for(lambda: set(LEGS) <= started_steps(instance, run.run_id), 60, "both legs started", process)
        Path(f"{marker}.resume").touch()
        assert process.wait(timeout=120) == 0, (tmp_path / "range.log").read_text()[-3000:]
    finally:
        kill_group(process)

    with dg.DagsterInstance.from_config(str(home)) as instance:
        windows = step_windows(instance, run.run_id)
        messages = engine_messages(instance, run.run_id)
    (warehouse, postgres) = (windows[leg] for leg in LEGS)
    assert warehouse[0] < postgres[1] and postgres[0] < warehouse[1]  # the windows overlap
    assert f"Executing steps using multiprocess executor: parent process (pid: {process.pid})" in messages
    for month, kept in three_months.items():
        assert counts_in_every_store(local_env, os.environ["TAXI_POSTGRES_URL"], "yellow", month) == dict.fromkeys(
            ["lake", "duckdb", "postgres"], kept
        )


def test_a_one_month_run_stays_in_one_process(local_env, source_manifest, tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    process = start(materialize("2021-02"), env, tmp_path / "month.log")
    assert process.wait(timeout=120) == 0, (tmp_path / "month.log").read_text()[-3000:]

    with dg.DagsterInstance.from_config(str(home)) as instance:
        (run,) = runs(instance)
        messages = engine_messages(instance, run.run_id)
    assert f"Executing steps in process (pid: {process.pid})" in messages
    assert not [m for m in messages if "multiprocess" in m]
    kept = source_manifest["files"]["yellow/yellow_tripdata_2021-02.csv.gz"]["kept"]
    assert counts_in_every_store(local_env, os.environ["TAXI_POSTGRES_URL"], "yellow", "2021-02") == dict.fromkeys(
        ["lake", "duckdb", "postgres"], kept
    )


@pytest.mark.parametrize(
    ("tags", "several"),
    [
        ({"dagster/asset_partition_range_start": "2021-01", "dagster/asset_partition_range_end": "2021-03"}, True),
        ({"dagster/asset_partition_range_start": "2021-02", "dagster/asset_partition_range_end": "2021-02"}, False),
        ({"dagster/partition": "2021-02"}, False),
        ({}, False),
    ],
)
def test_only_a_range_of_several_partitions_goes_to_step_processes(tags, several):
    assert covers_several_partitions(tags) is several
