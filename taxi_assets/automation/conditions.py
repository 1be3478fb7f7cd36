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


def follows_upstream() -> dg.AutomationCondition:
    """A partition is requested once after any parent's same partition was updated (any month, not only the latest).

    Handled, besides by a request or an update (``since_last_handled``): by the end of the partition's own run
    (``~in_progress`` newly true). A parent updated by a run that also planned the partition is that run's business:
    it succeeded (nothing to do) or failed (its alert says so). Without it, a tick that saw the parent's update but
    not yet the partition's own, while its run was ending, requested the month a second time (seen in the daemon
    test: Dagster's ``executed_with_root_target`` cannot tell, as job runs have no asset selection).
    """
    condition = dg.AutomationCondition
    handled = (
        condition.newly_requested()
        | condition.newly_updated()
        | (~condition.in_progress()).newly_true()
        | condition.initial_evaluation()
    ).with_label("handled")
    return (
        condition.any_deps_updated().since(handled)
        & ~condition.any_deps_missing()
        & ~condition.any_deps_in_progress()
        & ~condition.in_progress()
    ).with_label("follows_upstream")


FOLLOWS_UPSTREAM = follows_upstream()


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
