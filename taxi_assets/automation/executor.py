"""The code location's executor: one process for a run of one month, Dagster's multiprocess executor for a run of a
range of months, so that steps that do not depend on each other (the warehouse and Postgres legs) use both cores.

Every run first records its worker and fails dead runs (automation/dead_runs.py), before any step claims a pool
slot. Then:

- one partition (or none), or a plan without two independent steps: Dagster's in-process executor. A step process
  would cost its start (about 1.5 s: a forkserver importing Dagster and the definitions), which a month's run
  cannot afford, and would gain nothing.
- several partitions (a single-run backfill: run tags ``dagster/asset_partition_range_start`` and ``_end``
  differ): Dagster's multiprocess executor, ``max_concurrent`` steps at once (default 2, the two cores), each in a
  process forked from a forkserver that preloaded the definitions (a step starts in a fraction of a second and
  shares the imports' memory).

Both paths wait for a pool slot the same careful way (1.13 spins a core there, in both loops): they sleep between
checks, and SIGTERM or Ctrl-C ends a waiting run. The run worker (the parent) is the process the dead-run tags
name; its step processes die with it (automation/step_processes.py), so a killed run leaves no step writing
behind it. A step process killed alone (the run worker lives) is seen gone by the multiprocess executor: that
attempt fails and frees its slot, and the step's RetryPolicy runs it again in a new process (else the run fails).
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import dagster as dg
from dagster._core.definitions.reconstruct import ReconstructableJob
from dagster._core.errors import DagsterExecutionInterruptedError, DagsterSubprocessError
from dagster._core.events import EngineEventData
from dagster._core.execution.api import ExecuteRunWithPlanIterable
from dagster._core.execution.context_creation_job import PlanExecutionContextManager
from dagster._core.execution.plan.active import ActiveExecution
from dagster._core.execution.plan.execute_plan import inner_plan_execution_iterator
from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext
from dagster._core.executor.child_process_executor import ChildProcessCrashException
from dagster._core.executor.in_process import InProcessExecutor
from dagster._core.executor.multiprocess import MultiprocessExecutor, execute_step_out_of_process
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from dagster._utils import get_run_crash_explanation
from dagster._utils.error import SerializableErrorInfo, serializable_error_info_from_exc_info
from dagster._utils.interrupts import pop_captured_interrupt
from dagster._utils.timing import time_execution_scope
from dagster_shared.utils.timing import format_duration

from taxi_assets.automation.dead_runs import describe, fail_dead_runs, this_worker

# A step waiting for a pool slot looks for a signal this often (Dagster asks for a slot every 1 to 15 s).
SLOT_WAIT_CHECK_SECONDS = 1.0
MAX_CONCURRENT_STEPS = 2
# Imported once by the forkserver, so a step process starts with Dagster and the definitions loaded (a fork).
# step_processes comes first and always: it makes every step process die with the run worker.
STEP_PROCESSES_MODULE = "taxi_assets.automation.step_processes"
PRELOAD_MODULES = ["taxi_assets.definitions"]


class _PatientConcurrencyContext(InstanceConcurrencyContext):
    """Dagster 1.13's pool slot claims, but a run waiting for a slot sleeps until its next check (at most
    SLOT_WAIT_CHECK_SECONDS): 1.13 computes a wait of zero or less, so a waiting run spins a core."""

    def interval_to_next_pending_claim_check(self) -> float:
        now = time.time()
        ready = min((at - now for at in self._pending_timeouts.values()), default=0.0)
        return min(max(ready, 0.0), SLOT_WAIT_CHECK_SECONDS)


class _InterruptibleConcurrencyContext(_PatientConcurrencyContext):
    """For the in-process loop, which looks for SIGTERM or Ctrl-C only when a step starts (never, for a run that
    only waits): the wait itself ends the run on a signal."""

    def interval_to_next_pending_claim_check(self) -> float:
        if pop_captured_interrupt():
            raise DagsterExecutionInterruptedError()
        return super().interval_to_next_pending_claim_check()


def _execution_iterator(job_context, execution_plan, instance_concurrency_context=None) -> Iterator[dg.DagsterEvent]:
    with _InterruptibleConcurrencyContext(job_context.instance, job_context.dagster_run) as concurrency:
        yield from inner_plan_execution_iterator(job_context, execution_plan, concurrency)


class _InProcessExecutor(InProcessExecutor):
    """Dagster's in-process executor (1.13), waiting for pool slots patiently."""

    def execute(self, plan_context, execution_plan) -> Iterator[dg.DagsterEvent]:
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


class _MultiprocessExecutor(MultiprocessExecutor):
    """Dagster's multiprocess executor (1.13) with a forkserver whose step processes die with the run worker, and
    whose loop sleeps while no step runs and steps wait for pool slots."""

    def __init__(self, retries, max_concurrent: int, preload_modules: list[str], step_dependency_config):
        super().__init__(
            retries=retries,
            max_concurrent=max_concurrent,
            start_method="forkserver",
            explicit_forkserver_preload=[STEP_PROCESSES_MODULE, *preload_modules],
            step_dependency_config=step_dependency_config,
        )

    def execute(self, plan_context, execution_plan) -> Iterator[dg.DagsterEvent]:
        # Dagster's MultiprocessExecutor.execute (1.13), the forkserver branch, with two changes marked "taxi:".
        job = plan_context.reconstructable_job
        multiproc_ctx = multiprocessing.get_context("forkserver")
        preload = self._explicit_forkserver_preload
        multiproc_ctx.set_forkserver_preload(["dagster._core.executor.multiprocess", *preload])
        limit = self._max_concurrent

        yield dg.DagsterEvent.engine_event(
            plan_context,
            f"Executing steps using multiprocess executor: parent process (pid: {os.getpid()})",
            event_specific_data=EngineEventData.multiprocess(
                os.getpid(), step_keys_to_execute=execution_plan.step_keys_to_execute
            ),
        )

        with ExitStack() as stack:
            timer_result = stack.enter_context(time_execution_scope())
            # taxi: the patient context (its interval is what sleep_til_ready below sleeps).
            instance_concurrency_context = stack.enter_context(
                _PatientConcurrencyContext(plan_context.instance, plan_context.dagster_run)
            )
            active_execution = stack.enter_context(
                ActiveExecution(
                    execution_plan,
                    retry_mode=self.retries,
                    max_concurrent=limit,
                    tag_concurrency_limits=self._tag_concurrency_limits,
                    instance_concurrency_context=instance_concurrency_context,
                    step_dependency_config=self._step_dependency_config,
                )
            )
            active_iters: dict[str, Iterator[dg.DagsterEvent | None]] = {}
            errors: dict[int, SerializableErrorInfo] = {}
            processes: dict[str, Any] = {}
            term_events: dict[str, Any] = {}
            stopping = False

            try:
                while (not stopping and not active_execution.is_complete) or active_iters:
                    if active_execution.check_for_interrupts():
                        yield dg.DagsterEvent.engine_event(
                            plan_context,
                            "Multiprocess executor: received termination signal - forwarding to active child processes",
                            EngineEventData.interrupted(list(active_iters.keys())),
                        )
                        stopping = True
                        active_execution.mark_interrupted()
                        for key, term_event in term_events.items():
                            if key in processes:
                                if processes[key].is_alive():
                                    term_event.set()
                                del processes[key]

                    while not stopping:
                        steps = active_execution.get_steps_to_execute(limit=(limit - len(active_iters)))
                        yield from active_execution.concurrency_event_iterator(plan_context)
                        if not steps:
                            break
                        for step in steps:
                            step_context = plan_context.for_step(step)
                            term_events[step.key] = multiproc_ctx.Event()
                            active_iters[step.key] = execute_step_out_of_process(
                                multiproc_ctx,
                                job,
                                step_context,
                                step,
                                errors,
                                processes,
                                term_events,
                                self.retries,
                                active_execution.get_known_state(),
                                execution_plan.repository_load_data,
                            )

                    empty_iters = []
                    for key, step_iter in active_iters.items():
                        try:
                            event_or_none = next(step_iter)
                            if event_or_none is None:
                                continue
                            yield event_or_none
                            active_execution.handle_event(event_or_none)
                            if event_or_none.is_resource_init_failure:
                                step_context = plan_context.for_step(active_execution.get_step_by_key(key))
                                failure_or_retry_event = self.log_failure_or_retry_event_after_error(
                                    step_context,
                                    event_or_none.engine_event_data.error,
                                    active_execution.get_known_state(),
                                )
                                yield failure_or_retry_event
                                active_execution.handle_event(failure_or_retry_event)
                        except ChildProcessCrashException as crash:
                            serializable_error = serializable_error_info_from_exc_info(sys.exc_info())
                            step_context = plan_context.for_step(active_execution.get_step_by_key(key))
                            yield dg.DagsterEvent.engine_event(
                                step_context,
                                get_run_crash_explanation(
                                    prefix=f"Multiprocess executor: child process for step {key}",
                                    exit_code=crash.exit_code,
                                ),
                                EngineEventData.engine_error(serializable_error),
                            )
                            failure_or_retry_event = self.log_failure_or_retry_event_after_error(
                                step_context, serializable_error, active_execution.get_known_state()
                            )
                            active_execution.handle_event(failure_or_retry_event)
                            yield failure_or_retry_event
                            empty_iters.append(key)
                            if failure_or_retry_event.is_step_failure:
                                errors[crash.pid] = serializable_error
                        except StopIteration:
                            empty_iters.append(key)

                    for key in empty_iters:
                        del active_iters[key]
                        del term_events[key]
                        processes.pop(key, None)
                        active_execution.verify_complete(plan_context, key)

                    yield from active_execution.plan_events_iterator(plan_context)

                    # taxi: no step runs (so no child's queue paces this loop) and steps wait for a pool slot or a
                    # retry: sleep until the next check instead of spinning. The loop's next turn sees a signal.
                    if not active_iters and not stopping:
                        active_execution.sleep_til_ready()
            except Exception:
                if not stopping and active_iters:
                    yield dg.DagsterEvent.engine_event(
                        plan_context,
                        "Unexpected exception while steps were still in-progress - terminating running steps:",
                        event_specific_data=EngineEventData(
                            metadata={"steps_interrupted": dg.MetadataValue.text(str(list(active_iters.keys())))},
                            error=serializable_error_info_from_exc_info(sys.exc_info()),
                        ),
                    )
                    for key, term_event in term_events.items():
                        if key in processes:
                            if processes[key].is_alive():
                                term_event.set()
                            del processes[key]
                raise

            errs = {pid: err for pid, err in errors.items() if err}
            if (
                stopping
                and not active_iters
                and all(
                    err.cls_name in {"DagsterExecutionInterruptedError", "KeyboardInterrupt"} for err in errs.values()
                )
            ):
                yield dg.DagsterEvent.engine_event(
                    plan_context,
                    "Multiprocess executor: interrupted all active child processes",
                    event_specific_data=EngineEventData(),
                )
                raise DagsterExecutionInterruptedError()
            elif errs:
                raise DagsterSubprocessError(
                    "During multiprocess execution errors occurred in child processes:\n"
                    + "\n".join(f"In process {pid}: {err.to_string()}" for pid, err in errs.items()),
                    subprocess_error_infos=list(errs.values()),
                )

        yield dg.DagsterEvent.engine_event(
            plan_context,
            f"Multiprocess executor: parent process exiting after {format_duration(timer_result.millis)} "
            f"(pid: {os.getpid()})",
            event_specific_data=EngineEventData.multiprocess(os.getpid()),
        )


def covers_several_partitions(tags: dict[str, str]) -> bool:
    """Whether a run with these tags covers a range of more than one partition (a single-run backfill)."""
    start, end = tags.get(ASSET_PARTITION_RANGE_START_TAG), tags.get(ASSET_PARTITION_RANGE_END_TAG)
    return start is not None and end is not None and start != end


def why_in_process(plan_context, execution_plan, max_concurrent: int) -> str | None:
    """Why this run's steps run in one process, or None when they go to step processes."""
    if max_concurrent < 2:
        return "max_concurrent is 1"
    if not covers_several_partitions(plan_context.dagster_run.tags):
        return "one partition"
    if all(len(level) < 2 for level in execution_plan.get_steps_to_execute_by_level()):
        return "no two steps can run at the same time"
    if not isinstance(plan_context.job, ReconstructableJob) or plan_context.instance.is_ephemeral:
        return "the job is not reconstructable or the instance is ephemeral (no step processes)"
    return None


class _RunExecutor(dg.Executor):
    """Records this run's worker and fails dead runs, then runs the plan in process or in step processes."""

    def __init__(self, in_process: _InProcessExecutor, multiprocess: _MultiprocessExecutor, max_concurrent: int):
        self._in_process = in_process
        self._multiprocess = multiprocess
        self._max_concurrent = max_concurrent

    @property
    def retries(self):
        return self._in_process.retries

    @property
    def step_dependency_config(self):
        return self._in_process.step_dependency_config

    def execute(self, plan_context, execution_plan) -> Iterator[dg.DagsterEvent]:
        instance = plan_context.instance
        instance.add_run_tags(plan_context.run_id, this_worker())
        dead = fail_dead_runs(instance)
        if dead:
            plan_context.log.warning(f"Failed dead runs and freed their pool slots: {describe(dead)}")
        reason = why_in_process(plan_context, execution_plan, self._max_concurrent)
        if reason is None:
            yield from self._multiprocess.execute(plan_context, execution_plan)
        else:
            plan_context.log.debug(f"Steps run in this process: {reason}.")
            yield from self._in_process.execute(plan_context, execution_plan)


@dg.executor(
    name="taxi_executor",
    config_schema={
        **dg.in_process_executor.config_schema.as_field().config_type.fields,
        "max_concurrent": dg.Field(
            int,
            default_value=MAX_CONCURRENT_STEPS,
            description="Steps at once in a run of several partitions (1: every run in one process).",
        ),
        "preload_modules": dg.Field(
            [str],
            default_value=PRELOAD_MODULES,
            description="Modules the forkserver imports once for every step process of a run of several partitions.",
        ),
    },
)
def taxi_executor(init_context: dg.InitExecutorContext) -> dg.Executor:
    """In process for a run of one partition; Dagster's multiprocess executor (forkserver, ``max_concurrent``
    steps) for a run of several. Either way it first fails the runs of this host whose worker died and frees their
    pool slots, and waits for a pool slot without spinning a core."""
    core = dg.in_process_executor.executor_creation_fn(init_context)
    config = init_context.executor_config
    return _RunExecutor(
        _InProcessExecutor(
            retries=core.retries,
            marker_to_close=core.marker_to_close,
            step_dependency_config=core.step_dependency_config,
        ),
        _MultiprocessExecutor(
            retries=core.retries,
            max_concurrent=config["max_concurrent"],
            preload_modules=list(config["preload_modules"]),
            step_dependency_config=core.step_dependency_config,
        ),
        max_concurrent=config["max_concurrent"],
    )
