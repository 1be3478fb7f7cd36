"""The taxi zone lookup (unpartitioned): lake, warehouse and Postgres, each replaced whole and atomically."""

import dagster as dg

from taxi_assets.assets.metadata import (
    OWNERS,
    TargetKinds,
    cleaning_metadata,
    code_version,
    lake_file_metadata,
    load_metadata,
    schema_metadata,
)
from taxi_assets.assets.policies import NETWORK_RETRY, fail_fast_on
from taxi_assets.cleaning import clean_lookup_file
from taxi_assets.resources.lake import Lake
from taxi_assets.resources.stores import TableStore
from taxi_assets.services import TAXI_ZONES, ZONES_CLEAN_KEY, ZONES_RAW_KEY, ZONES_SOURCE_PATH, ContractError
from taxi_assets.source import SourceError, TaxiSource

GROUP = "taxi_zones"


def load_zones(store: TableStore, lake: Lake, storage_kind: str) -> dg.MaterializeResult:
    """Replace the zone table in ``store`` with the lake's zone parquet (the lookup's twin of ``load_months``)."""
    with fail_fast_on(*store.permanent_errors, about=lake.uri(ZONES_CLEAN_KEY)):
        result = store.replace_table(TAXI_ZONES, lake, ZONES_CLEAN_KEY)
    return dg.MaterializeResult(metadata={**load_metadata(result, storage_kind), **schema_metadata(TAXI_ZONES)})


def build_zone_assets(kinds: TargetKinds) -> list[dg.AssetsDefinition]:
    @dg.asset(
        group_name=GROUP,
        owners=OWNERS,
        code_version=code_version(TAXI_ZONES, 1),
        kinds={"csv", "parquet", kinds.lake},
        metadata=schema_metadata(TAXI_ZONES),
        # No retry policy: the source client retries its requests itself (one retry layer).
        description=f"{TAXI_ZONES.description}\n\nDownloaded to the lake's raw zone and kept as typed parquet.",
    )
    def taxi_zones(context: dg.AssetExecutionContext, source: TaxiSource, lake: Lake) -> dg.MaterializeResult:
        # The parquet is published before the raw file: both only once the download and the cleaning succeeded.
        with fail_fast_on(SourceError, ContractError, *lake.permanent_errors), lake.write(ZONES_RAW_KEY) as raw:
            download = source.download(ZONES_SOURCE_PATH, raw)
            with lake.write(ZONES_CLEAN_KEY) as parquet:
                report = clean_lookup_file(raw, parquet, TAXI_ZONES)
        context.log.info(f"{download.url}: {report.rows_written} zones -> {lake.uri(ZONES_CLEAN_KEY)}")
        return dg.MaterializeResult(
            metadata={
                **cleaning_metadata(report, partitioned=False),
                **lake_file_metadata(lake.uri(ZONES_CLEAN_KEY), lake.size(ZONES_CLEAN_KEY)),
                **schema_metadata(TAXI_ZONES),
                "source_url": download.url,
            }
        )

    @dg.asset(
        deps=[taxi_zones],
        group_name=GROUP,
        owners=OWNERS,
        code_version=code_version(TAXI_ZONES, 1),
        kinds={kinds.warehouse, "table"},
        pool="warehouse",
        retry_policy=NETWORK_RETRY,
        metadata=schema_metadata(TAXI_ZONES),
        description="The taxi zone lookup in the warehouse table `nyc_taxi.taxi_zones`, replaced atomically.",
    )
    def warehouse_taxi_zones(warehouse: TableStore, lake: Lake) -> dg.MaterializeResult:
        return load_zones(warehouse, lake, kinds.warehouse)

    @dg.asset(
        deps=[taxi_zones],
        group_name=GROUP,
        owners=OWNERS,
        code_version=code_version(TAXI_ZONES, 1),
        kinds={"postgres", "table"},
        pool="postgres",
        retry_policy=NETWORK_RETRY,
        metadata=schema_metadata(TAXI_ZONES),
        description="The taxi zone lookup in the Postgres table `nyc_taxi.taxi_zones`, replaced atomically.",
    )
    def postgres_taxi_zones(postgres: TableStore, lake: Lake) -> dg.MaterializeResult:
        return load_zones(postgres, lake, "postgres")

    return [taxi_zones, warehouse_taxi_zones, postgres_taxi_zones]
