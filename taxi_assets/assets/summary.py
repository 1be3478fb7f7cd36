"""Per service and month: trips, revenue and average distance per pickup borough and day.

Computed in the warehouse by one SQL query (the month's trips joined with the zone lookup), handed to Dagster as a
pandas DataFrame and stored by an IO manager (``warehouse_io_manager``: DuckDB or BigQuery). A second asset takes
that DataFrame as its input (read back through the warehouse IO manager) and stores it in Postgres
(``postgres_io_manager``). Both replace the month atomically: re-materializing it never duplicates a row. Why IO
managers here and resources for the trip tables: see the README's "Summaries".

Columns: ``month`` (``YYYY-MM``), ``pickup_date``, ``borough`` (of the pickup zone; ``Unknown`` when the zone is
missing or not in the lookup), ``trips``, ``revenue`` (what passengers paid, see ``MEASURES``; null for fhv, which
has no fares) and ``avg_distance`` (miles; null for fhv, which has no distance).
"""

from dataclasses import dataclass

import dagster as dg
import numpy as np
import pandas as pd

from taxi_assets.assets.metadata import OWNERS, TargetKinds, code_version
from taxi_assets.assets.policies import NETWORK_RETRY, fail_fast_on
from taxi_assets.automation.conditions import FOLLOWS_UPSTREAM_SUMMARY
from taxi_assets.months import Month
from taxi_assets.partitions import Calendar
from taxi_assets.resources.stores import TableStore
from taxi_assets.services import SERVICES, TAXI_ZONES, TripService

SUMMARY = "trips_by_borough_day"
# Compared with the partition's time window by every IO manager (the DATE as a timestamp: valid SQL in DuckDB,
# BigQuery and Postgres, and comparable with the window's 'YYYY-MM-DD HH:MM:SS' literals).
PARTITION_EXPR = "CAST(pickup_date AS TIMESTAMP)"
PREVIEW_ROWS = 20
SUMMARY_VERSION = 1  # bump when the query changes
TRIPS_CHECK = "trips_match_warehouse"

COLUMNS = {
    "month": "Month of the pickups (YYYY-MM), the asset's partition",
    "pickup_date": "Day of the pickups (NYC local time, as the TLC records it)",
    "borough": "Borough of the pickup zone (Unknown: zone missing or not in the lookup)",
    "trips": "Trips picked up that day in that borough",
    "revenue": "Sum of what the passengers paid (see the service's revenue columns); null for fhv (no fares)",
    "avg_distance": "Average trip distance in miles; null for fhv (no distance)",
}


@dataclass(frozen=True)
class Measures:
    """Which contract columns a service's revenue and distance are."""

    revenue: tuple[str, ...]  # summed per trip, a null part counted as 0; empty: the service has no fares
    distance: str | None  # None: the service records no distance


# The one place that says which columns are revenue and distance, per service. Yellow and green: total_amount
# (everything charged to the passenger, cash tips excluded). fhvhv: the passenger's total, built from its parts
# as the TLC publishes them (fare, tolls, Black Car Fund, sales tax, surcharges, fees and tips; driver_pay is
# not revenue of the trip). fhv: neither fares nor distance.
MEASURES: dict[str, Measures] = {
    "yellow": Measures(("total_amount",), "trip_distance"),
    "green": Measures(("total_amount",), "trip_distance"),
    "fhv": Measures((), None),
    "fhvhv": Measures(
        (
            "base_passenger_fare",
            "tolls",
            "bcf",
            "sales_tax",
            "congestion_surcharge",
            "airport_fee",
            "cbd_congestion_fee",
            "tips",
        ),
        "trip_miles",
    ),
}


def _check_measures() -> None:
    """Every service has measures, and they name columns of its contract: a renamed column fails at import."""
    if set(MEASURES) != set(SERVICES):
        raise ValueError(f"summary measures for {sorted(MEASURES)}, services are {sorted(SERVICES)}")
    for name, measures in MEASURES.items():
        known = {c.name for c in SERVICES[name].columns}
        unknown = [c for c in (*measures.revenue, measures.distance) if c is not None and c not in known]
        if unknown:
            raise ValueError(f"summary measures of {name}: {unknown} not in its data contract")


_check_measures()


@dataclass(frozen=True)
class Dialect:
    """What differs between the warehouses in the summary's SQL."""

    float_type: str

    def datetime(self, value) -> str:
        raise NotImplementedError


class _DuckDB(Dialect):
    def datetime(self, value) -> str:
        return f"TIMESTAMP '{value:%Y-%m-%d %H:%M:%S}'"


class _BigQuery(Dialect):
    def datetime(self, value) -> str:
        return f"DATETIME '{value:%Y-%m-%d %H:%M:%S}'"  # the trips' pickup is a DATETIME (NYC wall clock)


DUCKDB, BIGQUERY = _DuckDB("DOUBLE"), _BigQuery("FLOAT64")


def summary_sql(service: TripService, trips: str, zones: str, start, end, dialect: Dialect) -> str:
    """The summary of the pickups in [start, end) of ``trips`` (a table reference), joined with ``zones``."""
    measures, null = MEASURES[service.name], f"CAST(NULL AS {dialect.float_type})"
    parts = " + ".join(f"COALESCE(t.{c}, 0)" for c in measures.revenue)
    revenue = f"SUM({parts})" if parts else null
    distance = f"AVG(t.{measures.distance})" if measures.distance else null
    pickup = f"t.{service.pickup_column}"
    return f"""
SELECT CAST({pickup} AS DATE) AS pickup_date, COALESCE(z.borough, 'Unknown') AS borough, COUNT(*) AS trips,
       {revenue} AS revenue, {distance} AS avg_distance
FROM {trips} AS t LEFT JOIN {zones} AS z ON z.location_id = t.pu_location_id
WHERE {pickup} >= {dialect.datetime(start)} AND {pickup} < {dialect.datetime(end)}
GROUP BY 1, 2
ORDER BY 1, 2
"""


# The asset that loads each table the summary reads, for the message when one is missing.
_LOADED_BY = {TAXI_ZONES.table_name: "warehouse_taxi_zones (taxi_zones_job)"}


def _require_tables(schema: str, missing: list[str]) -> None:
    """A table the summary reads is not in the warehouse yet: a permanent error (retrying will not load it)."""
    if missing:
        named = ", ".join(f"{schema}.{t}, loaded by {_LOADED_BY.get(t, 'warehouse_trips')}" for t in missing)
        raise FileNotFoundError(f"not in the warehouse yet: {named}; materialize it first")


def query_summary(warehouse: TableStore, service: TripService, start, end) -> pd.DataFrame:
    """Run ``summary_sql`` in ``warehouse`` (DuckDB or BigQuery) and return its rows, normalized."""
    from taxi_assets.resources.duckdb_warehouse import DuckDBWarehouse
    from taxi_assets.resources.sql import ident

    if isinstance(warehouse, DuckDBWarehouse):
        schema = warehouse.schema_name
        sql = summary_sql(
            service, ident(schema, service.table_name), ident(schema, TAXI_ZONES.table_name), start, end, DUCKDB
        )
        # The store's own connection (its memory limit, and retries while another process holds the file's lock).
        with warehouse.connection() as conn:
            missing = [t for t in (service.table_name, TAXI_ZONES.table_name) if not warehouse.relation_type(t, conn)]
            _require_tables(schema, missing)
            return normalized(conn.execute(sql).fetchdf())

    from taxi_assets.resources.bigquery import BigQueryWarehouse, table_exists

    if isinstance(warehouse, BigQueryWarehouse):
        with warehouse.bigquery.get_client() as client:
            dataset = f"{client.project}.{warehouse.dataset}"
            sql = summary_sql(
                service,
                f"`{dataset}.{service.table_name}`",
                f"`{dataset}.{TAXI_ZONES.table_name}`",
                start,
                end,
                BIGQUERY,
            )
            missing = [
                t for t in (service.table_name, TAXI_ZONES.table_name) if not table_exists(client, f"{dataset}.{t}")
            ]
            _require_tables(warehouse.dataset, missing)
            job = client.query(sql, job_id_prefix="taxi_summary_")
            emulated = bool(getattr(warehouse.bigquery, "api_endpoint", None))
            return normalized(job.result().to_dataframe(create_bqstorage_client=not emulated))
    raise TypeError(f"no summary query for the warehouse {type(warehouse).__name__}")


def normalized(df: pd.DataFrame) -> pd.DataFrame:
    """The summary's columns in order and with one set of dtypes, whichever store or client produced ``df``
    (DuckDB returns dates as datetime64, BigQuery as ``dbdate`` with nullable Int64/Float64)."""
    days = pd.to_datetime(df["pickup_date"]) if len(df) else pd.Series([], dtype="datetime64[us]")
    return pd.DataFrame(
        {
            "month": days.dt.strftime("%Y-%m").astype(object),
            "pickup_date": days.dt.date.astype(object),
            "borough": df["borough"].astype(object),
            "trips": df["trips"].astype("int64"),
            "revenue": pd.Series(df["revenue"], dtype="Float64").to_numpy(dtype="float64", na_value=np.nan),
            "avg_distance": pd.Series(df["avg_distance"], dtype="Float64").to_numpy(dtype="float64", na_value=np.nan),
        }
    ).reset_index(drop=True)


def preview(df: pd.DataFrame) -> dg.MetadataValue:
    """The first rows as a markdown table (the UI shows it on the materialization)."""
    head = df.head(PREVIEW_ROWS)
    more = f"\n\n… {len(df) - PREVIEW_ROWS:,} more rows" if len(df) > PREVIEW_ROWS else ""
    return dg.MetadataValue.md(head.to_markdown(index=False, floatfmt=".2f") + more)


def _column_schema() -> dg.TableSchema:
    types = {"month": "string", "pickup_date": "date", "borough": "string", "trips": "int64"}
    return dg.TableSchema(
        columns=[dg.TableColumn(name, types.get(name, "float64"), description=d) for name, d in COLUMNS.items()]
    )


def table_name(service: TripService) -> str:
    return f"{service.name}_{SUMMARY}"


def build_summary_assets(
    service: TripService, kinds: TargetKinds, backfill_policy: dg.BackfillPolicy, calendar: Calendar
) -> list[dg.AssetsDefinition]:
    """``<service>/warehouse_trips_by_borough_day`` and ``<service>/postgres_trips_by_borough_day``, both stored as
    ``nyc_taxi.<service>_trips_by_borough_day``, in group ``<service>``, with the months of ``warehouse_trips``."""
    table = table_name(service)
    metadata = {
        "table": table,
        "partition_expr": PARTITION_EXPR,
        "dagster/column_schema": _column_schema(),
    }
    common = {
        "key_prefix": service.name,
        "group_name": service.name,
        "partitions_def": calendar.partitions(service),
        "backfill_policy": backfill_policy,
        "retry_policy": NETWORK_RETRY,
        "code_version": code_version(service, SUMMARY_VERSION),
        "metadata": metadata,
        "automation_condition": FOLLOWS_UPSTREAM_SUMMARY,
        "owners": OWNERS,
        "tags": {"taxi/service": service.name},
    }
    warehouse_key = dg.AssetKey([service.name, f"warehouse_{SUMMARY}"])

    @dg.asset(
        name=f"warehouse_{SUMMARY}",
        deps=[dg.AssetKey([service.name, "warehouse_trips"]), dg.AssetKey("warehouse_taxi_zones")],
        io_manager_key="warehouse_io_manager",
        kinds={kinds.warehouse, "pandas", "table"},
        pool="warehouse",
        check_specs=[
            dg.AssetCheckSpec(
                TRIPS_CHECK,
                asset=warehouse_key,
                description="The summary's trips add up to the month's rows in the warehouse table.",
            )
        ],
        description=f"{service.description}\n\nPer pickup borough and day: trips, revenue and average distance, "
        f"computed in the warehouse from `nyc_taxi.{service.table_name}` and the zone lookup, stored by the "
        f"warehouse IO manager in `nyc_taxi.{table}` (the month replaced in one transaction).",
        **common,
    )
    def warehouse_summary(context: dg.AssetExecutionContext, warehouse: TableStore):
        window = context.partition_time_window
        with fail_fast_on(FileNotFoundError):
            df = query_summary(warehouse, service, window.start, window.end)
        context.log.info(
            f"{service.name}, pickups from {window.start:%Y-%m-%d} to {window.end:%Y-%m-%d}: {len(df)} rows"
        )
        yield dg.Output(df, metadata={"preview": preview(df)})
        # The LEFT JOIN keeps every trip once: the month's trips add up to its rows, or the lookup has duplicates.
        months = sorted(context.partition_keys)
        expected = {m: warehouse.month_row_count(service, Month.parse(m)) for m in months}
        found = {m: int(df.loc[df["month"] == m, "trips"].sum()) for m in months}
        differ = {m: (found[m], expected[m]) for m in months if found[m] != expected[m]}
        yield dg.AssetCheckResult(
            check_name=TRIPS_CHECK,
            asset_key=warehouse_key,
            passed=not differ,
            metadata={"summary_trips": sum(found.values()), "warehouse_rows": sum(expected.values())},
            description=f"month: (summary, warehouse) {differ}" if differ else None,
        )

    @dg.asset(
        name=f"postgres_{SUMMARY}",
        ins={"summary": dg.AssetIn(key=warehouse_key)},
        io_manager_key="postgres_io_manager",
        kinds={"postgres", "pandas", "table"},
        pool="postgres",
        description=f"{service.description}\n\nThe warehouse's summary `nyc_taxi.{table}` of the month, read through "
        f"the warehouse IO manager and stored by the Postgres IO manager in `nyc_taxi.{table}` (the month's rows "
        "deleted and COPYed in one transaction).",
        **common,
    )
    def postgres_summary(context: dg.AssetExecutionContext, summary: pd.DataFrame) -> dg.Output[pd.DataFrame]:
        df = normalized(summary)
        return dg.Output(df, metadata={"preview": preview(df)})

    return [warehouse_summary, postgres_summary]
