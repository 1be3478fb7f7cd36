"""The code location: every asset, check, job, schedule and sensor, with the resources of the target."""

from __future__ import annotations

import dagster as dg

from taxi_assets.assets.trips import build_trip_assets
from taxi_assets.assets.zones import build_zone_assets
from taxi_assets.jobs import taxi_zones_job, trips_jobs
from taxi_assets.services import SERVICES
from taxi_assets.targets import Target, load_target


def build_defs(target: Target) -> dg.Definitions:
    trip_assets = [asset for service in SERVICES.values() for asset in build_trip_assets(service, target.kinds)]
    return dg.Definitions(
        assets=[*trip_assets, *build_zone_assets(target.kinds)],
        jobs=[*trips_jobs.values(), taxi_zones_job],
        resources=target.resources,
        # Steps share files, not memory: one process avoids paying Dagster's import once per step.
        executor=dg.in_process_executor,
    )


defs = build_defs(load_target())
