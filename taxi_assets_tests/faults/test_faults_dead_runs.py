"""A run killed while it holds a pool slot blocks no later run: the next run (command line, no daemon) and the
dead_run_sensor mark it failed and free its slots. A run of a range of months (its steps in child processes) too:
its step processes die with it. A run waiting for a slot sleeps, and SIGTERM ends it, on both paths."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.test_utils import create_run_for_test

from taxi_assets.automation.dead_runs import WORKER_START_TAG, WORKER_TAG, build_dead_run_sensor, this_worker
from taxi_assets.resources.lake import process_start
from taxi_assets_tests.faults.kill_support import (
    claimed_slots,
    kill_group,
    materialize_command,
    run_and_time,
    runs,
    start,
    wait_for,
    write_instance_yaml,
)
from taxi_assets_tests.stores import counts_in_every_store
from taxi_assets_tests.test_executor import materialize, pausing_env

PROMPT_SECONDS = 60


@pytest.mark.fault_case("Run killed holding a pool slot")
def test_a_run_killed_in_its_postgres_step_blocks_no_later_run(local_env, source_manifest, tmp_path):
    home = tmp_path / "dagster_home"
    write_instance_yaml(home)
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    marker = tmp_path / "paused"
    # Paused mid-COPY: the postgres step has claimed the pool's only slot.
    killed = start(
        materialize_command("2021-01", pause_at_log=r"COPY into nyc_taxi\._load_", marker=marker),
        env,
        tmp_path / "killed.log",
    )
    try:
        wait_for(marker.exists, 120, "the run paused in its postgres step", killed, tmp_path / "killed.log")
        with dg.DagsterInstance.from_config(str(home)) as instance:
            (dead,) = runs(instance)
            assert claimed_slots(instance, "postgres") == [(dead.run_id, "yellow__postgres_trips")]
    finally:
        kill_group(killed)

    with dg.DagsterInstance.from_config(str(home)) as instance:
        # Still STARTED and holding the slot: what used to block every later run.
        assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.STARTED
        assert claimed_slots(instance, "postgres") == [(dead.run_id, "yellow__postgres_trips")]

    assert_the_next_run_frees_the_dead_ones_slot(dead, env, home, tmp_path, local_env, source_manifest)


def _run(instance: dg.DagsterInstance, tags: dict[str, str], slot_step: str, pool: str = "postgres") -> dg.DagsterRun:
    """A STARTED run with ``tags`` that holds a slot of ``pool`` for ``slot_step``."""
    # Dagster's own test helper: a run in the instance, as a launched one is recorded.
    run = create_run_for_test(instance, job_name="yellow_trips_job", status=dg.DagsterRunStatus.STARTED, tags=tags)
    claim = instance.event_log_storage.claim_concurrency_slot(pool, run.run_id, slot_step)
    assert claim.is_claimed
    return run


@pytest.mark.fault_case("Dead run found by the sensor")
def test_the_sensor_fails_only_dead_runs_of_this_host(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])  # a real process of this host, ended and reaped
    gone.wait()
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        instance.event_log_storage.set_concurrency_slots("postgres", 4)
        dead = _run(instance, {WORKER_TAG: f"{gone.pid}@{socket.gethostname()}", WORKER_START_TAG: "1"}, "a")
        alive = _run(instance, this_worker(), "b")
        # A pid that is free here but was a live worker on another machine sharing the instance.
        elsewhere = _run(instance, {WORKER_TAG: f"{gone.pid}@another-host", WORKER_START_TAG: "1"}, "c")
        # This very pid again, but started at another time: a reused pid, its worker is gone.
        reused = _run(instance, {WORKER_TAG: f"{os.getpid()}@{socket.gethostname()}", WORKER_START_TAG: "0"}, "d")
        assert process_start(os.getpid()) != "0"

        result = build_dead_run_sensor()(dg.build_sensor_context(instance=instance))

        assert isinstance(result, dg.SkipReason)
        assert result.skip_message.startswith("Failed 2 dead run(s): ")
        status = {run.run_id: instance.get_run_by_id(run.run_id).status for run in (dead, alive, elsewhere, reused)}
        assert status == {
            dead.run_id: dg.DagsterRunStatus.FAILURE,
            alive.run_id: dg.DagsterRunStatus.STARTED,
            elsewhere.run_id: dg.DagsterRunStatus.STARTED,
            reused.run_id: dg.DagsterRunStatus.FAILURE,
        }
        assert sorted(claimed_slots(instance, "postgres")) == sorted([(alive.run_id, "b"), (elsewhere.run_id, "c")])
        # A second tick finds nothing more.
        again = build_dead_run_sensor()(dg.build_sensor_context(instance=instance))
        assert again.skip_message == "No dead run on this host."


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system) process ``pid`` used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.fault_case("Run waits for a busy pool slot")
def test_a_run_waiting_for_a_live_runs_slot_sleeps_and_stops_on_sigterm(local_env, tmp_path):
    home = tmp_path / "dagster_home"
    write_instance_yaml(home)
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    marker = tmp_path / "paused"
    holder = start(
        materialize_command("2021-01", pause_at_log=r"COPY into nyc_taxi\._load_", marker=marker),
        env,
        tmp_path / "holder.log",
    )
    waiter = None
    try:
        wait_for(marker.exists, 120, "the first run in its postgres step", holder, tmp_path / "holder.log")
        waiter = start(materialize_command("2021-02"), env, tmp_path / "waiter.log")
        with dg.DagsterInstance.from_config(str(home)) as instance:
            (held, waiting) = wait_for(lambda: runs(instance) if len(runs(instance)) == 2 else None, 60, "runs")

            def waits() -> bool:
                return waiting.run_id in instance.event_log_storage.get_concurrency_info("postgres").pending_run_ids

            wait_for(waits, 120, "the second run waiting for the postgres slot", waiter, tmp_path / "waiter.log")
            before = _cpu_seconds(waiter.pid)
            time.sleep(3)
            assert _cpu_seconds(waiter.pid) - before < 0.5  # sleeps while it waits (it used to spin a core)

            os.kill(waiter.pid, signal.SIGTERM)  # the user gives up waiting
            assert waiter.wait(timeout=20) != 0
            assert instance.get_run_by_id(waiting.run_id).status == dg.DagsterRunStatus.FAILURE
            assert claimed_slots(instance, "postgres") == [(held.run_id, "yellow__postgres_trips")]
        (tmp_path / "paused.resume").touch()
        assert holder.wait(timeout=120) == 0, (tmp_path / "holder.log").read_text()[-3000:]
    finally:
        for process in (holder, waiter):
            if process is not None:
                kill_group(process)


@pytest.mark.fault_case("Range run killed holding a pool slot")
def test_a_range_run_killed_in_its_postgres_step_leaves_no_step_behind_and_blocks_no_later_run(
    local_env, source_manifest, tmp_path
):
    home = tmp_path / "dagster_home"
    write_instance_yaml(home)
    marker = tmp_path / "paused"
    # A range: the postgres step runs in a child process, paused mid-COPY holding the pool's only slot.
    env = pausing_env(home, r"COPY into \S+\._load_", marker)
    killed = start(materialize("2021-01", "2021-02", pausing=True), env, tmp_path / "killed.log")
    try:
        wait_for(lambda: marker.exists() and marker.read_text(), 120, "the postgres step paused", killed)
        step_pid = int(marker.read_text())
        assert step_pid != killed.pid
        with dg.DagsterInstance.from_config(str(home)) as instance:
            (dead,) = runs(instance)
            assert claimed_slots(instance, "postgres") == [(dead.run_id, "yellow__postgres_trips")]
        os.kill(killed.pid, signal.SIGKILL)  # the run worker alone, as the OOM killer picks one process
        killed.wait(timeout=30)
        # Its step process goes with it: nothing keeps writing Postgres behind the next run.
        wait_for(lambda: process_start(step_pid) is None, 10, "the step process ending with its run worker")
    finally:
        kill_group(killed)

    assert_the_next_run_frees_the_dead_ones_slot(dead, env, home, tmp_path, local_env, source_manifest)


@pytest.mark.fault_case("Range run waits for busy pool slots")
def test_a_range_run_waiting_for_live_runs_slots_sleeps_and_stops_on_sigterm(local_env, tmp_path):
    home = tmp_path / "dagster_home"
    write_instance_yaml(home)
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    waiter = None
    with dg.DagsterInstance.from_config(str(home)) as instance:
        # Live runs (this test's process is their worker) hold both legs' pools.
        held = {}
        for pool, step in (("postgres", "yellow__postgres_trips"), ("warehouse", "yellow__warehouse_trips")):
            instance.event_log_storage.set_concurrency_slots(pool, 1)
            held[pool] = _run(instance, this_worker(), step, pool).run_id
        try:
            waiter = start(materialize("2021-01", "2021-02"), env, tmp_path / "waiter.log")
            waiting = wait_for(lambda: [r for r in runs(instance) if r.run_id not in held.values()], 60, "the run")[0]

            def waits() -> bool:
                return all(
                    waiting.run_id in instance.event_log_storage.get_concurrency_info(pool).pending_run_ids
                    for pool in held
                )

            # Both legs wait and no step process runs: the parent's loop has nothing to pace it but its sleep.
            wait_for(waits, 120, "the range run waiting for both slots", waiter, tmp_path / "waiter.log")
            before = _cpu_seconds(waiter.pid)
            time.sleep(3)
            assert _cpu_seconds(waiter.pid) - before < 0.5  # sleeps while it waits (1.13's loop spins a core)

            os.kill(waiter.pid, signal.SIGTERM)
            assert waiter.wait(timeout=20) != 0
            assert instance.get_run_by_id(waiting.run_id).status == dg.DagsterRunStatus.FAILURE
            assert claimed_slots(instance, "postgres") == [(held["postgres"], "yellow__postgres_trips")]
            assert claimed_slots(instance, "warehouse") == [(held["warehouse"], "yellow__warehouse_trips")]
        finally:
            if waiter is not None:
                kill_group(waiter)


@pytest.mark.fault_case("Step process of a range run killed")
def test_a_killed_step_process_is_retried_in_a_new_one_and_the_run_succeeds(local_env, source_manifest, tmp_path):
    home = tmp_path / "dagster_home"
    write_instance_yaml(home)
    marker, log = tmp_path / "paused", tmp_path / "range.log"
    env = pausing_env(home, r"COPY into \S+\._load_", marker)
    process = start(materialize("2021-01", "2021-02", pausing=True), env, log)
    try:
        wait_for(lambda: marker.exists() and marker.read_text(), 120, "the postgres step paused", process, log)
        os.kill(int(marker.read_text()), signal.SIGKILL)  # the step's process alone, mid-COPY; the run worker lives
        Path(f"{marker}.resume").touch()  # the retry goes through
        code = process.wait(timeout=120)
    finally:
        kill_group(process)

    output = log.read_text()
    assert code == 0, output[-3000:]
    # The run worker saw its step process die, failed that attempt (its slot freed), and the step's RetryPolicy
    # ran it again in a new process.
    assert "child process for step yellow__postgres_trips was terminated by signal 9 (SIGKILL)" in output
    assert 'Started re-execution (attempt # 2) of step "yellow__postgres_trips"' in output
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert claimed_slots(instance, "postgres") == []
    for month in ("2021-01", "2021-02"):
        kept = source_manifest["files"][f"yellow/yellow_tripdata_{month}.csv.gz"]["kept"]
        assert counts_in_every_store(local_env, os.environ["TAXI_POSTGRES_URL"], "yellow", month) == dict.fromkeys(
            ["lake", "duckdb", "postgres"], kept
        )


def assert_the_next_run_frees_the_dead_ones_slot(dead, env, home, tmp_path, local_env, source_manifest) -> None:
    """A run of another month, started as a user would, finishes promptly: it failed the dead run and freed its
    slot first, and loaded its month into every store."""
    code, seconds = run_and_time(materialize_command("2021-02"), env, tmp_path / "next.log", timeout=PROMPT_SECONDS)
    output = (tmp_path / "next.log").read_text()
    assert code == 0, output[-3000:]
    assert seconds < PROMPT_SECONDS
    assert f"Failed dead runs and freed their pool slots: {dead.run_id}" in output
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE
        assert claimed_slots(instance, "postgres") == []
    kept = source_manifest["files"]["yellow/yellow_tripdata_2021-02.csv.gz"]["kept"]
    assert counts_in_every_store(local_env, os.environ["TAXI_POSTGRES_URL"], "yellow", "2021-02") == dict.fromkeys(
        ["lake", "duckdb", "postgres"], kept
    )
