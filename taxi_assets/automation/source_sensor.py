"""``<service>_source_sensor``: asks the source (HTTP HEAD) about months not loaded yet and requests the published
ones, oldest first, a few per tick. Its cursor remembers the months it saw published and the ones it requested,
so it never asks the source twice about a published month nor requests a month twice.
"""

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import dagster as dg

from taxi_assets.automation.runs import busy_months, loaded_months
from taxi_assets.partitions import Calendar
from taxi_assets.secrets import redact
from taxi_assets.services import TripService
from taxi_assets.source import SourceError, TaxiSource

SOURCE_SENSOR_INTERVAL = 15 * 60  # the TLC publishes monthly: a quarter of an hour's delay is nothing, 12 HEADs cheap


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
