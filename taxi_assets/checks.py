"""Asset checks: what a user should be warned about, evaluated inside the asset's own run."""

from __future__ import annotations

import dagster as dg

from taxi_assets.cleaning import CleaningReport
from taxi_assets.resources.lake import Lake
from taxi_assets.services import TripService

# Real months drop well under 1% of their rows; more means a broken file or a rule gone wrong.
MAX_DROPPED_SHARE = 0.01


def dropped_share_spec(service: TripService) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        "dropped_rows_below_1_percent",
        asset=dg.AssetKey([service.name, "clean_trips"]),
        description="Cleaning dropped under 1% of the month's rows (pickup outside the month, dropoff before pickup).",
    )


def dropped_share_result(reports: dict[str, CleaningReport]) -> dg.AssetCheckResult:
    shares = {month: r.rows_dropped / r.rows_read if r.rows_read else 0.0 for month, r in reports.items()}
    worst = max(shares, key=shares.get)
    return dg.AssetCheckResult(
        passed=shares[worst] <= MAX_DROPPED_SHARE,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"worst_month": worst, "worst_dropped_share": dg.MetadataValue.float(shares[worst])},
    )


def row_count_spec(service: TripService, asset_name: str) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        "rows_match_clean_trips",
        asset=dg.AssetKey([service.name, asset_name]),
        description="Every loaded month holds exactly the rows of its clean parquet file in the lake.",
    )


def row_count_result(service: TripService, lake: Lake, loaded: dict[str, int]) -> dg.AssetCheckResult:
    expected = {month: lake.parquet_row_count(service.clean_key(month)) for month in loaded}
    mismatched = {m: f"{loaded[m]} in table, {expected[m]} in lake" for m in loaded if loaded[m] != expected[m]}
    return dg.AssetCheckResult(
        passed=not mismatched,
        metadata={"months_checked": len(loaded), "mismatches": dg.MetadataValue.json(mismatched)},
    )
