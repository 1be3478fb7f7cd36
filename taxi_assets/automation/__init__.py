"""Automation: what runs the pipeline by itself, each idea in its module.

- ``conditions``: the automation condition of the downstream assets, and ``taxi_automation_sensor`` that evaluates it.
- ``schedules``: once a month per service, the month that has just become due at the source.
- ``source_sensor``: months newly published at the source.
- ``lake_sensor``: raw files put into the lake by another system.
- ``alerts``: failure alerts (their text, delivery to a webhook or by email, the ``alerts`` resource, the sensor).
- ``freshness``: the ``months_on_time`` check and the sensor that reports it.
- ``runs``: what the instance knows of the months (loaded, being loaded).

Everything is stopped until someone turns it on (UI, GraphQL or ``dagster sensor start``): see docs/AUTOMATION.md.
``sensors.build_sensors`` assembles the sensors; its ``interval_seconds`` overrides every sensor's minimum interval
(``TAXI_SENSOR_INTERVAL_SECONDS``; tests and demos use a few seconds).
"""
