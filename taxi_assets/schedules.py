"""Schedules (issue 4 fills this in)."""

import dagster as dg


def build_schedules() -> list[dg.ScheduleDefinition]:
    return []
