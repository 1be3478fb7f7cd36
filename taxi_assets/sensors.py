"""Sensors: months newly published at the source, raw files dropped into the lake, failed runs, late months.

- ``<service>_source_sensor`` asks the source (HTTP HEAD) about months not loaded yet and requests the published
  ones, oldest first, a few per tick. Its cursor remembers the months it saw published and the ones it requested,
  so it never asks the source twice about a published month nor requests a month twice.
- ``lake_raw_files_sensor`` notices a raw file that another system put into the lake's raw zone (new, or
  replaced with a different size) and reports it as that month's ``raw_trips``, requesting no run: the
  automation conditions of the downstream assets load the month (no download), see automation.py.
- ``taxi_automation_sensor`` (automation.py) evaluates those conditions.
- ``run_failure_alert_sensor`` sends an alert for every failed run, through the ``alerts`` resource (webhook
  and/or email: resources/alerts.py, alerts.py).
- ``warehouse_freshness_sensor`` reports the ``months_on_time`` check of each warehouse table (see freshness.py).

All are stopped until someone turns them on (UI, GraphQL or ``dagster sensor start``): see docs/AUTOMATION.md.
``build_sensors(interval_seconds=...)`` overrides every sensor's minimum interval: targets.py passes
``TAXI_SENSOR_INTERVAL_SECONDS`` (tests and demos use a few seconds).
"""

import hashlib
import json
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

import dagster as dg
from dagster._core.definitions.data_version import DATA_VERSION_IS_USER_PROVIDED_TAG, DATA_VERSION_TAG

from taxi_assets.alerts import FailureAlert, StepFailure, redact, run_url
from taxi_assets.assets.trips import TRIP_ASSETS
from taxi_assets.automation import AUTOMATION_SENSOR_INTERVAL, build_automation_sensor
from taxi_assets.freshness import check_evaluation, judge_on
from taxi_assets.jobs import trips_job_name, trips_jobs
from taxi_assets.months import months_between
from taxi_assets.partitions import Calendar
from taxi_assets.resources.alerts import AlertChannels
from taxi_assets.resources.lake import Lake
from taxi_assets.services import SERVICES, SourceLayout, TripService
from taxi_assets.source import SourceError, TaxiSource

SOURCE_SENSOR_INTERVAL = 15 * 60  # the TLC publishes monthly: a quarter of an hour's delay is nothing, 12 HEADs cheap
LAKE_SENSOR_INTERVAL = 5 * 60  # a listing plus one size request per raw file (one GET each on GCS)
FAILURE_SENSOR_INTERVAL = 30  # alerts should be prompt; a tick only reads the event log
FRESHNESS_SENSOR_INTERVAL = 10 * 60

# The tags Dagster puts on runs of one partition, or of a partition range (single-run backfills).
PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
BACKFILL_TAG = "dagster/backfill"
WILL_RETRY_TAG = "dagster/will_retry"
RETRY_NUMBER_TAG = "dagster/retry_number"
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def asset_key(service: TripService, name: str) -> dg.AssetKey:
    return dg.AssetKey([service.name, name])


# --------------------------------------------------------------------------------------------------------------
# What the instance knows: months loaded, months a run is working on


def loaded_months(instance: dg.DagsterInstance, service: TripService, assets: Sequence[str] = TRIP_ASSETS) -> set[str]:
    """Months materialized in every one of ``assets`` of ``service``."""
    months: set[str] | None = None
    for name in assets:
        materialized = instance.get_materialized_partitions(asset_key(service, name))
        months = materialized if months is None else months & materialized
    return months or set()


def run_months(run: dg.DagsterRun) -> set[str]:
    """The months a run covers: its partition, or every month of its partition range."""
    if run.tags.get(PARTITION_TAG):
        return {run.tags[PARTITION_TAG]}
    start, end = run.tags.get(RANGE_START_TAG), run.tags.get(RANGE_END_TAG)
    if start and end:
        try:
            return set(months_between(start, end))
        except ValueError:  # a range of another partitions definition (not months): it covers none of ours
            return set()
    return set()


def run_touches(run: dg.DagsterRun, service: TripService) -> bool:
    """Whether ``run`` may write ``service``'s trips: its job, or any of its selected assets."""
    if run.asset_selection:
        return any(key.path[0] == service.name for key in run.asset_selection)
    return run.job_name == trips_job_name(service)


def busy_months(instance: dg.DagsterInstance, service: TripService) -> set[str]:
    """Months of ``service`` that a queued or running run is working on: a sensor leaves them alone."""
    runs = instance.get_runs(filters=dg.RunsFilter(statuses=IN_FLIGHT))
    return {month for run in runs if run_touches(run, service) for month in run_months(run)}


# --------------------------------------------------------------------------------------------------------------
# Source sensor


def probe_source(source: TaxiSource, timeout_seconds: float) -> TaxiSource:
    """A copy of ``source`` for cheap questions: short timeouts and at most one retry."""
    return TaxiSource(
        base_url=source.base_url,
        timeout_seconds=min(source.timeout_seconds, timeout_seconds),
        max_retries=min(source.max_retries, 1),
        backoff_seconds=min(source.backoff_seconds, 0.5),
    )


@dataclass
class SourceCursor:
    """What a source sensor remembers between ticks (months not loaded yet; loaded ones are forgotten).

    ``published``: months the source answered as published, never asked about again; ``requested``: months
    this sensor requested, never requested again (a failed run is the failure alert's business); ``last_probed``:
    where the round of questions about unpublished months stopped, so the next tick goes on from there.
    """

    published: set[str] = field(default_factory=set)
    requested: set[str] = field(default_factory=set)
    last_probed: str | None = None

    @classmethod
    def parse(cls, raw: str | None) -> "SourceCursor":
        if not raw:
            return cls()
        data = json.loads(raw)
        return cls(set(data.get("published", [])), set(data.get("requested", [])), data.get("last_probed"))

    def dump(self) -> str:
        return json.dumps(
            {"published": sorted(self.published), "requested": sorted(self.requested), "last_probed": self.last_probed},
            separators=(",", ":"),
        )

    def forget(self, months: Iterable[str]) -> None:
        months = set(months)
        self.published -= months
        self.requested -= months


def _rotate(months: list[str], after: str | None) -> list[str]:
    """``months`` (sorted) starting after ``after`` and wrapping around: every month gets its turn."""
    if after is None:
        return months
    later = [m for m in months if m > after]
    return later + [m for m in months if m <= after]


def build_source_sensor(
    service: TripService,
    job: "dg.UnresolvedAssetJobDefinition",
    calendar: Calendar,
    *,
    max_requests_per_tick: int = 4,
    max_probes_per_tick: int = 12,
    probe_timeout_seconds: float = 10.0,
    probe_budget_seconds: float = 30.0,
    minimum_interval_seconds: int = SOURCE_SENSOR_INTERVAL,
) -> dg.SensorDefinition:
    """``<service>_source_sensor``: request the months published at the source and not loaded, oldest first.

    Each tick asks the source (HEAD) about at most ``max_probes_per_tick`` months it has not seen published,
    for at most ``probe_budget_seconds``, and stops at the first error (a source answering 5xx or too slowly
    is not asked again until the next tick). It requests at most ``max_requests_per_tick`` runs, each with
    ``run_key`` = the month. Months already loaded, or that a queued or running run covers, are skipped, and so
    are months too recent to be published (the calendar's publication lag): the source is not asked about them.
    """
    layout = calendar.layout

    @dg.sensor(
        name=f"{service.name}_source_sensor",
        job=job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=f"Requests the {service.name} months that are published at the source (HTTP HEAD) and not yet "
        f"materialized, oldest first, at most {max_requests_per_tick} per tick. Catches the TLC's late publication.",
    )
    def source_sensor(context: dg.SensorEvaluationContext, source: TaxiSource) -> dg.SensorResult:
        if not layout.has(service):
            return dg.SensorResult(
                skip_reason=f"No {service.name} files in {layout.description}: {layout.missing_reason}"
            )
        cursor = SourceCursor.parse(context.cursor)
        loaded = loaded_months(context.instance, service)
        busy = busy_months(context.instance, service)
        cursor.forget(loaded)
        candidates = calendar.may_be_published(service)
        waiting = [m for m in candidates if m not in loaded and m not in busy and m not in cursor.requested]
        ready = [m for m in waiting if m in cursor.published]
        unseen = [m for m in waiting if m not in cursor.published]

        probed, error = [], None
        if len(ready) < max_requests_per_tick and unseen:
            probe, started = probe_source(source, probe_timeout_seconds), time.monotonic()
            for month in _rotate(unseen, cursor.last_probed)[:max_probes_per_tick]:
                if time.monotonic() - started > probe_budget_seconds:
                    context.log.warning(
                        f"{service.name}: probing stopped after {probe_budget_seconds:.0f}s (slow source)"
                    )
                    break
                cursor.last_probed = month
                probed.append(month)
                try:
                    published = probe.is_published(service.source_path(month, layout))
                except SourceError as exc:
                    error = redact(str(exc), {})  # credentials in URLs only: the tick log may name the source
                    context.log.warning(f"{service.name} {month}: {error}; asking the source again next tick")
                    break
                if published:
                    context.log.info(f"{service.name} {month}: published at the source, not loaded yet")
                    cursor.published.add(month)
                    ready.append(month)

        chosen = sorted(ready)[:max_requests_per_tick]
        cursor.requested.update(chosen)
        requests = [dg.RunRequest(partition_key=month, run_key=month) for month in chosen]
        if requests:
            skip = None
        elif error:
            skip = f"Source error: {error}"
        else:
            skip = (
                f"{len(waiting)} month(s) not loaded; asked the source about {len(probed)} "
                f"({probed[0] if probed else '-'} .. {probed[-1] if probed else '-'}): none published"
            )
        return dg.SensorResult(run_requests=requests, cursor=cursor.dump(), skip_reason=skip)

    return source_sensor


# --------------------------------------------------------------------------------------------------------------
# Lake sensor


def raw_month(service: TripService, key: str, layout: SourceLayout) -> str | None:
    """The month of a raw key of ``service`` (``raw/yellow/yellow_tripdata_2021-01.parquet``), or ``None``."""
    pattern = re.escape(service.raw_key("YYYY-MM", layout)).replace("YYYY\\-MM", r"(\d{4}-\d{2})")
    match = re.fullmatch(pattern, key)
    return match.group(1) if match else None


def latest_raw_bytes(instance: dg.DagsterInstance, service: TripService, month: str) -> int | None:
    """Size recorded by the latest materialization of ``<service>/raw_trips`` for ``month`` (``None``: none)."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key(service, "raw_trips"), asset_partitions=[month]), limit=1
    ).records
    if not records or records[0].asset_materialization is None:
        return None
    value = records[0].asset_materialization.metadata.get("bytes")
    return int(value.value) if value is not None else None


def build_lake_sensor(
    calendar: Calendar, *, max_reports_per_tick: int = 6, minimum_interval_seconds: int = LAKE_SENSOR_INTERVAL
) -> dg.SensorDefinition:
    """``lake_raw_files_sensor``: a raw file put into the lake by someone else is reported as its month's ``raw_trips``.

    The cursor maps each raw key to the size last seen. A key that is new or changed size is:
    - left for the next tick while a run works on that month (the run may be writing it);
    - ours if the latest ``raw_trips`` materialization of the month recorded that size (our download wrote it);
    - otherwise an upload from elsewhere: the sensor reports it as a materialization of ``raw_trips`` (so the UI
      shows where the file came from), at most ``max_reports_per_tick`` per tick. The sensor requests no run: the
      automation conditions of ``clean_trips``, ``warehouse_trips`` and ``postgres_trips`` (automation.py) follow
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


# --------------------------------------------------------------------------------------------------------------
# Run failure alerts


def _job_label(run: dg.DagsterRun) -> str:
    if not run.job_name.startswith("__"):
        return run.job_name
    keys = sorted(k.to_user_string() for k in run.asset_selection or ())
    if not keys:
        return run.job_name
    return "assets " + ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")


def _partition_label(run: dg.DagsterRun) -> str | None:
    if run.tags.get(PARTITION_TAG):
        return run.tags[PARTITION_TAG]
    start, end = run.tags.get(RANGE_START_TAG), run.tags.get(RANGE_END_TAG)
    if start and end:
        return start if start == end else f"{start}...{end}"
    return None


def _wrapper(cls_name: str | None) -> bool:
    # Dagster's framework errors, and a dg.Failure raised from the user's error (fail_fast_on turns
    # a permanent ContractError or SourceError into one, so the retry policy skips it): the cause says more.
    return bool(cls_name) and (cls_name.startswith("Dagster") or cls_name == "Failure")


def _innermost(error) -> tuple[str, str]:
    """Class name and message of the user's error (Dagster wraps it in framework errors, or in a ``Failure``)."""
    while error is not None and error.cause is not None and _wrapper(error.cls_name):
        error = error.cause
    if error is None:
        return "", ""
    message = error.message.strip()
    if error.cls_name:  # "taxi_assets.source.SourceError: http://...": the class is shown apart
        message = re.sub(rf"^[\w.]*\b{re.escape(error.cls_name)}: ", "", message)
    return error.cls_name or "", message


def failure_alert(context: dg.RunFailureSensorContext, ui_base_url: str | None) -> FailureAlert:
    """The alert for the failed run of ``context``: job, partition, failed steps (from the event log), link."""
    run = context.dagster_run
    steps = []
    for event in context.get_step_failure_events():
        cls_name, message = _innermost(event.step_failure_data.error if event.step_failure_data else None)
        steps.append(StepFailure(event.step_key or "?", cls_name, message))
    run_error = ""
    if not steps:
        failure = context.failure_event
        data = failure.event_specific_data
        error = getattr(data, "error", None)
        run_error = " ".join(part for part in _innermost(error) if part) if error else (failure.message or "")
    retry_note = ""
    if run.tags.get(WILL_RETRY_TAG) == "true":
        retry_note = "Dagster retries this run automatically (run_retries)."
    elif run.tags.get(RETRY_NUMBER_TAG):
        retry_note = f"This was automatic retry {run.tags[RETRY_NUMBER_TAG]}; no further retry."
    return FailureAlert(
        job_name=_job_label(run),
        run_id=run.run_id,
        partition=_partition_label(run),
        steps=steps,
        run_error=run_error,
        run_url=run_url(ui_base_url, run.run_id),
        backfill_id=run.tags.get(BACKFILL_TAG),
        retry_note=retry_note,
    )


def build_failure_sensor(*, minimum_interval_seconds: int = FAILURE_SENSOR_INTERVAL) -> dg.SensorDefinition:
    """``run_failure_alert_sensor``: every failed run of the instance, to the webhook and/or by email (the
    channels of the ``alerts`` resource)."""

    @dg.run_failure_sensor(
        name="run_failure_alert_sensor",
        minimum_interval_seconds=minimum_interval_seconds,
        # Every run of the instance: also runs started from a terminal (`dagster asset materialize`), which
        # belong to no code location. A deployment of taxi_assets has this one location.
        monitor_all_code_locations=True,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Sends an alert for every failed run (job, partition, failed step, link to the run) to the "
        "channels of the alerts resource: a webhook (TAXI_ALERT_WEBHOOK_URL) and/or email (TAXI_SMTP_*). "
        "See docs/AUTOMATION.md.",
    )
    def run_failure_alert_sensor(context: dg.RunFailureSensorContext, alerts: AlertChannels) -> None:
        alert = failure_alert(context, alerts.settings().ui_base_url)
        if not alerts.channels:
            context.log.warning(f"No alert channel configured; the alert would have been:\n{alerts.text(alert)}")
            return
        # A delivery failure raises: the tick shows as failed in the UI, with the channel and reason.
        delivered = alerts.send(alert)
        context.log.info(f"Alert for run {context.dagster_run.run_id} sent by {', '.join(delivered)}")

    return run_failure_alert_sensor


# --------------------------------------------------------------------------------------------------------------
# Freshness


FRESHNESS_REPORT_EVERY_SECONDS = 24 * 3600


def build_freshness_sensor(
    calendar: Calendar, *, last_month: str | None = None, minimum_interval_seconds: int = FRESHNESS_SENSOR_INTERVAL
) -> dg.SensorDefinition:
    """``warehouse_freshness_sensor``: evaluates ``months_on_time`` in the sensor and reports it, launching no run.

    A result is reported when it changes (a month got loaded, a deadline passed) and at least once a day.
    ``last_month``: no later month is expected (``TAXI_FRESHNESS_LAST_MONTH``, see freshness.py).
    """

    @dg.sensor(
        name="warehouse_freshness_sensor",
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Reports each warehouse table's months_on_time freshness check: which months are due and missing.",
    )
    def warehouse_freshness_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        reported: dict[str, dict] = json.loads(context.cursor) if context.cursor else {}
        now = datetime.now(timezone.utc)
        events = []
        for service in SERVICES.values():
            verdict = judge_on(context.instance, service, calendar, now, last_month)
            digest = hashlib.sha256(json.dumps([verdict.passed, verdict.overdue]).encode()).hexdigest()[:16]
            previous = reported.get(service.name, {})
            if (
                previous.get("digest") == digest
                and now.timestamp() - previous.get("at", 0) < FRESHNESS_REPORT_EVERY_SECONDS
            ):
                continue
            context.log.info(f"{service.name}: {verdict.description}")
            events.append(check_evaluation(verdict))
            reported[service.name] = {"digest": digest, "at": now.timestamp()}
        skip = None if events else "No change in any warehouse table's freshness"
        return dg.SensorResult(asset_events=events, cursor=json.dumps(reported, sort_keys=True), skip_reason=skip)

    return warehouse_freshness_sensor


def build_sensors(
    calendar: Calendar, *, interval_seconds: int | None = None, freshness_last_month: str | None = None
) -> list[dg.SensorDefinition]:
    """Every sensor, for the months of ``calendar``. ``interval_seconds`` overrides each one's minimum interval;
    ``freshness_last_month`` is the newest month the freshness sensor expects (both from targets.py:
    ``load_target().automation``)."""

    def every(default: int) -> int:
        return interval_seconds or default

    return [
        *(
            build_source_sensor(SERVICES[name], job, calendar, minimum_interval_seconds=every(SOURCE_SENSOR_INTERVAL))
            for name, job in trips_jobs.items()
        ),
        build_lake_sensor(calendar, minimum_interval_seconds=every(LAKE_SENSOR_INTERVAL)),
        build_automation_sensor(minimum_interval_seconds=every(AUTOMATION_SENSOR_INTERVAL)),
        build_failure_sensor(minimum_interval_seconds=every(FAILURE_SENSOR_INTERVAL)),
        build_freshness_sensor(
            calendar, last_month=freshness_last_month, minimum_interval_seconds=every(FRESHNESS_SENSOR_INTERVAL)
        ),
    ]
