"""taxi_assets: NYC TLC taxi trips into a data lake, a warehouse and Postgres, run by Dagster.

``defs`` is built on first access (PEP 562), so importing ``taxi_assets.cleaning`` or running the
``taxi-assets`` command does not load every Dagster definition nor need a target's settings.
``dagster ... -m taxi_assets`` finds it as usual.
"""


def __getattr__(name: str):
    if name == "defs":
        from taxi_assets.definitions import defs

        return defs
    raise AttributeError(f"module 'taxi_assets' has no attribute {name!r}")


def __dir__() -> list[str]:
    return [*globals(), "defs"]
