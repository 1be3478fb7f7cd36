"""Runs whose worker process died without ending them (SIGKILL, an OOM kill, a reboot): they stay STARTED and keep
the pool slots (``postgres``, ``warehouse``) their steps held, so every later step of that pool would wait forever.

Each run worker records where it runs (run tags: pid and host, and the process's start so a reused pid is not taken
for it). A run is dead when it is still STARTING, STARTED or CANCELING, ran on this host, and that process is gone.
Dead runs are marked failed and their slots freed, at two moments:

- at the start of every run, by the executor (``in_process_executor_freeing_dead_runs``), before any step claims
  a slot: a user of the command line alone (no daemon) is never blocked by a run killed earlier;
- every minute by ``dead_run_sensor``, in the daemon, for runs that nobody starts after.

The same executor fixes two faults of Dagster 1.13 for a step that waits for a slot a live run holds: the waiting
run sleeps between checks instead of spinning a core, and SIGTERM or Ctrl-C ends it instead of being held until
its next step.

Runs of other hosts are never judged (their pids mean nothing here): a sensor on another machine never fails a
live run. Runs in their own containers (DockerRunLauncher, Kubernetes) are watched by Dagster's run monitoring,
which frees slots of ended runs (``free_slots_after_run_end_seconds`` in dagster.yaml).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator

import dagster as dg
from dagster._core.errors import DagsterExecutionInterruptedError
from dagster._core.events import EngineEventData
from dagster._core.execution.api import ExecuteRunWithPlanIterable
from dagster._core.execution.context_creation_job import PlanExecutionContextManager
from dagster._core.execution.plan.execute_plan import inner_plan_execution_iterator
from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext
from dagster._core.executor.in_process import InProcessExecutor
from dagster._utils.interrupts import pop_captured_interrupt
from dagster._utils.timing import time_execution_scope
from dagster_shared.utils.timing import format_duration

from taxi_assets.resources.lake import can_see_processes, process_start

WORKER_TAG = "taxi/run_worker"  # "<pid>@<host>"
WORKER_START_TAG = "taxi/run_worker_start"  # the process's start (clock ticks since boot)
DEAD_RUN_SENSOR_INTERVAL = 60
# A step waiting for a pool slot looks for a signal this often (Dagster asks for a slot every 1 to 15 s).
SLOT_WAIT_CHECK_SECONDS = 1.0
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


class _PatientConcurrencyContext(InstanceConcurrencyContext):
    """Dagster 1.13's pool slot claims, with two fixes for a step that waits for a slot: the run sleeps between
    checks (1.13 computes a wait of zero or less, so a waiting run spins a core), and SIGTERM or Ctrl-C while it
    waits ends the run (1.13 holds the signal until the next step starts: never, for a run that only waits)."""

    def interval_to_next_pending_claim_check(self) -> float:
        if pop_captured_interrupt():
            raise DagsterExecutionInterruptedError()
        now = time.time()
        ready = min((at - now for at in self._pending_timeouts.values()), default=0.0)
        return min(max(ready, 0.0), SLOT_WAIT_CHECK_SECONDS)


def _execution_iterator(job_context, execution_plan, instance_concurrency_context=None) -> Iterator[dg.DagsterEvent]:
    with _PatientConcurrencyContext(job_context.instance, job_context.dagster_run) as concurrency:
        yield from inner_plan_execution_iterator(job_context, execution_plan, concurrency)


class _InProcessExecutor(InProcessExecutor):
    """The in-process executor, which first records this run's worker and fails dead runs, and waits for pool
    slots patiently."""

    def execute(self, plan_context, execution_plan) -> Iterator[dg.DagsterEvent]:
        instance = plan_context.instance
        instance.add_run_tags(plan_context.run_id, this_worker())
        dead = fail_dead_runs(instance)
        if dead:
            plan_context.log.warning(f"Failed dead runs and freed their pool slots: {describe(dead)}")
        # Dagster's InProcessExecutor.execute (1.13), with the concurrency context above.
        step_keys = execution_plan.step_keys_to_execute
        yield dg.DagsterEvent.engine_event(
            plan_context,
            f"Executing steps in process (pid: {os.getpid()})",
            event_specific_data=EngineEventData.in_process(os.getpid(), step_keys),
        )
        with time_execution_scope() as timer:
            yield from ExecuteRunWithPlanIterable(
                execution_plan=plan_context.execution_plan,
                iterator=_execution_iterator,
                execution_context_manager=PlanExecutionContextManager(
                    job=plan_context.job,
                    retry_mode=plan_context.retry_mode,
                    execution_plan=plan_context.execution_plan,
                    run_config=plan_context.run_config,
                    dagster_run=plan_context.dagster_run,
                    instance=plan_context.instance,
                    raise_on_error=plan_context.raise_on_error,
                    output_capture=plan_context.output_capture,
                    step_dependency_config=self.step_dependency_config,
                ),
            )
        yield dg.DagsterEvent.engine_event(
            plan_context,
            f"Finished steps in process (pid: {os.getpid()}) in {format_duration(timer.millis)}",
            event_specific_data=EngineEventData.in_process(os.getpid(), step_keys),
        )


@dg.executor(name="in_process", config_schema=dg.in_process_executor.config_schema)
def in_process_executor_freeing_dead_runs(init_context: dg.InitExecutorContext) -> dg.Executor:
    """Dagster's in-process executor (same config), which first fails the runs of this host whose worker died and
    frees their pool slots, before any step of this run claims one."""
    core = dg.in_process_executor.executor_creation_fn(init_context)
    return _InProcessExecutor(
        retries=core.retries, marker_to_close=core.marker_to_close, step_dependency_config=core.step_dependency_config
    )


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
