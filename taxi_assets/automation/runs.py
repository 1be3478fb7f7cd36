"""What the instance knows of the trip assets' months: loaded, or being worked on by a run. The schedules and the
sensors ask it before they request a month."""

from collections.abc import Sequence

import dagster as dg

from taxi_assets.assets.trips import TRIP_ASSETS
from taxi_assets.jobs import trips_job_name
from taxi_assets.months import months_between
from taxi_assets.services import TripService

# The tags Dagster puts on runs of one partition, or of a partition range (single-run backfills).
PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
BACKFILL_TAG = "dagster/backfill"
WILL_RETRY_TAG = "dagster/will_retry"
RETRY_NUMBER_TAG = "dagster/retry_number"
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def asset_key(service: TripService, name: str) -> dg.AssetKey:
    return dg.AssetKey([service.name, name])


def loaded_months(instance: dg.DagsterInstance, service: TripService, assets: Sequence[str] = TRIP_ASSETS) -> set[str]:
    """Months materialized in every one of ``assets`` of ``service``."""
    months: set[str] | None = None
    for name in assets:
        materialized = instance.get_materialized_partitions(asset_key(service, name))
        months = materialized if months is None else months & materialized
    return months or set()


def run_months(run: dg.DagsterRun) -> set[str]:
    """The months a run covers: its partition, or every month of its partition range."""
    if run.tags.get(PARTITION_TAG):
        return {run.tags[PARTITION_TAG]}
    start, end = run.tags.get(RANGE_START_TAG), run.tags.get(RANGE_END_TAG)
    if start and end:
        try:
            return set(months_between(start, end))
        except ValueError:  # a range of another partitions definition (not months): it covers none of ours
            return set()
    return set()


def run_touches(run: dg.DagsterRun, service: TripService) -> bool:
    """Whether ``run`` may write ``service``'s trips: its job, or any of its selected assets."""
    if run.asset_selection:
        return any(key.path[0] == service.name for key in run.asset_selection)
    return run.job_name == trips_job_name(service)


def busy_months(instance: dg.DagsterInstance, service: TripService) -> set[str]:
    """Months of ``service`` that a queued or running run is working on: a sensor leaves them alone."""
    runs = instance.get_runs(filters=dg.RunsFilter(statuses=IN_FLIGHT))
    return {month for run in runs if run_touches(run, service) for month in run_months(run)}
