"""Schedules: once a month, per service, the month that just ended.

When: ``0 3 1 * *`` in ``America/New_York``, 03:00 New York time on the 1st. The trips are in New York local
time, so the month is over at midnight there (04:00 or 05:00 UTC, depending on daylight saving time: the seeds'
``0 5 1 * *`` UTC fired at the very minute the month ended in winter). Three hours later the month is surely
over and a prompt publisher's nightly export has had time to land; 03:00 exists exactly once on every 1st, as
clocks change at 02:00 on Sundays. Partition keys stay UTC months; at that time the last complete one is the
month just ended.

But the TLC publishes a month 6 to 8 weeks after it ends ("with two months delay"): on the 1st the month is
almost never there. So the schedule asks the source first (one HEAD) and requests the run only if the file is
published, or if the source cannot say (an error: the run's own retries and the failure alert take over). A 404
skips the tick with a reason, and ``<service>_source_sensor`` requests the month when it appears; the
``months_on_time`` freshness check turns red if it is late. A month already loaded, or being loaded, is skipped.

``run_key`` = the month: a tick that is evaluated again (daemon restart, catch-up) never launches it twice.
"""

import dagster as dg

from taxi_assets.alerts import redact
from taxi_assets.jobs import trips_jobs
from taxi_assets.partitions import monthly_partitions
from taxi_assets.sensors import busy_months, loaded_months, probe_source
from taxi_assets.services import SERVICES, TripService
from taxi_assets.source import SourceError, TaxiSource

MONTHLY_CRON = "0 3 1 * *"
SCHEDULE_TIMEZONE = "America/New_York"
PROBE_TIMEOUT_SECONDS = 10.0


def month_just_ended(context: dg.ScheduleEvaluationContext) -> str:
    """The last complete monthly partition at the tick's scheduled time (e.g. ``2021-01`` on 2021-02-01)."""
    return monthly_partitions.get_partition_keys(current_time=context.scheduled_execution_time)[-1]


def build_trips_schedule(service: TripService, job: "dg.UnresolvedAssetJobDefinition") -> dg.ScheduleDefinition:
    """``<service>_trips_job_schedule``: the month just ended, if the source has published it."""

    @dg.schedule(
        name=f"{job.name}_schedule",
        job=job,
        cron_schedule=MONTHLY_CRON,
        execution_timezone=SCHEDULE_TIMEZONE,
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description=f"On the 1st at 03:00 New York time, loads the {service.name} month that just ended if the "
        f"source has published it (the TLC is usually ~2 months late: {service.name}_source_sensor catches that).",
    )
    def trips_schedule(context: dg.ScheduleEvaluationContext, source: TaxiSource):
        month = month_just_ended(context)
        if month in loaded_months(context.instance, service):
            return dg.SkipReason(f"{service.name} {month} is already loaded")
        if month in busy_months(context.instance, service):
            return dg.SkipReason(f"A run is already loading {service.name} {month}")
        try:
            published = probe_source(source, PROBE_TIMEOUT_SECONDS).is_published(service.source_path(month))
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


def build_schedules() -> list[dg.ScheduleDefinition]:
    return [build_trips_schedule(SERVICES[name], job) for name, job in trips_jobs.items()]
