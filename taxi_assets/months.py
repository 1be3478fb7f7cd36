"""Calendar months, the unit of every partition and file: ``Month`` is the one parser of ``YYYY-MM`` keys.

No Dagster here, so the CLI and the fake source use it without loading Dagster.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

MONTH_FORMAT = "%Y-%m"
_KEY = re.compile(r"([0-9]{4})-(0[1-9]|1[0-2])")


@dataclass(frozen=True)
class Month:
    """One calendar month: its key (``YYYY-MM``) and its half-open time range [start, end), naive."""

    key: str
    start: datetime
    end: datetime

    @classmethod
    def parse(cls, key: str) -> Month:
        """``"2021-01"`` -> that month; anything else (``"2021-1"``, ``"2021-13"``) is a ``ValueError`` naming it."""
        match = _KEY.fullmatch(key.strip()) if isinstance(key, str) else None
        if match is None:
            raise ValueError(f"malformed month {key!r} (expected YYYY-MM, e.g. 2021-01)")
        start = datetime(int(match.group(1)), int(match.group(2)), 1)
        return cls(f"{start:{MONTH_FORMAT}}", start, _first_of_month(start, 1))

    @property
    def year(self) -> int:
        return self.start.year

    @property
    def month(self) -> int:
        return self.start.month

    def shifted(self, months: int) -> Month:
        """The month ``months`` later (earlier when negative)."""
        return Month.parse(f"{_first_of_month(self.start, months):{MONTH_FORMAT}}")


def _first_of_month(start: datetime, months: int) -> datetime:
    index = start.year * 12 + start.month - 1 + months
    return start.replace(year=index // 12, month=index % 12 + 1, day=1)


def months_between(first: str, last: str) -> list[str]:
    """Every month key from ``first`` to ``last``, both included (empty when ``last`` is before ``first``)."""
    months, month, end = [], Month.parse(first), Month.parse(last)
    while month.start <= end.start:
        months.append(month.key)
        month = month.shifted(1)
    return months
