"""Jobs: one partitioned job per service (its four assets) and one for the zone lookup."""

from __future__ import annotations

import dagster as dg

from taxi_assets.assets.trips import TRIP_ASSETS
from taxi_assets.assets.zones import GROUP as ZONES_GROUP
from taxi_assets.automation.conditions import TRIPS_JOB_TAG
from taxi_assets.automation.freshness import freshness_check_selection
from taxi_assets.services import SERVICES, TripService


def trips_job_name(service: TripService) -> str:
    return f"{service.name}_trips_job"


def trips_job(service: TripService) -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        trips_job_name(service),
        # The four trip assets: the summaries follow them by their automation condition (they also need the zone
        # lookup in the warehouse, which a month's load does not). The freshness check judges the whole table
        # against the calendar, not the month a run loads: warehouse_freshness_sensor runs it.
        selection=dg.AssetSelection.assets(*(dg.AssetKey([service.name, name]) for name in TRIP_ASSETS))
        - freshness_check_selection(),
        tags={TRIPS_JOB_TAG: service.name},  # the automation conditions tell its runs by it
        description=f"Download, clean and load a month of {service.name} trips into the lake, warehouse and Postgres.",
    )


trips_jobs = {name: trips_job(service) for name, service in SERVICES.items()}

taxi_zones_job = dg.define_asset_job(
    "taxi_zones_job",
    selection=dg.AssetSelection.groups(ZONES_GROUP),
    description="Refresh the taxi zone lookup in the lake, warehouse and Postgres.",
)
