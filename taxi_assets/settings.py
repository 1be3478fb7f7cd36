"""Every setting of taxi_assets: the environment variables, their defaults and their parsing, in one place.

Nothing else in the package reads the environment. A wrong or missing setting is a ``ConfigurationError`` whose
message names the variable. This module imports nothing of the package but ``months`` (and not Dagster), so
every layer can use it: ``targets.py`` maps the settings to resources, the CLI reads its data folder here.

Secrets (``TAXI_POSTGRES_URL``, ``TAXI_GCP_CREDENTIALS``, the webhook URL, the SMTP login) are passed on to the
resources by name, as ``dg.EnvVar``, and resolved at run time: ``is_set`` tells whether one is given. The only
secret read here is the GCP key, to check at load that it is readable (``gcp_settings().credentials``, never
shown).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from taxi_assets.months import Month

# --- the environment variables ----------------------------------------------------------------------------------
TARGET = "TAXI_TARGET"
DATA_DIR = "TAXI_DATA_DIR"
SOURCE = "TAXI_SOURCE"
TLC_URL = "TAXI_TLC_URL"
MIRROR_URL = "TAXI_SOURCE_URL"
FIRST_MONTH = "TAXI_FIRST_MONTH"
POSTGRES_URL = "TAXI_POSTGRES_URL"
BACKFILL_MONTHS_PER_RUN = "TAXI_BACKFILL_MONTHS_PER_RUN"
SENSOR_INTERVAL = "TAXI_SENSOR_INTERVAL_SECONDS"
FRESHNESS_LAST_MONTH = "TAXI_FRESHNESS_LAST_MONTH"
DOWNLOAD_CONCURRENCY = "TAXI_DOWNLOAD_CONCURRENCY"
CLEAN_PROCESSES = "TAXI_CLEAN_PROCESSES"
# The gcp target.
GCS_BUCKET = "TAXI_GCS_BUCKET"
GCP_PROJECT = "TAXI_GCP_PROJECT"
BQ_DATASET = "TAXI_BQ_DATASET"
BQ_LOCATION = "TAXI_BQ_LOCATION"
GCP_CREDENTIALS = "TAXI_GCP_CREDENTIALS"
GCS_ENDPOINT = "STORAGE_EMULATOR_HOST"
BQ_ENDPOINT = "TAXI_BQ_API_ENDPOINT"
# Failure alerts.
ALERT_WEBHOOK_URL = "TAXI_ALERT_WEBHOOK_URL"
UI_BASE_URL = "TAXI_UI_BASE_URL"
SMTP_HOST = "TAXI_SMTP_HOST"
SMTP_PORT = "TAXI_SMTP_PORT"
SMTP_SECURITY = "TAXI_SMTP_SECURITY"
SMTP_USER = "TAXI_SMTP_USER"
SMTP_PASSWORD = "TAXI_SMTP_PASSWORD"
ALERT_EMAIL_FROM = "TAXI_ALERT_EMAIL_FROM"
ALERT_EMAIL_TO = "TAXI_ALERT_EMAIL_TO"

# --- defaults and allowed values --------------------------------------------------------------------------------
TARGETS = ("local", "gcp")
SOURCES = ("tlc", "mirror")
DEFAULT_DATA_DIR = "data"
SOURCE_SCHEMES = ("http", "https", "file")  # of a source URL; without a scheme it is a local folder
DEFAULT_TLC_URL = "https://d37ci6vzurychx.cloudfront.net"
DEFAULT_MIRROR_URL = "https://github.com/DataTalksClub/nyc-tlc-data/releases/download"
DEFAULT_FIRST_MONTH = "2019-01"
DEFAULT_DATASET = "nyc_taxi"
DEFAULT_LOCATION = "US"
DEFAULT_DOWNLOAD_CONCURRENCY = 4
DEFAULT_CLEAN_PROCESSES = 1

_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
_DATASET_NAME = re.compile(r"^[A-Za-z0-9_]{1,1024}$")


class ConfigurationError(ValueError):
    """A setting (environment variable) is missing or wrong; the message names it."""


def value(name: str) -> str | None:
    """The setting ``name``, stripped; ``None`` when unset or blank."""
    return (os.environ.get(name) or "").strip() or None


def is_set(name: str) -> bool:
    return value(name) is not None


def _month(name: str, default: str | None, example: str) -> str | None:
    text = value(name) or default
    if text is None:
        return None
    try:
        return Month.parse(text).key
    except ValueError:
        raise ConfigurationError(f"{name}={text!r} is not a month like {example}") from None


def _whole_number(name: str, what: str) -> int | None:
    text = value(name)
    if text is None:
        return None
    if not text.isdecimal() or int(text) < 1:
        raise ConfigurationError(f"{name}={text!r} is not {what}")
    return int(text)


def _required(name: str, what: str) -> str:
    text = value(name)
    if text is None:
        raise ConfigurationError(f"{name} is not set: {TARGET}=gcp needs {what}")
    return text


# --- what the code location reads -------------------------------------------------------------------------------
def target() -> str:
    name = (value(TARGET) or "local").lower()
    if name not in TARGETS:
        raise ConfigurationError(f"{TARGET}={name!r} is not one of {', '.join(TARGETS)}")
    return name


def data_dir() -> Path:
    """The embedded default's folder (lake, DuckDB file, embedded Postgres), absolute."""
    return Path(value(DATA_DIR) or DEFAULT_DATA_DIR).resolve()


def source() -> str:
    """``tlc`` (the default) or ``mirror``."""
    name = (value(SOURCE) or "").lower()
    if not name and is_set(MIRROR_URL):
        # Before the TLC source existed, TAXI_SOURCE_URL alone meant the mirror: say so rather than ignore it.
        raise ConfigurationError(
            f"{MIRROR_URL} is set but {SOURCE} is not: set {SOURCE}=mirror to read the mirror there, "
            f"or {SOURCE}=tlc (the default) and {TLC_URL} for the TLC's parquet files"
        )
    name = name or "tlc"
    if name not in SOURCES:
        raise ConfigurationError(f"{SOURCE}={name!r} is not one of {', '.join(SOURCES)}")
    return name


def source_url(source_name: str) -> str:
    """The download root of the source: ``TAXI_TLC_URL`` or, for the mirror, ``TAXI_SOURCE_URL``: an http(s) or
    file URL, or a local folder."""
    name, default = (MIRROR_URL, DEFAULT_MIRROR_URL) if source_name == "mirror" else (TLC_URL, DEFAULT_TLC_URL)
    url = value(name) or default
    scheme = re.match(r"([A-Za-z][A-Za-z0-9+.-]+)://", url)
    if scheme and scheme.group(1).lower() not in SOURCE_SCHEMES:
        # Only the scheme is named: the rest of the URL may hold credentials.
        raise ConfigurationError(f"{name}: {scheme.group(1)}:// is not supported (http, https, file, or a folder)")
    return url


def first_month() -> str:
    return _month(FIRST_MONTH, DEFAULT_FIRST_MONTH, "2019-01")


def freshness_last_month() -> str | None:
    """The newest month the freshness check expects (unset: every month that is due)."""
    return _month(FRESHNESS_LAST_MONTH, None, "2021-07")


def sensor_interval_seconds() -> int | None:
    """One minimum interval for every sensor (unset: each sensor's own)."""
    return _whole_number(SENSOR_INTERVAL, "a positive number of seconds")


def backfill_months_per_run() -> int | None:
    """Months per run of a backfill (unset: a whole range in one run)."""
    return _whole_number(BACKFILL_MONTHS_PER_RUN, "a whole number of months >= 1")


def download_concurrency() -> int:
    """Months a range run downloads at the same time (1: one after another)."""
    return _whole_number(DOWNLOAD_CONCURRENCY, "a whole number of downloads >= 1") or DEFAULT_DOWNLOAD_CONCURRENCY


def clean_processes() -> int:
    """Processes a range run cleans its months in at most (1, the default: one after another, in the step's
    process). Opt-in: a worker costs about 250 MB and 2 s to start, and on 2 cores two workers cleaned six
    1.4M-row months no faster than one process (docs/BENCHMARKS.md)."""
    return _whole_number(CLEAN_PROCESSES, "a whole number of processes >= 1") or DEFAULT_CLEAN_PROCESSES


@dataclass(frozen=True)
class GcpSettings:
    """The gcp target's settings, checked. ``credentials`` is the key itself (or its path): never shown."""

    bucket: str
    project: str
    dataset: str
    location: str
    credentials: str | None = field(default=None, repr=False)


def gcp_settings(postgres: bool = True) -> GcpSettings:
    """Every setting of the gcp target, checked now, so a wrong one fails the code location's load by name
    (``postgres=False``: the lake's and the warehouse's only)."""
    bucket = _required(GCS_BUCKET, "the GCS bucket of the lake")
    if not _BUCKET_NAME.match(bucket):
        raise ConfigurationError(
            f"{GCS_BUCKET}={bucket!r} is not a bucket name (give the bare name, no gs://, no path)"
        )
    project = _required(GCP_PROJECT, "the Google Cloud project of BigQuery")
    if postgres:
        _required(POSTGRES_URL, "a Postgres server URL (such as Cloud SQL)")
    dataset = value(BQ_DATASET) or DEFAULT_DATASET
    if not _DATASET_NAME.match(dataset):
        raise ConfigurationError(
            f"{BQ_DATASET}={dataset!r} is not a BigQuery dataset id (letters, digits, underscores)"
        )
    location = value(BQ_LOCATION) or DEFAULT_LOCATION
    return GcpSettings(bucket, project, dataset, location, credentials=value(GCP_CREDENTIALS))


class SmtpSecurity(Enum):
    """How the alert email's SMTP connection is secured (``TAXI_SMTP_SECURITY``)."""

    starttls = "starttls"  # upgrade a plain connection
    ssl = "ssl"  # implicit TLS
    none = "none"


def alert_settings() -> dict[str, Any]:
    """The plain (not secret) alert settings that are set, checked, by the ``alerts`` resource's field names (the
    resource is their one declaration; targets.py adds the secret ones by name)."""
    security = (value(SMTP_SECURITY) or "").lower() or None
    if security is not None and security not in SmtpSecurity.__members__:
        raise ConfigurationError(f"{SMTP_SECURITY}={security!r} is not one of {', '.join(SmtpSecurity.__members__)}")
    port = value(SMTP_PORT)
    if port is not None and not (port.isdecimal() and 1 <= int(port) <= 65535):
        raise ConfigurationError(f"{SMTP_PORT}={port!r} is not a port number")
    recipients = [a.strip() for a in (value(ALERT_EMAIL_TO) or "").split(",") if a.strip()]
    found = {
        "ui_base_url": value(UI_BASE_URL),
        "smtp_host": value(SMTP_HOST),
        "smtp_port": int(port) if port else None,
        "smtp_security": SmtpSecurity(security) if security else None,
        "email_from": value(ALERT_EMAIL_FROM),
        "email_to": recipients or None,
    }
    return {name: setting for name, setting in found.items() if setting is not None}
