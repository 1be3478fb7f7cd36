"""``<service>_trips_job_schedule``: at 03:00 New York time on the 1st of each month, the month that has just become
due at the source (the calendar's publication lag), after one HEAD to see that it is published; ``run_key`` is the
month. Why that hour and that month: docs/AUTOMATION.md, "The monthly schedules".
"""

import dagster as dg

from taxi_assets.automation.runs import busy_months, loaded_months
from taxi_assets.automation.source_sensor import probe_source
from taxi_assets.jobs import trips_jobs
from taxi_assets.partitions import Calendar
from taxi_assets.secrets import redact
from taxi_assets.services import SERVICES, TripService
from taxi_assets.source import SourceError, TaxiSource

MONTHLY_CRON = "0 3 1 * *"
SCHEDULE_TIMEZONE = "America/New_York"
PROBE_TIMEOUT_SECONDS = 10.0


def build_trips_schedule(
    service: TripService, job: "dg.UnresolvedAssetJobDefinition", calendar: Calendar
) -> dg.ScheduleDefinition:
    """``<service>_trips_job_schedule``: the month due at the tick's time, if the source has published it."""
    layout, lag = calendar.layout, calendar.layout.publication_lag_months

    @dg.schedule(
        name=f"{job.name}_schedule",
        job=job,
        cron_schedule=MONTHLY_CRON,
        execution_timezone=SCHEDULE_TIMEZONE,
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description=f"On the 1st at 03:00 New York time, loads the {service.name} month that is due at the source "
        f"({lag} months after it ended, e.g. 2021-01 on 2021-{lag + 2:02d}-01) if it is published; "
        f"{service.name}_source_sensor usually loads it earlier.",
    )
    def trips_schedule(context: dg.ScheduleEvaluationContext, source: TaxiSource):
        if not layout.has(service):
            return dg.SkipReason(f"No {service.name} files in {layout.description}: {layout.missing_reason}")
        month = calendar.newest_due(service, context.scheduled_execution_time)
        if month is None:
            return dg.SkipReason(f"No {service.name} month is due at the source yet")
        if month in loaded_months(context.instance, service):
            return dg.SkipReason(f"{service.name} {month} is already loaded")
        if month in busy_months(context.instance, service):
            return dg.SkipReason(f"A run is already loading {service.name} {month}")
        try:
            published = probe_source(source, PROBE_TIMEOUT_SECONDS).is_published(service.source_path(month, layout))
        except SourceError as error:
            context.log.warning(
                f"{service.name} {month}: {redact(str(error), {})}; requesting the run, which retries on its own"
            )
            published = True
        if not published:
            return dg.SkipReason(
                f"{service.name} {month} is not published at the source yet (404); "
                f"{service.name}_source_sensor requests it when it appears"
            )
        return dg.RunRequest(partition_key=month, run_key=month)

    return trips_schedule


def build_schedules(calendar: Calendar) -> list[dg.ScheduleDefinition]:
    return [build_trips_schedule(SERVICES[name], job, calendar) for name, job in trips_jobs.items()]
