"""taxi_assets: NYC TLC taxi trips into a data lake, a warehouse and Postgres, run by Dagster."""

from taxi_assets.definitions import defs

__all__ = ["defs"]
