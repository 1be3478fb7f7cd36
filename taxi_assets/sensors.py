"""Sensors (issue 4 fills this in)."""

import dagster as dg


def build_sensors() -> list[dg.SensorDefinition]:
    return []
