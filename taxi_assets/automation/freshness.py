"""Freshness: the ``months_on_time`` check of each ``<service>/warehouse_trips`` (which months are due and missing,
by the source's publication calendar) and ``warehouse_freshness_sensor``, which evaluates it and reports a result
when it changes or a day has passed. What "due" means and how to use it: docs/AUTOMATION.md, "Freshness".
"""

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import dagster as dg

from taxi_assets.partitions import Calendar
from taxi_assets.services import SERVICES, TripService
from taxi_assets.settings import FRESHNESS_LAST_MONTH

CHECK_NAME = "months_on_time"
MAX_MONTHS_LISTED = 24


def rule(calendar: Calendar) -> str:
    lag = calendar.layout.publication_lag_months
    return (
        f"A month is due {lag} whole months after it ends (at 00:00 UTC on the 1st of M+{lag + 1}): "
        f"{calendar.layout.description} publishes with a {lag}-month delay."
    )


def warehouse_key(service: TripService) -> dg.AssetKey:
    return dg.AssetKey([service.name, "warehouse_trips"])


def freshness_check_key(service: TripService) -> dg.AssetCheckKey:
    return dg.AssetCheckKey(warehouse_key(service), CHECK_NAME)


def freshness_check_selection() -> dg.AssetSelection:
    """The freshness checks of every service (jobs subtract them: they run on their own, not in each load)."""
    return dg.AssetSelection.checks(*(freshness_check_key(s) for s in SERVICES.values()))


def due_months(service: TripService, now: datetime, calendar: Calendar, last_month: str | None = None) -> list[str]:
    """Every partition month of ``service`` that should be in the warehouse at ``now``, oldest first (none for a
    service the source does not have)."""
    if not calendar.layout.has(service):
        return []
    keys = calendar.complete_months(service, now)
    return [m for m in keys if calendar.due_at(m) <= now and (last_month is None or m <= last_month)]


@dataclass(frozen=True)
class Verdict:
    """The result of the freshness rule for one service, ready to become a check result or evaluation."""

    service: str
    passed: bool
    overdue: tuple[str, ...]
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)


def judge(
    service: TripService, loaded: Iterable[str], now: datetime, calendar: Calendar, last_month: str | None = None
) -> Verdict:
    """Compare the months ``loaded`` in the warehouse with the months due at ``now``."""
    loaded = set(loaded)
    due = due_months(service, now, calendar, last_month)
    overdue = tuple(m for m in due if m not in loaded)
    newest_loaded = max(loaded) if loaded else None
    due_at = calendar.due_at
    upcoming = next(
        (m for m in calendar.complete_months(service, now) if due_at(m) > now and m not in loaded),
        None,
    )
    listed = ", ".join(overdue[:MAX_MONTHS_LISTED]) + (
        f" and {len(overdue) - MAX_MONTHS_LISTED} more" if len(overdue) > MAX_MONTHS_LISTED else ""
    )
    if overdue:
        description = (
            f"{len(overdue)} month(s) of {service.name} trips are due but not in the warehouse: {listed}. "
            f"The oldest was due on {due_at(overdue[0]):%Y-%m-%d}."
        )
    elif due:
        description = f"Every due month is loaded ({due[0]} to {due[-1]})."
    else:
        description = "No month is due yet."
    metadata: dict[str, Any] = {
        "overdue_months": dg.MetadataValue.json(list(overdue)),
        "overdue_count": dg.MetadataValue.int(len(overdue)),
        "newest_due_month": dg.MetadataValue.text(due[-1] if due else "none"),
        "newest_loaded_month": dg.MetadataValue.text(newest_loaded or "none"),
        "rule": dg.MetadataValue.text(
            rule(calendar)
            + (f" Months after {last_month} are not expected ({FRESHNESS_LAST_MONTH})." if last_month else "")
        ),
    }
    if overdue:
        metadata["dagster/overdue_deadline_timestamp"] = dg.MetadataValue.timestamp(due_at(overdue[0]))
    if upcoming and (last_month is None or upcoming <= last_month):
        metadata["next_due"] = dg.MetadataValue.text(f"{upcoming} by {due_at(upcoming):%Y-%m-%d}")
    return Verdict(service.name, not overdue, overdue, description, metadata)


def judge_on(
    instance: dg.DagsterInstance,
    service: TripService,
    calendar: Calendar,
    now: datetime | None = None,
    last_month: str | None = None,
) -> Verdict:
    """The verdict for ``service`` from the months the instance knows are materialized in its warehouse table.

    ``last_month``: the newest month the source will ever publish (``TAXI_FRESHNESS_LAST_MONTH``), or ``None``.
    """
    now = now or datetime.now(timezone.utc)
    return judge(service, instance.get_materialized_partitions(warehouse_key(service)), now, calendar, last_month)


def check_evaluation(verdict: Verdict) -> dg.AssetCheckEvaluation:
    """The verdict as an evaluation a sensor can report (``SensorResult(asset_events=...)``)."""
    return dg.AssetCheckEvaluation(
        asset_key=warehouse_key(SERVICES[verdict.service]),
        check_name=CHECK_NAME,
        passed=verdict.passed,
        metadata=verdict.metadata,
        severity=dg.AssetCheckSeverity.ERROR,
        description=verdict.description,
    )


def build_freshness_checks(calendar: Calendar, last_month: str | None = None) -> list[dg.AssetChecksDefinition]:
    """``<service>/warehouse_trips:months_on_time`` for every service, in one multi-check that can run any subset.

    ``last_month`` (``YYYY-MM``): no later month is expected, for a source that stopped publishing.
    """
    specs = [
        dg.AssetCheckSpec(
            CHECK_NAME,
            asset=warehouse_key(service),
            description=f"Every {service.name} month due by now is in the warehouse. {rule(calendar)}",
        )
        for service in SERVICES.values()
    ]
    by_key = {warehouse_key(s): s for s in SERVICES.values()}

    @dg.multi_asset_check(
        specs=specs,
        can_subset=True,
        name="warehouse_months_on_time",
        description="Freshness of the warehouse tables: lists the months that should be loaded by now and are not.",
    )
    def warehouse_months_on_time(context: dg.AssetCheckExecutionContext):
        for check_key in sorted(context.selected_asset_check_keys, key=lambda k: k.to_user_string()):
            verdict = judge_on(context.instance, by_key[check_key.asset_key], calendar, last_month=last_month)
            context.log.info(f"{check_key.to_user_string()}: {verdict.description}")
            yield dg.AssetCheckResult(
                asset_key=check_key.asset_key,
                check_name=CHECK_NAME,
                passed=verdict.passed,
                severity=dg.AssetCheckSeverity.ERROR,
                description=verdict.description,
                metadata=verdict.metadata,
            )

    return [warehouse_months_on_time]


# --------------------------------------------------------------------------------------------------------------
# The sensor that reports the check

FRESHNESS_SENSOR_INTERVAL = 10 * 60


FRESHNESS_REPORT_EVERY_SECONDS = 24 * 3600


def build_freshness_sensor(
    calendar: Calendar, *, last_month: str | None = None, minimum_interval_seconds: int = FRESHNESS_SENSOR_INTERVAL
) -> dg.SensorDefinition:
    """``warehouse_freshness_sensor``: evaluates ``months_on_time`` in the sensor and reports it, launching no run.

    A result is reported when it changes (a month got loaded, a deadline passed) and at least once a day.
    ``last_month``: no later month is expected (``TAXI_FRESHNESS_LAST_MONTH``, see above).
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
