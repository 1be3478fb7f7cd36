"""Monthly partitions, the source's publication calendar, and the months a run covers.

A service's partitions run from ``TAXI_FIRST_MONTH`` (default 2019-01), or the service's own first month if
later (fhvhv begins 2019-02), to the last complete month, or to the source's last month (the mirror ends at
2021-07). The TLC publishes a month about two months after it ends (``publication_lag_months``): month M may be
at the source from the 1st of M+2 and is due on the 1st of M+3. The schedule, the source sensor and the
freshness check all ask this calendar.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime, timezone

import dagster as dg

from taxi_assets.months import MONTH_FORMAT, Month
from taxi_assets.services import TLC, SourceLayout, TripService

START_MONTH = "2019-01"


@functools.cache
def _monthly(first_month: str, last_month: str | None) -> dg.MonthlyPartitionsDefinition:
    # end_date is exclusive: the partitions end with last_month.
    end = Month.parse(last_month).end.strftime(MONTH_FORMAT) if last_month else None
    return dg.MonthlyPartitionsDefinition(start_date=first_month, end_date=end, fmt=MONTH_FORMAT)


def _utc(now: datetime | None) -> datetime:
    """``now`` (naive: UTC) as an aware UTC time; ``None``: the current time."""
    if now is None:
        return datetime.now(timezone.utc)
    return now.replace(tzinfo=timezone.utc) if now.tzinfo is None else now.astimezone(timezone.utc)


@dataclass(frozen=True)
class Calendar:
    """Which months of each service the code location offers, and when the source publishes a month."""

    layout: SourceLayout = TLC
    first_month: str = START_MONTH

    def first_month_of(self, service: TripService) -> str:
        return max(self.first_month, service.first_month)

    def partitions(self, service: TripService) -> dg.MonthlyPartitionsDefinition:
        return _monthly(self.first_month_of(service), self.layout.last_month)

    def complete_months(self, service: TripService, now: datetime | None = None) -> list[str]:
        """Every partition month of ``service`` that has ended at ``now``, oldest first."""
        return list(self.partitions(service).get_partition_keys(current_time=_utc(now)))

    def first_publication(self, month: str) -> datetime:
        """The earliest the source may have ``month`` (00:00 UTC on the 1st of M + lag)."""
        return Month.parse(month).shifted(self.layout.publication_lag_months).start.replace(tzinfo=timezone.utc)

    def due_at(self, month: str) -> datetime:
        """When ``month`` is surely published (00:00 UTC on the 1st of M + lag + 1): late if missing after."""
        return Month.parse(month).shifted(self.layout.publication_lag_months + 1).start.replace(tzinfo=timezone.utc)

    def may_be_published(self, service: TripService, now: datetime | None = None) -> list[str]:
        """The complete months the source may have published by ``now``: worth asking it about."""
        now = _utc(now)
        return [m for m in self.complete_months(service, now) if self.first_publication(m) <= now]

    def newest_due(self, service: TripService, now: datetime) -> str | None:
        """The newest month that is due at ``now`` (what the monthly schedule loads), or ``None``."""
        now = _utc(now)
        due = [m for m in self.complete_months(service, now) if self.due_at(m) <= now]
        return due[-1] if due else None


def months_of(context: dg.AssetExecutionContext) -> list[Month]:
    """The months a run covers, oldest first: one for a partition, several for a single-run backfill range."""
    return [Month.parse(k) for k in sorted(context.partition_keys)]
