"""The interface shared by the table stores (the warehouse and Postgres).

A store loads a cleaned parquet object from the lake into a table, replacing one month (or, for lookups, the
whole table) atomically, and reads the result back so metadata never reports an assumed count.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import dagster as dg

from taxi_assets.months import Month
from taxi_assets.resources.lake import Lake
from taxi_assets.services import DataContract, TripService


@dataclass(frozen=True)
class LoadResult:
    table: str  # fully qualified, as a user would type it in a query
    rows: int  # rows of the month (or table) in the store, read back after the load
    metadata: dict[str, Any] = field(default_factory=dict)  # store-specific extras (job ids, URIs)
    table_rows: int | None = None  # rows of the whole table after a month's load (every month in it)


class TableStore(dg.ConfigurableResource):
    """Interface of a table store. ``DuckDBWarehouse``, ``BigQueryWarehouse`` and ``PostgresStore`` implement it."""

    # Errors a retry cannot fix (a missing or corrupt file, rows that break a constraint): the assets fail at
    # once on these instead of retrying. Connection and lock errors are not here: they may pass.
    permanent_errors: ClassVar[tuple[type[BaseException], ...]] = (FileNotFoundError,)

    @property
    def parallel_loads(self) -> int:
        """How many months of a range the store loads at once, each atomic on its own connection. 1 (one after
        another) unless the store says more are safe: DuckDB has one writer, and BigQuery's jobs are left serial."""
        return 1

    @abstractmethod
    def replace_month(self, service: TripService, month: Month, lake: Lake, key: str) -> LoadResult:
        """Replace ``month`` of ``service``'s table with the parquet object ``key`` of ``lake``, atomically."""

    @abstractmethod
    def replace_table(self, contract: DataContract, lake: Lake, key: str) -> LoadResult:
        """Replace the whole table of ``contract`` with the parquet object ``key`` of ``lake``, atomically."""

    @abstractmethod
    def month_row_count(self, service: TripService, month: Month) -> int:
        """Rows of ``month`` in ``service``'s table (0 when the table does not exist yet)."""
