"""Freshness checks (issue 4 fills this in)."""

import dagster as dg


def build_freshness_checks() -> list[dg.AssetChecksDefinition]:
    return []
