"""`dagster asset materialize -m taxi_assets` as a user runs it: a subprocess, a range and a single month."""

import os
import subprocess
import sys
from pathlib import Path

from taxi_assets_tests.stores import counts_in_every_store

SELECT = "yellow/raw_trips,yellow/clean_trips,yellow/warehouse_trips,yellow/postgres_trips"
REPO = Path(__file__).resolve().parents[1]


def dagster_materialize(*args: str, env: dict) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).parent / "dagster"), "asset", "materialize", "-m", "taxi_assets", *args]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_materialize_a_partition_range_then_a_single_partition(local_env, source_manifest, tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "dagster_home")}
    Path(env["DAGSTER_HOME"]).mkdir()
    url = os.environ["TAXI_POSTGRES_URL"]
    kept = {m: source_manifest["files"][f"yellow/yellow_tripdata_{m}.csv.gz"]["kept"] for m in ("2021-01", "2021-02")}

    ranged = dagster_materialize("--select", SELECT, "--partition-range", "2021-01...2021-02", env=env)
    assert ranged.returncode == 0, ranged.stderr[-3000:]
    assert "RUN_SUCCESS" in ranged.stderr
    for month in kept:
        assert counts_in_every_store(local_env, url, "yellow", month) == dict.fromkeys(
            ["lake", "duckdb", "postgres"], kept[month]
        )

    single = dagster_materialize("--select", SELECT, "--partition", "2021-01", env=env)
    assert single.returncode == 0, single.stderr[-3000:]
    assert counts_in_every_store(local_env, url, "yellow", "2021-01")["postgres"] == kept["2021-01"]


def test_materialize_names_a_month_that_is_not_published(local_env, tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "dagster_home")}
    Path(env["DAGSTER_HOME"]).mkdir()
    failed = dagster_materialize("--select", "yellow/raw_trips", "--partition", "2021-03", env=env)
    assert failed.returncode != 0
    assert (
        f"{os.environ['TAXI_SOURCE_URL']}/yellow/yellow_tripdata_2021-03.csv.gz: HTTP 404, not published"
        in failed.stderr
    )
    assert not (local_env / "lake" / "raw" / "yellow" / "yellow_tripdata_2021-03.csv.gz").exists()
