"""``FOLLOWS_UPSTREAM``, the automation condition of every asset downstream of ``raw_trips``, and
``taxi_automation_sensor``, which evaluates it (stopped by default, one run per requested month).

The condition is ``AutomationCondition.eager()`` without ``in_latest_time_window()`` (any month follows, not only
the newest) and without ``newly_missing()`` (a new calendar month is the source sensors' business, not a trigger).
What it requests and what it does not: docs/AUTOMATION.md, "Automation conditions".
"""

from __future__ import annotations

import dagster as dg

AUTOMATION_SENSOR_NAME = "taxi_automation_sensor"
AUTOMATION_SENSOR_INTERVAL = 60  # a tick reads the event log only; Dagster's default is 30 s


# The run tag of every run of a ``<service>_trips_job`` (jobs.py): such a run loads the month's four trip assets itself.
TRIPS_JOB_TAG = "taxi/service"


def follows_upstream(*, in_trips_job: bool) -> dg.AutomationCondition:
    """A partition is requested once after any parent's same partition was updated (any month, not only the latest).

    ``in_trips_job``: the asset is one of the four a trips job run loads itself, so a parent updated by such a run
    (``TRIPS_JOB_TAG``) is that run's business: it succeeded (nothing to do) or failed (its alert says so). Asked
    of the run that updated the parent, not of whether the month's run was seen in progress: a run that started and
    ended between two ticks is never seen in progress (a second, needless run of the month was seen in the daemon
    test when the partition's own end was the reset). Dagster's ``executed_with_root_target`` cannot tell, as job
    runs have no asset selection.
    """
    condition = dg.AutomationCondition
    updated = condition.newly_updated() & ~condition.executed_with_root_target()
    if in_trips_job:
        updated = updated & ~condition.executed_with_tags(tag_keys={TRIPS_JOB_TAG})
    deps_updated = condition.any_deps_match(
        updated.with_label("newly_updated_outside_a_run_that_loads_it") | condition.will_be_requested()
    ).with_label("any_deps_updated")
    return (
        deps_updated.since_last_handled()
        & ~condition.any_deps_missing()
        & ~condition.any_deps_in_progress()
        & ~condition.in_progress()
    ).with_label("follows_upstream")


# clean_trips, warehouse_trips and postgres_trips (in their service's trips job), and the summaries (never in a job).
FOLLOWS_UPSTREAM = follows_upstream(in_trips_job=True)
FOLLOWS_UPSTREAM_SUMMARY = follows_upstream(in_trips_job=False)


def build_automation_sensor(
    *, minimum_interval_seconds: int = AUTOMATION_SENSOR_INTERVAL
) -> dg.AutomationConditionSensorDefinition:
    """``taxi_automation_sensor``: evaluates the automation conditions of every asset of the location."""
    return dg.AutomationConditionSensorDefinition(
        AUTOMATION_SENSOR_NAME,
        target=dg.AssetSelection.all(),
        default_status=dg.DefaultSensorStatus.STOPPED,
        minimum_interval_seconds=minimum_interval_seconds,
        # One run per month, as the source sensors and schedules launch them (and the `dagster/partition` run
        # limit of dagster.yaml sees): with backfills, months requested on the same tick would share one
        # single-run backfill, and one broken raw file would fail the others' load with it.
        emit_backfills=False,
        description="Evaluates the automation conditions: the clean, warehouse and Postgres assets of a month follow "
        "its raw file (or their parent) when it was updated outside of a run that loaded them too. See "
        "docs/AUTOMATION.md.",
    )
