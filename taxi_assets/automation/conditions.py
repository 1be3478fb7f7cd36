"""Declarative automation: the assets downstream of ``raw_trips`` follow a new or changed upstream month by themselves.

``follows_upstream()`` is the condition of ``clean_trips``, ``warehouse_trips`` and ``postgres_trips`` (and of any
asset that should follow its parents month by month, such as a summary): request a partition when one of its
parents' same partition was updated since the partition was last requested or updated, once no parent partition
is missing and neither the partition nor a parent is in progress. It is ``AutomationCondition.eager()`` without two
of its parts:

- ``in_latest_time_window()``: eager() follows only the newest month; here any month follows (a corrected raw
  file of 2019-03 reloads 2019-03);
- ``newly_missing()``: eager() also requests a partition that becomes missing, i.e. every new month of the
  calendar as soon as it begins, long before the TLC publishes it; here only an upstream update triggers, and a
  newly published month is the business of the source sensors.

``any_deps_updated()`` ignores a parent's update made by a run that also targets the asset itself: after a
``<service>_trips_job`` run (all four assets of a month in one run) nothing is requested again; a raw month
reported by ``lake_raw_files_sensor`` (no run) requests clean, warehouse and Postgres of that month in one run
(warehouse and Postgres follow clean through ``will_be_requested``).

A full job run is launched without an asset selection, so ``executed_with_root_target`` cannot tell that it loaded
clean too; it is not followed anyway, because clean is in progress while the run works and clean's own update
(after raw's) then counts as handled. One consequence: a job run that materialized raw and failed at clean is
followed once after it ends (one more attempt of clean, warehouse and Postgres of that month), then left alone.

``taxi_automation_sensor`` evaluates the conditions of every asset, one run per requested month
(``emit_backfills=False``); stopped by default, like every sensor of the location.
"""

from __future__ import annotations

import dagster as dg

AUTOMATION_SENSOR_NAME = "taxi_automation_sensor"
AUTOMATION_SENSOR_INTERVAL = 60  # a tick reads the event log only; Dagster's default is 30 s


def follows_upstream() -> dg.AutomationCondition:
    """A partition is requested once after any parent's same partition was updated (any month, not only the latest)."""
    condition = dg.AutomationCondition
    return (
        condition.any_deps_updated().since_last_handled()
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
