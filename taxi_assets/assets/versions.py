"""Data versions: a month whose inputs did not change since it was last materialized is not done again.

``raw_trips`` gives each month the source file's identity as its data version (``SourceIdentity.version``: ETag,
Last-Modified and size, or a local file's size and modification time). Every other step of a month asks Dagster's
own stale-status resolver, the one behind the UI's "Unsynced" label, whether the month is up to date: materialized
before, with the asset's current ``code_version``, and no upstream month's data version changed since. Dagster
then records the same data version again, so the months below skip too. Before skipping, each step also checks
that its store still holds the month as recorded (a file of the same size, the same row count), so a month removed
by hand is loaded again.

A run tagged ``taxi/refresh=true`` does every month anyway (see the README's "Data versions").
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import dagster as dg
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._core.loader import LoadingContext

REFRESH_TAG = "taxi/refresh"
UNCHANGED = "unchanged"  # metadata of a month that was not done again


def refresh_requested(context: dg.AssetExecutionContext) -> bool:
    """Whether the run asks for every month to be done again, whatever the data versions say."""
    return context.run.tags.get(REFRESH_TAG, "").strip().lower() in ("true", "1", "yes")


def combined_version(versions: Sequence[str]) -> dg.DataVersion:
    """The data version of a run's months. Dagster gives every partition of a step one data version: a run of one
    month records that month's own, a range run one that changes whenever any of its months does (so a change is
    never missed; months of a range run may be done again once more than needed)."""
    if len(versions) == 1:
        return dg.DataVersion(versions[0])
    return dg.DataVersion(hashlib.sha256(";".join(versions).encode()).hexdigest()[:16])


def latest_metadata(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str) -> dict[str, Any] | None:
    """The metadata values of the latest materialization of ``key``'s ``partition``, or ``None``."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1
    ).records
    if not records or records[0].asset_materialization is None:
        return None
    return {k: v.value for k, v in records[0].asset_materialization.metadata.items()}


class _StepLoadingContext(LoadingContext):
    """The batch loader scope the resolver needs (Dagster's webserver passes its request context)."""

    def __init__(self, instance: dg.DagsterInstance):
        self._instance, self._loaders = instance, {}

    @property
    def instance(self) -> dg.DagsterInstance:
        return self._instance

    @property
    def loaders(self) -> dict:
        return self._loaders


def _asset_graph(context: dg.AssetExecutionContext):
    """The asset graph of the run's whole job. A run of some of a job's assets (a subset) sees the others as
    external assets, whose data versions Dagster reads from observations only: the resolver would then miss a new
    upstream month, so it is given the graph of the job the subset was taken from."""
    job = context.job_def
    while job.asset_selection_data is not None:
        job = job.asset_selection_data.parent_job_def
    return job.asset_layer.asset_graph


class MonthVersions:
    """What the event log says of this asset's months: up to date or not, and their last materialization."""

    def __init__(self, context: dg.AssetExecutionContext):
        self.context = context
        self.refresh = refresh_requested(context)
        instance = context.instance
        self._resolver = CachingStaleStatusResolver(instance, _asset_graph(context), _StepLoadingContext(instance))

    def last_metadata(self, month: str) -> dict[str, Any] | None:
        """The metadata values of the month's last materialization, or ``None``."""
        return latest_metadata(self.context.instance, self.context.asset_key, month)

    def up_to_date(self, month: str) -> bool:
        """Dagster sees the month as fresh: same code version, no upstream month with a new data version."""
        if self.refresh:
            return False
        return self._resolver.get_status(self.context.asset_key, month) == StaleStatus.FRESH

    def skip(self, month: str, stored: Callable[[], Mapping[str, Any]]) -> dict[str, Any] | None:
        """The previous metadata of ``month`` (marked unchanged) if the month can be skipped: it is up to date and
        every value ``stored()`` reads from the store now equals the one recorded last time; otherwise ``None``."""
        if not self.up_to_date(month):
            return None
        previous = self.last_metadata(month)
        if previous is None:
            return None
        for name, value in stored().items():
            if previous.get(name) != value:
                self.context.log.info(f"{month}: {name} is {value}, was {previous.get(name)}: doing the month again")
                return None
        self.context.log.info(f"{month}: up to date (same code version and inputs), not done again")
        return {**previous, UNCHANGED: True}
