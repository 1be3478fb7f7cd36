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
        return cls(key, start, _first_of_month(start, 1))

    def shifted(self, months: int) -> Month:
        """The month ``months`` later (earlier when negative)."""
        return Month.parse(f"{_first_of_month(self.start, months):{MONTH_FORMAT}}")


def _first_of_month(start: datetime, months: int) -> datetime:
    index = start.year * 12 + start.month - 1 + months
    return start.replace(year=index // 12, month=index % 12 + 1, day=1)


def months_of(context: dg.AssetExecutionContext) -> list[Month]:
    """The months a run covers, oldest first: one for a partition, several for a single-run backfill range."""
    window = context.partition_time_window
    keys = monthly_partitions.get_partition_keys_in_time_window(window)
    return [Month.parse(k) for k in keys]
