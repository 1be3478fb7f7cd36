"""The one place that maps the deployment target (``TAXI_TARGET``) to resources, from the settings of settings.py.

``local`` (the default) is the embedded default: a folder as the lake, DuckDB as the warehouse and an embedded
Postgres, all under ``TAXI_DATA_DIR`` (default ``./data``). ``gcp`` keeps the lake in GCS and the warehouse in
BigQuery. Both take Postgres from ``TAXI_POSTGRES_URL`` when it is set.

Every target reads its files from the source chosen by ``TAXI_SOURCE``: ``tlc`` (the default, the TLC's own
parquet files at ``TAXI_TLC_URL``) or ``mirror`` (the course's CSV.gz files at ``TAXI_SOURCE_URL``), and offers
the months from ``TAXI_FIRST_MONTH`` (default 2019-01) on. Every target also gets the ``alerts`` resource
(where failure alerts go: ``TAXI_ALERT_WEBHOOK_URL``,
``TAXI_SMTP_*``, ``TAXI_ALERT_EMAIL_*``, ``TAXI_UI_BASE_URL``) and the automation settings of the sensors and the
freshness check (``TAXI_SENSOR_INTERVAL_SECONDS``, ``TAXI_FRESHNESS_LAST_MONTH``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

from taxi_assets import settings
from taxi_assets.assets.metadata import TargetKinds
from taxi_assets.automation.alerts import AlertChannels
from taxi_assets.partitions import Calendar
from taxi_assets.resources.duckdb_warehouse import DuckDBWarehouse
from taxi_assets.resources.io_managers import AtomicDuckDBPandasIOManager, PostgresPandasIOManager
from taxi_assets.resources.lake import LocalLake
from taxi_assets.resources.postgres import PostgresStore
from taxi_assets.secrets import redact
from taxi_assets.services import LAYOUTS, SourceLayout
from taxi_assets.settings import ConfigurationError
from taxi_assets.source import TaxiSource

KINDS = {
    "local": TargetKinds(lake="filesystem", warehouse="duckdb"),
    "gcp": TargetKinds(lake="gcs", warehouse="bigquery"),
}


def _env_or_none(name: str) -> dg.EnvVar | None:
    # EnvVar keeps the value out of the UI's config view; None selects the documented default.
    return dg.EnvVar(name) if settings.is_set(name) else None


def source_layout() -> SourceLayout:
    """The layout named by ``TAXI_SOURCE`` (``tlc`` when unset)."""
    return LAYOUTS[settings.source()]


def calendar(layout: SourceLayout) -> Calendar:
    """The months offered: from ``TAXI_FIRST_MONTH`` (checked against the source's last month) on."""
    first = settings.first_month()
    if layout.last_month and first > layout.last_month:
        raise ConfigurationError(
            f"{settings.FIRST_MONTH}={first} is after {layout.last_month}, the last month of {layout.description}"
        )
    return Calendar(layout=layout, first_month=first)


def local_resources(root: Path | None = None) -> dict[str, Any]:
    """The embedded default's resources, under ``root`` (default: ``TAXI_DATA_DIR``)."""
    root = root or settings.data_dir()
    postgres = PostgresStore(url=_env_or_none(settings.POSTGRES_URL), embedded_dir=str(root / "postgres"))
    warehouse = DuckDBWarehouse(database=str(root / "warehouse.duckdb"))
    return {
        "lake": LocalLake(root=str(root / "lake")),
        "warehouse": warehouse,
        "postgres": postgres,
        # The summaries' IO managers (pandas DataFrames), on the same DuckDB file and Postgres as the trips.
        "warehouse_io_manager": AtomicDuckDBPandasIOManager(database=warehouse.database, schema=warehouse.schema_name),
        "postgres_io_manager": PostgresPandasIOManager(postgres=postgres),
    }


def gcp_stores() -> dict[str, Any]:
    """The gcp target's lake (GCS) and warehouse (BigQuery), with the summaries' warehouse IO manager."""
    # Imported here: the google clients of the lake and the warehouse are only needed on this target.
    from taxi_assets.resources.bigquery import BigQueryClientResource, BigQueryWarehouse
    from taxi_assets.resources.bigquery_io_manager import AtomicBigQueryPandasIOManager
    from taxi_assets.resources.gcp_config import load_credentials
    from taxi_assets.resources.gcs_lake import GCSClientResource, GCSLake

    gcp = settings.gcp_settings(postgres=False)  # every setting checked now: a wrong one fails the load by name
    load_credentials(gcp.credentials)  # unreadable key: ConfigurationError naming the setting

    # Secrets and endpoints go in as EnvVar: resolved at run time, shown in the UI by name only.
    credentials, project = _env_or_none(settings.GCP_CREDENTIALS), dg.EnvVar(settings.GCP_PROJECT)
    bq_endpoint = _env_or_none(settings.BQ_ENDPOINT)
    return {
        "lake": GCSLake(
            bucket=dg.EnvVar(settings.GCS_BUCKET),
            gcs=GCSClientResource(
                project=project, credentials=credentials, api_endpoint=_env_or_none(settings.GCS_ENDPOINT)
            ),
        ),
        "warehouse": BigQueryWarehouse(
            bigquery=BigQueryClientResource(
                project=project, location=gcp.location, credentials=credentials, api_endpoint=bq_endpoint
            ),
            dataset=gcp.dataset,
        ),
        # The summaries' IO manager (pandas DataFrames), on the same dataset as the trips.
        "warehouse_io_manager": AtomicBigQueryPandasIOManager(
            project=project,
            location=gcp.location,
            dataset=gcp.dataset,
            credentials=credentials,
            api_endpoint=bq_endpoint,
        ),
    }


def gcp_resources() -> dict[str, Any]:
    """The gcp target: ``gcp_stores()`` and the Postgres server of ``TAXI_POSTGRES_URL`` (required here)."""
    settings.gcp_settings()
    postgres = PostgresStore(url=dg.EnvVar(settings.POSTGRES_URL))
    return {**gcp_stores(), "postgres": postgres, "postgres_io_manager": PostgresPandasIOManager(postgres=postgres)}


def alert_channels() -> AlertChannels:
    """The ``alerts`` resource, from the alert settings that are set (none set: alerts go to the sensor's log).

    The webhook URL and the SMTP login go in as ``EnvVar``: the UI shows their names, never their values.
    """
    secret = {
        "webhook_url": settings.ALERT_WEBHOOK_URL,
        "smtp_user": settings.SMTP_USER,
        "smtp_password": settings.SMTP_PASSWORD,
    }
    by_name = {attr: dg.EnvVar(name) for attr, name in secret.items() if settings.is_set(name)}
    return AlertChannels(**settings.alert_settings(), **by_name)


@dataclass(frozen=True)
class AutomationSettings:
    """Settings of the sensors and the freshness check (``None``: the documented default)."""

    # Overrides every sensor's minimum interval (tests and demos use a few seconds).
    sensor_interval_seconds: int | None = None
    # The newest month the source will ever publish (``YYYY-MM``): later months are not expected in the warehouse.
    freshness_last_month: str | None = None


def automation_settings() -> AutomationSettings:
    """``TAXI_SENSOR_INTERVAL_SECONDS`` and ``TAXI_FRESHNESS_LAST_MONTH``, checked."""
    return AutomationSettings(
        sensor_interval_seconds=settings.sensor_interval_seconds(),
        freshness_last_month=settings.freshness_last_month(),
    )


def backfill_policy() -> dg.BackfillPolicy:
    """One run for a whole range of months (the default: Dagster's per-run cost paid once), or runs of
    ``TAXI_BACKFILL_MONTHS_PER_RUN`` months, e.g. 1 on Kubernetes so each backfilled month gets its own pod."""
    months = settings.backfill_months_per_run()
    return dg.BackfillPolicy.single_run() if months is None else dg.BackfillPolicy.multi_run(months)


@dataclass(frozen=True)
class Target:
    name: str
    kinds: TargetKinds
    resources: dict[str, Any]
    backfill_policy: dg.BackfillPolicy
    automation: AutomationSettings = field(default_factory=AutomationSettings)
    calendar: Calendar = field(default_factory=Calendar)


def load_target(name: str | None = None) -> Target:
    """The target named by ``name`` or ``TAXI_TARGET``: its resources, storage kinds and automation settings."""
    name = name or settings.target()
    layout = source_layout()
    resources = local_resources() if name == "local" else gcp_resources()
    url = settings.source_url(layout.name)
    if redact(url) != url:  # credentials in it: in by name, as every secret (the UI and run snapshots show the name)
        url = dg.EnvVar(settings.MIRROR_URL if layout.name == "mirror" else settings.TLC_URL)
    source = TaxiSource(base_url=url, download_concurrency=settings.download_concurrency())
    settings.clean_processes()  # checked now: a wrong value fails the load by name (clean_trips reads it per run)
    return Target(
        name=name,
        kinds=KINDS[name],
        resources={**resources, "source": source, "alerts": alert_channels()},
        backfill_policy=backfill_policy(),
        automation=automation_settings(),
        calendar=calendar(layout),
    )
