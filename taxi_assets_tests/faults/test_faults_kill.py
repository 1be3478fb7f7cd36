"""`dagster asset materialize` SIGKILLed in each step of a month, then run again as a user would: the next run
succeeds promptly, every store holds the month's exact rows, and nothing of the killed attempt is left."""

import os
import subprocess
import sys

import dagster as dg
import psycopg
import pytest

from taxi_assets.resources.lake import LocalLake
from taxi_assets_tests.faults.kill_support import (
    kill_group,
    materialize_command,
    run_and_time,
    runs,
    stalling_source,
    start,
    step_events,
    wait_for,
    write_instance_yaml,
)
from taxi_assets_tests.stores import counts_in_every_store

MONTH = "2021-01"
PROMPT_SECONDS = 60
PAUSE_SECONDS = 120


def _staging_files(lake) -> list[str]:
    return sorted(str(p.relative_to(lake)) for p in lake.rglob(".*.partial"))


def _load_tables(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE '\\_load\\_%'").fetchall()
    return [name for (name,) in rows]


def _waiting_for_lock(url: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        return bool(
            conn.execute(
                "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'LOCK TABLE%'"
            ).fetchall()
        )


COPY_LOG = r"COPY into nyc_taxi\._load_"


# (step killed, how the run is stopped in that step): a stalled source, a pause after a call or at a log line of the
# step's own code, or the swap's lock held by a reader of the table.
@pytest.mark.parametrize(
    ("step", "how"),
    [
        pytest.param(
            "yellow__raw_trips", "stalled source", marks=pytest.mark.fault_case("Run killed while downloading")
        ),
        pytest.param(
            "yellow__clean_trips",
            "pyarrow.parquet:ParquetWriter.write_table",
            marks=pytest.mark.fault_case("Run killed while cleaning"),
        ),
        pytest.param(
            "yellow__postgres_trips", COPY_LOG, marks=pytest.mark.fault_case("Run killed during Postgres COPY")
        ),
        pytest.param(
            "yellow__postgres_trips", "swap lock", marks=pytest.mark.fault_case("Run killed at Postgres swap")
        ),
        pytest.param(
            "yellow__warehouse_trips",
            r"INSERT into nyc_taxi\.yellow_trips_2021_01",
            marks=pytest.mark.fault_case("Run killed during DuckDB load"),
        ),
    ],
    ids=["download", "clean", "postgres-copy", "postgres-swap", "duckdb-load"],
)
def test_a_run_killed_in_a_step_leaves_nothing_and_the_next_run_loads_the_month(
    step, how, local_env, source_dir, source_manifest, tmp_path
):
    home, lake, url = tmp_path / "dagster_home", local_env / "lake", os.environ["TAXI_POSTGRES_URL"]
    write_instance_yaml(home)
    marker, log = tmp_path / "paused", tmp_path / "killed.log"
    with stalling_source(source_dir) as source:
        env = {**os.environ, "DAGSTER_HOME": str(home), "TAXI_SOURCE_URL": source.url}
        if how == "stalled source":
            source.stall.set()
            killed = start(materialize_command(MONTH), env, log)
            wait_for(
                lambda: any(p.stat().st_size for p in lake.rglob(".*.partial")), PAUSE_SECONDS, "download", killed, log
            )
        elif how == "swap lock":
            # Paused mid-COPY, where the table exists; then held at the swap's lock by a reader of the table.
            killed = start(materialize_command(MONTH, pause_at_log=COPY_LOG, marker=marker), env, log)
            wait_for(marker.exists, PAUSE_SECONDS, "the COPY", killed, log)
            reader = psycopg.connect(url)
            reader.execute("LOCK TABLE nyc_taxi.yellow_trips IN ACCESS SHARE MODE")
            (tmp_path / "paused.resume").touch()
            wait_for(lambda: _waiting_for_lock(url), PAUSE_SECONDS, "the swap waiting for its lock", killed, log)
        elif ":" in how:
            killed = start(materialize_command(MONTH, pause_after=how, marker=marker), env, log)
            wait_for(marker.exists, PAUSE_SECONDS, f"{step} paused", killed, log)
        else:
            killed = start(materialize_command(MONTH, pause_at_log=how, marker=marker), env, log)
            wait_for(marker.exists, PAUSE_SECONDS, f"{step} paused", killed, log)
        staging_at_kill = _staging_files(lake)
        kill_group(killed)
        if how == "swap lock":
            reader.close()
        source.stall.clear()
        source.release.set()

        with dg.DagsterInstance.from_config(str(home)) as instance:
            (dead,) = runs(instance)
            events = step_events(instance, dead.run_id, step)
            assert "STEP_START" in events and "STEP_SUCCESS" not in events  # killed inside the step
        if step in ("yellow__raw_trips", "yellow__clean_trips"):
            assert staging_at_kill, "the killed step had a staging file in the lake"

        code, seconds = run_and_time(materialize_command(MONTH), env, tmp_path / "next.log", timeout=PROMPT_SECONDS)

    assert code == 0, (tmp_path / "next.log").read_text()[-3000:]
    assert seconds < PROMPT_SECONDS
    kept = source_manifest["files"][f"yellow/yellow_tripdata_{MONTH}.csv.gz"]["kept"]
    assert counts_in_every_store(local_env, url, "yellow", MONTH) == dict.fromkeys(["lake", "duckdb", "postgres"], kept)
    assert _staging_files(lake) == []
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE
    # The next attempt at the month dropped the load tables the killed run left.
    assert _load_tables(url) == []


WRITER = """
import sys, time
from taxi_assets.resources.lake import LocalLake
with LocalLake(root=sys.argv[1]).write("clean/yellow/yellow_tripdata_2021-01.parquet") as path:
    path.write_bytes(b"half a month")
    print("writing", flush=True)
    time.sleep(60)
"""


@pytest.mark.fault_case("Lake writers killed or interrupted")
def test_a_lake_write_removes_dead_writers_staging_files_never_a_live_ones(tmp_path):
    lake, key = LocalLake(root=str(tmp_path)), "clean/yellow/yellow_tripdata_2021-01.parquet"
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    try:
        for writer in writers:
            assert writer.stdout.readline() == "writing\n"
        dead, live = writers
        dead.kill()
        dead.wait()
        staging = {p.name.split(".")[-4]: p for p in (tmp_path / "clean" / "yellow").glob(".*.partial")}
        assert sorted(staging) == sorted([str(dead.pid), str(live.pid)])

        with pytest.raises(KeyboardInterrupt), lake.write(key) as path:  # Ctrl-C while writing
            path.write_bytes(b"interrupted")
            raise KeyboardInterrupt

        assert not staging[str(dead.pid)].exists() and not path.exists()
        assert staging[str(live.pid)].read_bytes() == b"half a month"  # the live writer's file is left alone
        assert not (tmp_path / key).exists()
    finally:
        for writer in writers:
            writer.kill()
            writer.wait()
