"""The one place that maps the deployment target (``TAXI_TARGET``) to resources.

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

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

from taxi_assets import alerts
from taxi_assets.freshness import LAST_MONTH_ENV
from taxi_assets.months import Month
from taxi_assets.partitions import START_MONTH, Calendar
from taxi_assets.resources.alerts import AlertChannels
from taxi_assets.resources.duckdb_warehouse import DuckDBWarehouse
from taxi_assets.resources.io_managers import AtomicDuckDBPandasIOManager, PostgresPandasIOManager
from taxi_assets.resources.lake import LocalLake
from taxi_assets.resources.postgres import PostgresStore
from taxi_assets.services import LAYOUTS, SourceLayout
from taxi_assets.settings import ConfigurationError
from taxi_assets.source import DEFAULT_SOURCE_URL, DEFAULT_TLC_URL, TaxiSource

TARGETS = ("local", "gcp")
SENSOR_INTERVAL_ENV = "TAXI_SENSOR_INTERVAL_SECONDS"
SOURCE_ENV = "TAXI_SOURCE"
TLC_URL_ENV = "TAXI_TLC_URL"
MIRROR_URL_ENV = "TAXI_SOURCE_URL"
FIRST_MONTH_ENV = "TAXI_FIRST_MONTH"


@dataclass(frozen=True)
class TargetKinds:
    """The storage kinds the assets show in the UI for a target."""

    lake: str
    warehouse: str


KINDS = {
    "local": TargetKinds(lake="filesystem", warehouse="duckdb"),
    "gcp": TargetKinds(lake="gcs", warehouse="bigquery"),
}


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


def source_layout() -> SourceLayout:
    """The layout named by ``TAXI_SOURCE`` (``tlc`` when unset)."""
    name = (_setting(SOURCE_ENV) or "").lower()
    if not name and _setting(MIRROR_URL_ENV):
        # Before the TLC source existed, TAXI_SOURCE_URL alone meant the mirror: say so rather than ignore it.
        raise ConfigurationError(
            f"{MIRROR_URL_ENV} is set but {SOURCE_ENV} is not: set {SOURCE_ENV}=mirror to read the mirror there, "
            f"or {SOURCE_ENV}=tlc (the default) and {TLC_URL_ENV} for the TLC's parquet files"
        )
    layout = LAYOUTS.get(name or "tlc")
    if layout is None:
        raise ConfigurationError(f"{SOURCE_ENV}={name!r} is not one of {', '.join(LAYOUTS)}")
    return layout


def calendar(layout: SourceLayout) -> Calendar:
    """The months offered: from ``TAXI_FIRST_MONTH`` (checked against the source's last month) on."""
    first = _setting(FIRST_MONTH_ENV) or START_MONTH
    if not _is_month(first):
        raise ConfigurationError(f"{FIRST_MONTH_ENV}={first!r} is not a month like 2019-01")
    if layout.last_month and first > layout.last_month:
        raise ConfigurationError(
            f"{FIRST_MONTH_ENV}={first} is after {layout.last_month}, the last month of {layout.description}"
        )
    return Calendar(layout=layout, first_month=first)


def _is_month(text: str) -> bool:
    try:
        return Month.parse(text).key == text
    except ValueError:
        return False


def _source(layout: SourceLayout) -> TaxiSource:
    if layout.name == "mirror":
        return TaxiSource(base_url=_setting(MIRROR_URL_ENV) or DEFAULT_SOURCE_URL)
    return TaxiSource(base_url=_setting(TLC_URL_ENV) or DEFAULT_TLC_URL)


def _postgres() -> PostgresStore:
    return PostgresStore(url=_env_or_none("TAXI_POSTGRES_URL"), embedded_dir=str(data_dir() / "postgres"))


def local_resources() -> dict[str, Any]:
    root = data_dir()
    postgres, warehouse = _postgres(), DuckDBWarehouse(database=str(root / "warehouse.duckdb"))
    return {
        "lake": LocalLake(root=str(root / "lake")),
        "warehouse": warehouse,
        "postgres": postgres,
        # The summaries' IO managers (pandas DataFrames), on the same DuckDB file and Postgres as the trips.
        "warehouse_io_manager": AtomicDuckDBPandasIOManager(database=warehouse.database, schema=warehouse.schema_name),
        "postgres_io_manager": PostgresPandasIOManager(postgres=postgres),
    }


def gcp_resources() -> dict[str, Any]:
    # Imported here: the google clients of the lake and the warehouse are only needed on this target.
    from taxi_assets.resources import gcp_config as gcp
    from taxi_assets.resources.bigquery import BigQueryClientResource, BigQueryWarehouse
    from taxi_assets.resources.gcs_lake import GCSClientResource, GCSLake
    from taxi_assets.resources.io_managers import AtomicBigQueryPandasIOManager

    # Check every setting now, so a wrong one fails the code location's load with its name, not a run later.
    gcp.check_bucket_name(gcp.required_env(gcp.BUCKET, "the GCS bucket of the lake"))
    gcp.required_env(gcp.PROJECT, "the Google Cloud project of BigQuery")
    gcp.required_env(gcp.POSTGRES_URL, "a Postgres server URL (such as Cloud SQL)")
    dataset = gcp.check_dataset_name(os.getenv(gcp.DATASET, "").strip() or gcp.DEFAULT_DATASET)
    location = os.getenv(gcp.LOCATION, "").strip() or gcp.DEFAULT_LOCATION
    gcp.load_credentials(os.getenv(gcp.CREDENTIALS))  # unreadable key: ConfigurationError naming the setting

    # Secrets and endpoints go in as EnvVar: resolved at run time, shown in the UI by name only.
    credentials = _env_or_none(gcp.CREDENTIALS)
    postgres = PostgresStore(url=dg.EnvVar(gcp.POSTGRES_URL))
    return {
        "lake": GCSLake(
            bucket=dg.EnvVar(gcp.BUCKET),
            gcs=GCSClientResource(
                project=dg.EnvVar(gcp.PROJECT), credentials=credentials, api_endpoint=_env_or_none(gcp.GCS_ENDPOINT)
            ),
        ),
        "warehouse": BigQueryWarehouse(
            bigquery=BigQueryClientResource(
                project=dg.EnvVar(gcp.PROJECT),
                location=location,
                credentials=credentials,
                api_endpoint=_env_or_none(gcp.BQ_ENDPOINT),
            ),
            dataset=dataset,
        ),
        "postgres": postgres,
        # The summaries' IO managers (pandas DataFrames), on the same dataset and Postgres as the trips.
        "warehouse_io_manager": AtomicBigQueryPandasIOManager(
            project=dg.EnvVar(gcp.PROJECT),
            location=location,
            dataset=dataset,
            credentials=credentials,
            api_endpoint=_env_or_none(gcp.BQ_ENDPOINT),
        ),
        "postgres_io_manager": PostgresPandasIOManager(postgres=postgres),
    }


def _setting(name: str) -> str | None:
    return (os.getenv(name) or "").strip() or None


def alert_channels() -> AlertChannels:
    """The ``alerts`` resource, from the alert settings that are set (none set: alerts go to the sensor's log).

    The webhook URL and the SMTP login go in as ``EnvVar``: the UI shows their names, never their values.
    """
    security = (_setting(alerts.SMTP_SECURITY) or "").lower() or None
    if security is not None and security not in alerts.SMTP_SECURITIES:
        raise ConfigurationError(
            f"{alerts.SMTP_SECURITY}={security!r} is not one of {', '.join(alerts.SMTP_SECURITIES)}"
        )
    port = _setting(alerts.SMTP_PORT)
    if port is not None and not (port.isdecimal() and 1 <= int(port) <= 65535):
        raise ConfigurationError(f"{alerts.SMTP_PORT}={port!r} is not a port number")
    recipients = _setting(alerts.EMAIL_TO)
    settings = {
        "webhook_url": _env_or_none(alerts.WEBHOOK_URL),
        "smtp_user": _env_or_none(alerts.SMTP_USER),
        "smtp_password": _env_or_none(alerts.SMTP_PASSWORD),
        "ui_base_url": _setting(alerts.UI_BASE_URL),
        "smtp_host": _setting(alerts.SMTP_HOST),
        "smtp_port": int(port) if port else None,
        "smtp_security": security,
        "email_from": _setting(alerts.EMAIL_FROM),
        "email_to": [a.strip() for a in recipients.split(",") if a.strip()] if recipients else None,
    }
    return AlertChannels(**{name: value for name, value in settings.items() if value is not None})


@dataclass(frozen=True)
class AutomationSettings:
    """Settings of the sensors and the freshness check (``None``: the documented default)."""

    # Overrides every sensor's minimum interval (tests and demos use a few seconds).
    sensor_interval_seconds: int | None = None
    # The newest month the source will ever publish (``YYYY-MM``): later months are not expected in the warehouse.
    freshness_last_month: str | None = None


def automation_settings() -> AutomationSettings:
    """``TAXI_SENSOR_INTERVAL_SECONDS`` and ``TAXI_FRESHNESS_LAST_MONTH``, checked."""
    interval = _setting(SENSOR_INTERVAL_ENV)
    if interval is not None and (not interval.isdecimal() or int(interval) < 1):
        raise ConfigurationError(f"{SENSOR_INTERVAL_ENV}={interval!r} is not a positive number of seconds")
    last_month = _setting(LAST_MONTH_ENV)
    if last_month is not None and not _is_month(last_month):
        raise ConfigurationError(f"{LAST_MONTH_ENV}={last_month!r} is not a month like 2021-07")
    return AutomationSettings(
        sensor_interval_seconds=int(interval) if interval else None, freshness_last_month=last_month
    )


def backfill_policy() -> dg.BackfillPolicy:
    """One run for a whole range of months (the default: Dagster's per-run cost paid once), or runs of
    ``TAXI_BACKFILL_MONTHS_PER_RUN`` months, e.g. 1 on Kubernetes so each backfilled month gets its own pod."""
    setting = os.getenv("TAXI_BACKFILL_MONTHS_PER_RUN", "").strip()
    if not setting:
        return dg.BackfillPolicy.single_run()
    if not setting.isdigit() or int(setting) < 1:
        raise ConfigurationError(f"TAXI_BACKFILL_MONTHS_PER_RUN={setting!r} is not a whole number of months >= 1")
    return dg.BackfillPolicy.multi_run(int(setting))


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
    name = name or current_target()
    layout = source_layout()
    resources = local_resources() if name == "local" else gcp_resources()
    return Target(
        name=name,
        kinds=KINDS[name],
        resources={**resources, "source": _source(layout), "alerts": alert_channels()},
        backfill_policy=backfill_policy(),
        automation=automation_settings(),
        calendar=calendar(layout),
    )
