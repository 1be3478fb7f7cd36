"""The one place that maps the deployment target (``TAXI_TARGET``) to resources.

``local`` (the default) is the embedded default: a folder as the lake, DuckDB as the warehouse and an embedded
Postgres, all under ``TAXI_DATA_DIR`` (default ``./data``). ``gcp`` keeps the lake in GCS and the warehouse in
BigQuery. Both take Postgres from ``TAXI_POSTGRES_URL`` when it is set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

from taxi_assets.resources.duckdb_warehouse import DuckDBWarehouse
from taxi_assets.resources.lake import LocalLake
from taxi_assets.resources.postgres import PostgresStore
from taxi_assets.source import DEFAULT_SOURCE_URL, TaxiSource

TARGETS = ("local", "gcp")


@dataclass(frozen=True)
class TargetKinds:
    """The storage kinds the assets show in the UI for a target."""

    lake: str
    warehouse: str


KINDS = {"local": TargetKinds(lake="filesystem", warehouse="duckdb"), "gcp": TargetKinds(lake="gcs", warehouse="bigquery")}


class ConfigurationError(ValueError):
    """A setting (environment variable) is missing or wrong; the message names it."""


def current_target() -> str:
    target = os.getenv("TAXI_TARGET", "local").strip().lower() or "local"
    if target not in TARGETS:
        raise ConfigurationError(f"TAXI_TARGET={target!r} is not one of {', '.join(TARGETS)}")
    return target


def data_dir() -> Path:
    return Path(os.getenv("TAXI_DATA_DIR", "data")).resolve()


def _env_or_none(name: str) -> dg.EnvVar | None:
    # EnvVar keeps the value out of the UI's config view; None selects the documented default.
    return dg.EnvVar(name) if os.getenv(name) else None


def _source() -> TaxiSource:
    return TaxiSource(base_url=os.getenv("TAXI_SOURCE_URL", DEFAULT_SOURCE_URL))


def _postgres() -> PostgresStore:
    return PostgresStore(url=_env_or_none("TAXI_POSTGRES_URL"), embedded_dir=str(data_dir() / "postgres"))


def local_resources() -> dict[str, Any]:
    root = data_dir()
    return {
        "source": _source(),
        "lake": LocalLake(root=str(root / "lake")),
        "warehouse": DuckDBWarehouse(database=str(root / "warehouse.duckdb")),
        "postgres": _postgres(),
    }


def gcp_resources() -> dict[str, Any]:
    raise ConfigurationError("TAXI_TARGET=gcp is not available yet")


@dataclass(frozen=True)
class Target:
    name: str
    kinds: TargetKinds
    resources: dict[str, Any]


def load_target(name: str | None = None) -> Target:
    """The target named by ``name`` or ``TAXI_TARGET``: its resources and its storage kinds."""
    name = name or current_target()
    resources = local_resources() if name == "local" else gcp_resources()
    return Target(name=name, kinds=KINDS[name], resources=resources)
