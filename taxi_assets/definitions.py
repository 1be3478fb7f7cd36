"""The code location: every asset, check, job, schedule and sensor, with the resources of the target."""

from __future__ import annotations

import warnings

import dagster as dg

from taxi_assets.assets.summary import build_summary_assets
from taxi_assets.assets.trips import build_trip_assets
from taxi_assets.assets.zones import build_zone_assets
from taxi_assets.automation.executor import taxi_executor
from taxi_assets.automation.freshness import build_freshness_checks
from taxi_assets.automation.schedules import build_schedules
from taxi_assets.automation.sensors import build_sensors
from taxi_assets.jobs import taxi_zones_job, trips_jobs
from taxi_assets.services import SERVICES
from taxi_assets.targets import Target, load_target

# BackfillPolicy is beta in 1.13 but is what makes a range of months one run; say so once, not per asset.
warnings.filterwarnings("ignore", message="Parameter `backfill_policy`", category=dg.BetaWarning)


def build_defs(target: Target) -> dg.Definitions:
    trip_assets = [
        asset
        for service in SERVICES.values()
        for asset in build_trip_assets(service, target.kinds, target.backfill_policy, target.calendar)
    ]
    summary_assets = [
        asset
        for service in SERVICES.values()
        for asset in build_summary_assets(service, target.kinds, target.backfill_policy, target.calendar)
    ]
    return dg.Definitions(
        assets=[*trip_assets, *summary_assets, *build_zone_assets(target.kinds)],
        asset_checks=build_freshness_checks(target.calendar, last_month=target.automation.freshness_last_month),
        jobs=[*trips_jobs.values(), taxi_zones_job],
        schedules=build_schedules(target.calendar),
        sensors=build_sensors(
            target.calendar,
            interval_seconds=target.automation.sensor_interval_seconds,
            freshness_last_month=target.automation.freshness_last_month,
        ),
        resources=target.resources,
        # One process for a month (a step process would cost its start); for a range of months, two steps at once in
        # processes forked from a preloaded forkserver, so the warehouse and Postgres legs use both cores. It first
        # frees the pool slots of runs whose worker was killed (automation/executor.py, dead_runs.py).
        executor=taxi_executor,
    )


defs = build_defs(load_target())
