"""Metadata the assets report, built from the data contract and the stores' results."""

from __future__ import annotations

from typing import Any

import dagster as dg

from taxi_assets.cleaning import CleaningReport
from taxi_assets.resources.stores import LoadResult
from taxi_assets.services import DataContract


def column_schema(contract: DataContract) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[
            dg.TableColumn(c.name, str(c.type), description=c.description or None, constraints=None)
            for c in contract.columns
        ]
    )


def schema_metadata(contract: DataContract) -> dict[str, Any]:
    """On the definition (shown before anything is materialized) and on every materialization."""
    return {"dagster/column_schema": column_schema(contract)}


def lake_file_metadata(uri: str, size: int) -> dict[str, Any]:
    return {"dagster/uri": uri, "bytes": dg.MetadataValue.int(size)}


def cleaning_metadata(report: CleaningReport) -> dict[str, Any]:
    return {
        "dagster/row_count": report.rows_written,
        "rows_read": report.rows_read,
        "rows_dropped": report.rows_dropped,
        **{f"dropped_{rule}": count for rule, count in report.dropped.items()},
    }


def load_metadata(result: LoadResult, storage_kind: str) -> dict[str, Any]:
    """``dagster/row_count`` is what this materialization holds: the month's rows (or the lookup's), read back."""
    return {
        "dagster/table_name": result.table,
        "dagster/storage_kind": storage_kind,
        "dagster/row_count": result.rows,
        **result.metadata,
    }
