"""Two `dagster asset materialize` processes of the same month at once, on one instance, as two users would start
them: each store ends with the month once (exact counts, no duplicates), and a process that fails says why."""

import os
import re
import time

import dagster as dg
import pytest

from taxi_assets_tests.faults.kill_support import materialize_command, runs, start, write_instance_yaml
from taxi_assets_tests.stores import counts_in_every_store

MONTH = "2021-01"
TIMEOUT_SECONDS = 180


@pytest.mark.fault_case("Two materializations of one month at once")
def test_two_cli_runs_of_one_month_at_once_leave_the_month_once_in_every_store(
    local_env, http_source, source_manifest, tmp_path
):
    home, url = tmp_path / "dagster_home", os.environ["TAXI_POSTGRES_URL"]
    write_instance_yaml(home)
    # The instance exists before the two runs, as it does for users: two processes creating a new SQLite instance
    # at the same instant race in Dagster's schema stamping ("more than one head"), which is not this case.
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.get_runs(limit=1)
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    logs = [tmp_path / "first.log", tmp_path / "second.log"]

    processes = [start(materialize_command(MONTH), env, log) for log in logs]
    deadline = time.monotonic() + TIMEOUT_SECONDS
    codes = [process.wait(timeout=max(deadline - time.monotonic(), 1)) for process in processes]

    outputs = [log.read_text() for log in logs]
    # Both come through: the pools serialize the DuckDB and Postgres steps across the two runs, the per-month lock
    # serializes the two Postgres loads, and each lake file is published whole by one of them.
    assert codes == [0, 0], "\n\n".join(output[-3000:] for output in outputs)
    kept = source_manifest["files"][f"yellow/yellow_tripdata_{MONTH}.csv.gz"]["kept"]
    assert counts_in_every_store(local_env, url, "yellow", MONTH) == dict.fromkeys(["lake", "duckdb", "postgres"], kept)
    assert sorted(path.name for path in (local_env / "lake").rglob("*") if path.is_file()) == [
        f"yellow_tripdata_{MONTH}.csv.gz",
        f"yellow_tripdata_{MONTH}.parquet",
    ]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert [run.status for run in runs(instance)] == [dg.DagsterRunStatus.SUCCESS] * 2
    assert not any(re.search(r"Traceback|Error", output) for output in outputs)
