"""``lake_raw_files_sensor``: notices a raw file that another system put into the lake's raw zone (new, or replaced
with a different size) and reports it as that month's ``raw_trips`` with a new data version, requesting no run:
the automation conditions of the downstream assets load the month (no download), see conditions.py.
"""

import hashlib
import json
import re
import time

import dagster as dg
from dagster._core.definitions.data_version import DATA_VERSION_IS_USER_PROVIDED_TAG, DATA_VERSION_TAG

from taxi_assets.assets.versions import latest_metadata
from taxi_assets.automation.runs import asset_key, busy_months
from taxi_assets.partitions import Calendar
from taxi_assets.resources.lake import Lake
from taxi_assets.services import SERVICES, SourceLayout, TripService

LAKE_SENSOR_INTERVAL = 5 * 60  # one listing of the raw zone (with the sizes) per tick


def raw_month(service: TripService, key: str, layout: SourceLayout) -> str | None:
    """The month of a raw key of ``service`` (``raw/yellow/yellow_tripdata_2021-01.parquet``), or ``None``."""
    pattern = re.escape(service.raw_key("YYYY-MM", layout)).replace("YYYY\\-MM", r"(\d{4}-\d{2})")
    match = re.fullmatch(pattern, key)
    return match.group(1) if match else None


def latest_raw_bytes(instance: dg.DagsterInstance, service: TripService, month: str) -> int | None:
    """Size recorded by the latest materialization of ``<service>/raw_trips`` for ``month`` (``None``: none)."""
    metadata = latest_metadata(instance, asset_key(service, "raw_trips"), month) or {}
    return int(metadata["bytes"]) if metadata.get("bytes") is not None else None


def build_lake_sensor(
    calendar: Calendar, *, max_reports_per_tick: int = 6, minimum_interval_seconds: int = LAKE_SENSOR_INTERVAL
) -> dg.SensorDefinition:
    """``lake_raw_files_sensor``: a raw file put into the lake by someone else is reported as its month's ``raw_trips``.

    The cursor maps each raw key to the size last seen. A key that is new or changed size is:
    - left for the next tick while a run works on that month (the run may be writing it);
    - ours if the latest ``raw_trips`` materialization of the month recorded that size (our download wrote it);
    - otherwise an upload from elsewhere: the sensor reports it as a materialization of ``raw_trips`` (so the UI
      shows where the file came from), at most ``max_reports_per_tick`` per tick. The sensor requests no run: the
      automation conditions of ``clean_trips``, ``warehouse_trips`` and ``postgres_trips`` (conditions.py) follow
      the new raw month, once ``taxi_automation_sensor`` is running.
    Size is the signature because the lake has no modification times on every backend; a replacement of exactly
    the same size (practically only the same file again) is not noticed, and needs no reload.
    """

    @dg.sensor(
        name="lake_raw_files_sensor",
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Reports a raw file put into the lake's raw zone by another system (new or replaced) as a "
        "materialization of its month's raw_trips; taxi_automation_sensor then loads the month's clean, warehouse "
        "and Postgres assets, without downloading it again.",
    )
    def lake_raw_files_sensor(context: dg.SensorEvaluationContext, lake: Lake) -> dg.SensorResult:
        seen: dict[str, int] = json.loads(context.cursor) if context.cursor else {}
        cursor: dict[str, int] = {}
        events: list[dg.AssetMaterialization] = []
        for service in SERVICES.values():
            if not calendar.layout.has(service):  # its files can never be cleaned (fhvhv on the mirror)
                continue
            valid_months = set(calendar.complete_months(service))
            busy: set[str] | None = None  # asked only when a key changed
            for key, size in lake.list_objects(f"raw/{service.name}/").items():
                month = raw_month(service, key, calendar.layout)
                if month is None or month not in valid_months:
                    continue
                if seen.get(key) == size:
                    cursor[key] = size
                    continue
                busy = busy_months(context.instance, service) if busy is None else busy
                if month in busy:
                    context.log.info(f"{key}: a run is working on {service.name} {month}; looking again next tick")
                    if key in seen:
                        cursor[key] = seen[key]
                    continue
                if latest_raw_bytes(context.instance, service, month) == size:
                    cursor[key] = size  # written by our own raw_trips (or already reported)
                    continue
                if len(events) >= max_reports_per_tick:
                    if key in seen:
                        cursor[key] = seen[key]
                    continue  # next tick
                context.log.info(
                    f"{key}: {size:,} bytes put into the lake from elsewhere; reported as {service.name} {month}"
                )
                events.append(
                    dg.AssetMaterialization(
                        asset_key=asset_key(service, "raw_trips"),
                        partition=month,
                        description="Put into the lake's raw zone by another system; found by lake_raw_files_sensor.",
                        metadata={"dagster/uri": lake.uri(key), "bytes": dg.MetadataValue.int(size)},
                        # A new data version, so the month's clean step does not take the file for the old one.
                        tags=reported_data_version(key, size),
                    )
                )
                cursor[key] = size
        skip = None if events else f"No new raw file ({len(cursor)} known)"
        return dg.SensorResult(asset_events=events, cursor=json.dumps(cursor, sort_keys=True), skip_reason=skip)

    return lake_raw_files_sensor


def reported_data_version(key: str, size: int) -> dict[str, str]:
    """The data version tags of a raw file reported by the lake sensor: new at every report."""
    version = hashlib.sha256(f"{key}@{size}@{time.time_ns()}".encode()).hexdigest()[:16]
    return {DATA_VERSION_TAG: version, DATA_VERSION_IS_USER_PROVIDED_TAG: "true"}
