"""Every sensor of the code location, for the months of a calendar."""

import dagster as dg

from taxi_assets.automation.alerts import FAILURE_SENSOR_INTERVAL, build_failure_sensor
from taxi_assets.automation.conditions import AUTOMATION_SENSOR_INTERVAL, build_automation_sensor
from taxi_assets.automation.dead_runs import DEAD_RUN_SENSOR_INTERVAL, build_dead_run_sensor
from taxi_assets.automation.freshness import FRESHNESS_SENSOR_INTERVAL, build_freshness_sensor
from taxi_assets.automation.lake_sensor import LAKE_SENSOR_INTERVAL, build_lake_sensor
from taxi_assets.automation.source_sensor import SOURCE_SENSOR_INTERVAL, build_source_sensor
from taxi_assets.jobs import trips_jobs
from taxi_assets.partitions import Calendar
from taxi_assets.services import SERVICES


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
        build_dead_run_sensor(minimum_interval_seconds=every(DEAD_RUN_SENSOR_INTERVAL)),
    ]
