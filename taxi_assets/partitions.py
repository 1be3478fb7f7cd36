"""Monthly partitions, and the months a run covers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import dagster as dg

START_MONTH = "2019-01"
MONTH_FORMAT = "%Y-%m"

monthly_partitions = dg.MonthlyPartitionsDefinition(start_date=START_MONTH, fmt=MONTH_FORMAT)


@dataclass(frozen=True)
class Month:
    """One calendar month: its partition key and its half-open time range [start, end)."""

    key: str
    start: datetime
    end: datetime

    @classmethod
    def parse(cls, key: str) -> Month:
        start = datetime.strptime(key, MONTH_FORMAT)
        end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
        return cls(key, start, end)


def months_of(context: dg.AssetExecutionContext) -> list[Month]:
    """The months a run covers, oldest first: one for a partition, several for a single-run backfill range."""
    window = context.partition_time_window
    keys = monthly_partitions.get_partition_keys_in_time_window(window)
    return [Month.parse(k) for k in keys]
