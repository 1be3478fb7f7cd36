"""Metadata the assets report, built from the data contract and the stores' results."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dagster as dg

from taxi_assets.cleaning import DROP_RULES, CleaningReport
from taxi_assets.resources.stores import LoadResult
from taxi_assets.services import DataContract
from taxi_assets.source import SourceIdentity

# Who to ask about these assets (shown in the UI, searchable in the catalog).
OWNERS = ["team:taxi-data"]


@dataclass(frozen=True)
class TargetKinds:
    """The storage kinds the assets show in the UI (``kinds``) for a target (targets.py picks them)."""

    lake: str
    warehouse: str


def code_version(contract: DataContract, step_version: int) -> str:
    """An asset's code version: its step's own version (bump it when the step's logic changes) and the data
    contract's fingerprint (a new column or type is new code for every asset of the dataset)."""
    return f"{step_version}-{contract.fingerprint}"


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


def cleaning_metadata(report: CleaningReport, *, partitioned: bool = True) -> dict[str, Any]:
    """The rows cleaning kept (a month's, or a whole lookup's) and the rows each rule dropped."""
    return {
        "dagster/partition_row_count" if partitioned else "dagster/row_count": report.rows_written,
        "rows_read": report.rows_read,
        "rows_dropped": report.rows_dropped,
        **{f"dropped_{rule}": count for rule, count in report.dropped.items()},
    }


def recorded_cleaning_report(metadata: dict[str, Any]) -> CleaningReport:
    """The report ``cleaning_metadata`` recorded for a month (the checks of a month not cleaned again use it)."""
    return CleaningReport(
        rows_read=metadata["rows_read"],
        rows_written=metadata["dagster/partition_row_count"],
        dropped={rule: metadata.get(f"dropped_{rule}", 0) for rule in DROP_RULES},
    )


SOURCE_VERSION = "source_version"


def source_identity_metadata(identity: SourceIdentity) -> dict[str, Any]:
    """The source file's identity as the raw month records it; ``source_version`` is its data version."""
    fields = {"source_etag": identity.etag, "source_last_modified": identity.last_modified}
    return {SOURCE_VERSION: identity.version, **{k: v for k, v in fields.items() if v}}


def load_metadata(result: LoadResult, storage_kind: str) -> dict[str, Any]:
    """Counts read back from the store: ``dagster/partition_row_count`` the month's rows, ``dagster/row_count``
    the whole table's (every month in it); for an unpartitioned lookup, its rows."""
    counts = (
        {"dagster/row_count": result.rows}
        if result.table_rows is None
        else {"dagster/partition_row_count": result.rows, "dagster/row_count": result.table_rows}
    )
    return {"dagster/table_name": result.table, "dagster/storage_kind": storage_kind, **counts, **result.metadata}
