"""Runs whose worker process died without ending them (SIGKILL, an OOM kill, a reboot): they stay STARTED and keep
the pool slots (``postgres``, ``warehouse``) their steps held, so every later step of that pool would wait forever.

Each run worker records where it runs (run tags: pid and host, and the process's start so a reused pid is not taken
for it). A run is dead when it is still STARTING, STARTED or CANCELING, ran on this host, and that process is gone.
Dead runs are marked failed and their slots freed, at two moments:

- at the start of every run, by the executor (automation/executor.py), before any step claims a slot: a user of
  the command line alone (no daemon) is never blocked by a run killed earlier;
- every minute by ``dead_run_sensor``, in the daemon, for runs that nobody starts after.

The worker is the process that runs the executor: in a run of several months its steps run in child processes,
which die with it (automation/step_processes.py), so the worker's death is the run's.

Runs of other hosts are never judged (their pids mean nothing here): a sensor on another machine never fails a
live run. Runs in their own containers (DockerRunLauncher, Kubernetes) are watched by Dagster's run monitoring,
which frees slots of ended runs (``free_slots_after_run_end_seconds`` in dagster.yaml).
"""

from __future__ import annotations

import os
import socket

import dagster as dg

from taxi_assets.resources.lake import can_see_processes, process_start

WORKER_TAG = "taxi/run_worker"  # "<pid>@<host>"
WORKER_START_TAG = "taxi/run_worker_start"  # the process's start (clock ticks since boot)
DEAD_RUN_SENSOR_INTERVAL = 60
ACTIVE = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]


def this_worker() -> dict[str, str]:
    """The tags that say which process of which host runs a run: this one."""
    pid = os.getpid()
    return {WORKER_TAG: f"{pid}@{socket.gethostname()}", WORKER_START_TAG: process_start(pid) or ""}


def worker_is_gone(tags: dict[str, str]) -> bool:
    """Whether the run worker these tags name ran on this host and no longer runs. Unknown (no tags, another
    host, no /proc) is never gone."""
    pid, _, host = tags.get(WORKER_TAG, "").partition("@")
    if host != socket.gethostname() or not pid.isdigit() or not can_see_processes():
        return False
    return process_start(int(pid)) != tags.get(WORKER_START_TAG)


def fail_dead_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    """Mark failed the runs of this host whose worker is gone, and free their pool slots; returns them."""
    failed = []
    candidates = instance.get_runs(filters=dg.RunsFilter(statuses=ACTIVE))
    for run in candidates:
        if not worker_is_gone(run.tags):
            continue
        # Read again after the check: a worker that ended the run normally and then exited is not dead.
        current = instance.get_run_by_id(run.run_id)
        if current is None or current.status not in ACTIVE:
            continue
        instance.report_run_failed(
            current,
            f"The run's worker process ({run.tags[WORKER_TAG]}) is gone but never ended the run (killed?): marked "
            "failed and its pool slots freed.",
        )
        if instance.event_log_storage.supports_global_concurrency_limits:
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        failed.append(current)
    return failed


def describe(runs: list[dg.DagsterRun]) -> str:
    return ", ".join(f"{run.run_id} ({run.job_name}, worker {run.tags[WORKER_TAG]})" for run in runs)


def build_dead_run_sensor(minimum_interval_seconds: int = DEAD_RUN_SENSOR_INTERVAL) -> dg.SensorDefinition:
    @dg.sensor(
        name="dead_run_sensor",
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Marks failed the runs of this host whose worker process died (killed) and frees the pool "
        "slots they held, so later runs do not wait for them forever.",
    )
    def dead_run_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        dead = fail_dead_runs(context.instance)
        if dead:
            context.log.warning(f"Failed dead runs and freed their pool slots: {describe(dead)}")
            return dg.SkipReason(f"Failed {len(dead)} dead run(s): {describe(dead)}")
        return dg.SkipReason("No dead run on this host.")

    return dead_run_sensor
