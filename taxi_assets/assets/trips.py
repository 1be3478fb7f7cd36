"""The four assets of each trips service: raw file -> clean parquet -> warehouse table -> Postgres table.

Every asset handles one month per partition, or every month of a single-run backfill range in one run. Each month
is written atomically in each store and gets its own metadata (``add_asset_metadata`` with its partition key).
"""

import time
from typing import Any

import dagster as dg
from dagster._core.definitions.data_version import (
    CODE_VERSION_TAG,
    DATA_VERSION_IS_USER_PROVIDED_TAG,
    DATA_VERSION_TAG,
    DEFAULT_DATA_VERSION,
    NULL_EVENT_POINTER,
    compute_logical_data_version,
    extract_data_version_from_entry,
    get_input_data_version_tag,
    get_input_event_pointer_tag,
)

from taxi_assets import settings
from taxi_assets.assets.clean_workers import affordable_processes, clean_pool
from taxi_assets.assets.guards import (
    ALLOW_SHRINK_TAG,
    MonthShrinkError,
    check_month_size,
    parquet_footer,
    shrink_allowed,
)
from taxi_assets.assets.metadata import (
    OWNERS,
    SOURCE_VERSION,
    TargetKinds,
    cleaning_metadata,
    code_version,
    lake_file_metadata,
    load_metadata,
    recorded_cleaning_report,
    schema_metadata,
    source_identity_metadata,
)
from taxi_assets.assets.policies import NETWORK_RETRY, fail_fast_on
from taxi_assets.assets.versions import MonthVersions, combined_version
from taxi_assets.automation.conditions import FOLLOWS_UPSTREAM
from taxi_assets.checks import dropped_share_result, dropped_share_spec, row_count_result, row_count_spec
from taxi_assets.cleaning import CleaningReport, check_source_file, clean_trips_file
from taxi_assets.concurrency import each_finished
from taxi_assets.months import Month
from taxi_assets.partitions import Calendar, months_of
from taxi_assets.resources.lake import Lake
from taxi_assets.resources.stores import LoadResult, TableStore
from taxi_assets.secrets import redact
from taxi_assets.services import ContractError, TripService
from taxi_assets.source import Download, SourceError, TaxiSource


class ProgressLog:
    """Called with a ``CleaningReport`` after each batch: logs rows so far and rows per second about every
    million rows, so a user watching a long month in the UI sees it move."""

    def __init__(self, log, label: str, every_rows: int = 1_000_000):
        self.log, self.label, self.every_rows = log, label, every_rows
        self.started, self.next_report = time.monotonic(), every_rows

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    def __call__(self, report: CleaningReport) -> None:
        if report.rows_read >= self.next_report:
            rate = report.rows_read / max(self.seconds, 1e-9)
            self.log.info(f"{self.label}: {report.rows_read:,} rows read ({rate:,.0f} rows/s)")
            self.next_report += self.every_rows


def load_months(
    context: dg.AssetExecutionContext, service: TripService, store: TableStore, lake: Lake, storage_kind: str
) -> dg.MaterializeResult:
    """Replace each month of the run in ``store``'s table with its clean parquet file (unless the month is up to
    date and still in the table with the rows recorded last time).

    Up to ``store.parallel_loads`` months load at once, each atomic on its own; logs and metadata come from the
    step's thread. When months fail, the others still load and are recorded, then the step fails naming every failed
    month (with one load at a time, it stops at the first failure)."""
    loaded: dict[str, int] = {}
    versions = MonthVersions(context)
    pending = []
    for month in months_of(context):
        previous = versions.skip(
            month.key, lambda month=month: {"dagster/partition_row_count": store.month_row_count(service, month)}
        )
        if previous is not None:
            previous.pop("dagster/row_count", None)  # the table's total may have changed with other months
            context.add_asset_metadata(previous, partition_key=month.key)
            loaded[month.key] = previous["dagster/partition_row_count"]
        else:
            pending.append(month)

    def load(month: Month) -> tuple[LoadResult, float]:
        started, key = time.monotonic(), service.clean_key(month.key)
        with fail_fast_on(ContractError, *store.permanent_errors, *lake.permanent_errors, about=lake.uri(key)):
            parquet_footer(lake, key)  # a file cut short or overwritten fails here, naming itself, before any store
            return store.replace_month(service, month, lake, key), time.monotonic() - started

    finished, failed = {}, {}
    for month, done, error in each_finished(pending, load, store.parallel_loads):
        if error is not None:
            failed[month.key] = error
            if store.parallel_loads <= 1:
                break
            context.log.error(f"{month.key}: {error}")
            continue
        result, seconds = done
        context.log.info(f"{month.key}: {result.rows:,} rows in {result.table} ({seconds:.1f}s)")
        finished[month.key] = {**load_metadata(result, storage_kind), **schema_metadata(service)}
        context.add_asset_metadata(finished[month.key], partition_key=month.key)
        loaded[month.key] = result.rows
    _fail_naming_months(context, finished, failed, f"Loading into {storage_kind}")
    with fail_fast_on(*store.permanent_errors, *lake.permanent_errors):  # a lake file that is no parquet names itself
        return dg.MaterializeResult(check_results=[row_count_result(service, lake, loaded)])


# The four assets of a service, in pipeline order (each ``<service>/<name>``).
TRIP_ASSETS = ("raw_trips", "clean_trips", "warehouse_trips", "postgres_trips")


def _unchanged_raw_month(
    versions: MonthVersions, month: str, source: TaxiSource, source_path: str, lake: Lake, key: str
) -> dict[str, Any] | None:
    """The month's previous metadata if the source still serves the file in the lake (asked by HEAD, or a local
    file's stat: no download); ``None`` when it must be downloaded."""
    if not versions.up_to_date(month):  # also when a refresh is asked for
        return None
    try:
        identity = source.identity(source_path)
    except SourceError as error:  # the HEAD only saves a download: a server that refuses it gets the GET
        versions.context.log.warning(f"{redact(str(error))}; downloading the file instead")
        return None
    if identity is None or not identity.known:  # not published (the download names the URL) or no identity
        return None
    return versions.skip(month, lambda: {SOURCE_VERSION: identity.version, "bytes": _lake_bytes(lake, key)})


def _rows_in_lake(lake: Lake, key: str, log) -> int | None:
    """The rows of the lake's clean file ``key`` now (``None``: not there, or unreadable: nothing to compare)."""
    if not lake.exists(key):
        return None
    try:
        return parquet_footer(lake, key).num_rows
    except ContractError as error:  # a corrupt clean file is what cleaning again repairs
        log.warning(f"{error}: the new month is not compared with it")
        return None


def _lake_bytes(lake: Lake, key: str) -> int | None:
    """The size of ``key`` in the lake now (``None``: not there), compared with the size a month recorded."""
    return lake.size(key) if lake.exists(key) else None


def _month_version_tags(context: dg.AssetExecutionContext, month: str, data_version: str | None) -> dict[str, str]:
    """The data version tags Dagster gives a month materialized by a ``MaterializeResult`` (code version, the
    upstream month's data version and event, the month's own data version: ``data_version`` when given, else the
    one Dagster computes), so ``MonthVersions`` judges a month reported by ``log_event`` the same way."""
    key = context.asset_key
    code = context.assets_def.code_versions_by_key[key] or context.run.run_id
    tags, inputs = {CODE_VERSION_TAG: code}, {}
    for dep in sorted(context.assets_def.asset_deps[key], key=str):
        record = context.instance.get_latest_data_version_record(dep, partition_key=month)
        version = (extract_data_version_from_entry(record.event_log_entry) if record else None) or DEFAULT_DATA_VERSION
        inputs[dep] = version
        tags[get_input_data_version_tag(dep)] = version.value
        tags[get_input_event_pointer_tag(dep)] = str(record.storage_id) if record else NULL_EVENT_POINTER
    tags[DATA_VERSION_TAG] = data_version or compute_logical_data_version(code, inputs).value
    if data_version:
        tags[DATA_VERSION_IS_USER_PROVIDED_TAG] = "true"
    return tags


def _fail_naming_months(
    context: dg.AssetExecutionContext,
    finished: dict[str, dict[str, Any]],
    failed: dict[str, Exception],
    what: str,
    data_versions: dict[str, str] | None = None,
) -> None:
    """When months of the run failed: record each finished month as materialized on its own (a failed step records
    nothing, so a re-run would do them again), then raise one error naming every failed month. A run of one month
    raises its error as it is. Retried by the step's policy only if no failure is permanent."""
    if not failed:
        return
    for month, metadata in finished.items():
        tags = _month_version_tags(context, month, (data_versions or {}).get(month))
        context.log_event(
            dg.AssetMaterialization(asset_key=context.asset_key, partition=month, metadata=metadata, tags=tags)
        )
    errors = list(failed.values())
    if len(context.partition_keys) == 1:
        raise errors[0]
    permanent = any(isinstance(e, dg.Failure) and not e.allow_retries for e in errors)
    done = f"; {', '.join(sorted(finished))} done and recorded" if finished else ""
    raise dg.Failure(
        description=redact(
            f"{what} failed for {len(failed)} of {len(context.partition_keys)} months ({', '.join(sorted(failed))})"
            f"{done}: " + "; ".join(f"{month}: {failed[month]}" for month in sorted(failed))
        ),
        allow_retries=not permanent,
    ) from errors[0]


def build_trip_assets(
    service: TripService, kinds: TargetKinds, backfill_policy: dg.BackfillPolicy, calendar: Calendar
) -> list[dg.AssetsDefinition]:
    """``<service>/raw_trips``, ``clean_trips``, ``warehouse_trips`` and ``postgres_trips``, in group ``<service>``,
    partitioned by the months ``calendar`` offers for the service, reading the files of its source layout."""
    layout = calendar.layout
    monthly = {
        "key_prefix": service.name,
        "group_name": service.name,
        "partitions_def": calendar.partitions(service),
        "backfill_policy": backfill_policy,
        "owners": OWNERS,
        "tags": {"taxi/service": service.name},
    }
    table = f"`nyc_taxi.{service.table_name}`"
    file_kind = "parquet" if layout.extension == ".parquet" else "csv"

    # No retry policy: the source client retries its requests itself, within a time budget (one retry layer).
    @dg.asset(
        kinds={file_kind, kinds.lake},
        description=f"{service.description}\n\nThe month's file as published at the source "
        f"({layout.description}), in the lake's raw zone.",
        code_version=code_version(service, 1),
        **monthly,
    )
    def raw_trips(context: dg.AssetExecutionContext, source: TaxiSource, lake: Lake) -> dg.MaterializeResult:
        if not layout.has(service):
            raise dg.Failure(
                f"No {service.name} files in {layout.description}: {layout.missing_reason}", allow_retries=False
            )
        versions, source_versions, missing = MonthVersions(context), {}, []
        for month in months_of(context):
            key, source_path = service.raw_key(month.key, layout), service.source_path(month.key, layout)
            previous = _unchanged_raw_month(versions, month.key, source, source_path, lake, key)
            if previous is not None:
                context.add_asset_metadata(previous, partition_key=month.key)
                source_versions[month.key] = previous[SOURCE_VERSION]
            else:
                missing.append(month.key)

        def download_month(month: str) -> Download:
            """Runs in a download thread: no Dagster context here."""
            key, source_path = service.raw_key(month, layout), service.source_path(month, layout)
            with fail_fast_on(SourceError, ContractError, *lake.permanent_errors), lake.write(key) as path:
                # The check reads every byte of a CSV.gz through a gzip decoder: the download needs no second one.
                download = source.download(source_path, path, verify_gzip=False)
                # A file that cannot be cleaned never replaces the raw zone's good copy.
                check_source_file(path, service, redact(download.url))
            return download

        # Downloads wait on the network, so threads overlap them (each month has its own staging file).
        finished, failed = {}, {}
        for month, download, error in each_finished(missing, download_month, source.download_concurrency):
            if error is not None:
                if len(missing) > 1:  # seen now, not only when the other months are done
                    context.log.error(f"{month}: {error}")
                failed[month] = error
                continue
            key = service.raw_key(month, layout)
            source_url = redact(download.url)  # credentials in the source URL never reach the log or the metadata
            context.log.info(f"{source_url}: {download.bytes:,} bytes in {download.seconds:.1f}s -> {lake.uri(key)}")
            finished[month] = {
                **lake_file_metadata(lake.uri(key), download.bytes),
                "source_url": source_url,
                **source_identity_metadata(download.identity),
            }
            context.add_asset_metadata(finished[month], partition_key=month)
            source_versions[month] = download.identity.version
        _fail_naming_months(context, finished, failed, "Downloading", source_versions)
        # The month's data version is the source file's identity: downstream months skip while it stays the same.
        return dg.MaterializeResult(data_version=combined_version([source_versions[m.key] for m in months_of(context)]))

    @dg.asset(
        deps=[raw_trips],
        automation_condition=FOLLOWS_UPSTREAM,
        kinds={"parquet", kinds.lake},
        retry_policy=NETWORK_RETRY,
        metadata=schema_metadata(service),
        check_specs=[dropped_share_spec(service)],
        description=f"{service.description}\n\nThe month cleaned to the canonical schema: zstd parquet in the lake. "
        "Drops only rows whose pickup is outside the month or whose dropoff is before the pickup, and counts them.",
        code_version=code_version(service, 1),
        **monthly,
    )
    def clean_trips(context: dg.AssetExecutionContext, lake: Lake) -> dg.MaterializeResult:
        reports: dict[str, CleaningReport] = {}
        versions, allow_shrink = MonthVersions(context), shrink_allowed(context.run.tags)
        dirty: list[Month] = []
        for month in months_of(context):
            key = service.clean_key(month.key)
            previous = versions.skip(month.key, lambda key=key: {"bytes": _lake_bytes(lake, key)})
            if previous is not None:
                context.add_asset_metadata(previous, partition_key=month.key)
                reports[month.key] = recorded_cleaning_report(previous)
            else:
                dirty.append(month)
        # Cleaning is CPU-bound: processes, not threads; no more than the months, or than the memory holds.
        processes = affordable_processes(min(settings.clean_processes(), len(dirty)))
        # More than one: worker processes (clean_workers.py); one: in the step's process, as a single month is.
        workers = clean_pool(processes) if processes > 1 else None
        if workers is not None:
            context.log.info(f"cleaning {len(dirty)} months in {processes} processes")

        def clean_month(month: Month) -> tuple[CleaningReport, str | None, float]:
            """One month, read from and published to the lake by this process; cleaned by a worker process when
            there is a pool (plain paths and values in, a ``CleaningReport`` back), else here with progress logs."""
            key, raw_key, started = service.clean_key(month.key), service.raw_key(month.key, layout), time.monotonic()
            # fail_fast_on first: it also sees the lake's errors on reading and on publishing the file.
            with (
                fail_fast_on(ContractError, MonthShrinkError, *lake.permanent_errors),
                lake.read(raw_key) as raw,
                lake.write(key) as parquet,
            ):
                if workers is None:
                    progress = ProgressLog(context.log, f"{month.key}: cleaning")
                    report = clean_trips_file(raw, parquet, service, month.start, month.end, progress)
                else:
                    report = workers.submit(clean_trips_file, raw, parquet, service, month.start, month.end).result()
                # Decided before the new file is published: a refused month leaves the previous one everywhere.
                shrink = check_month_size(
                    lake.uri(raw_key),
                    lake.uri(key),
                    month.key,
                    report.rows_written,
                    report.rows_read,
                    _rows_in_lake(lake, key, context.log if workers is None else dg.get_dagster_logger()),
                    allowed=allow_shrink,
                )
            return report, shrink, time.monotonic() - started

        # One thread per worker process: it holds the month's lake files (a remote lake's local copies) meanwhile.
        finished, failed = {}, {}
        try:
            for month, done, error in each_finished(dirty, clean_month, processes if workers else 1):
                if error is not None:
                    if len(dirty) > 1:  # seen now, not only when the other months are done
                        context.log.error(f"{month.key}: {error}")
                    failed[month.key] = error
                    continue
                report, shrink, seconds = done
                key = service.clean_key(month.key)
                if shrink:
                    context.log.warning(f"{month.key}: {shrink}, published anyway ({ALLOW_SHRINK_TAG})")
                context.log.info(
                    f"{month.key}: kept {report.rows_written:,} of {report.rows_read:,} rows, dropped "
                    f"{report.dropped} in {seconds:.1f}s -> {lake.uri(key)}"
                )
                finished[month.key] = {
                    **cleaning_metadata(report),
                    **lake_file_metadata(lake.uri(key), lake.size(key)),
                    **schema_metadata(service),
                }
                context.add_asset_metadata(finished[month.key], partition_key=month.key)
                reports[month.key] = report
        finally:
            if workers is not None:
                workers.shutdown(cancel_futures=True)
        _fail_naming_months(context, finished, failed, "Cleaning")
        return dg.MaterializeResult(check_results=[dropped_share_result(reports)])

    @dg.asset(
        deps=[clean_trips],
        automation_condition=FOLLOWS_UPSTREAM,
        kinds={kinds.warehouse, "table"},
        pool="warehouse",
        retry_policy=NETWORK_RETRY,
        metadata=schema_metadata(service),
        check_specs=[row_count_spec(service, "warehouse_trips")],
        description=f"{service.description}\n\nThe month in the warehouse table {table}, replaced atomically.",
        code_version=code_version(service, 1),
        **monthly,
    )
    def warehouse_trips(context: dg.AssetExecutionContext, warehouse: TableStore, lake: Lake) -> dg.MaterializeResult:
        return load_months(context, service, warehouse, lake, kinds.warehouse)

    @dg.asset(
        deps=[clean_trips],
        automation_condition=FOLLOWS_UPSTREAM,
        kinds={"postgres", "table"},
        pool="postgres",
        retry_policy=NETWORK_RETRY,
        metadata=schema_metadata(service),
        check_specs=[row_count_spec(service, "postgres_trips")],
        description=f"{service.description}\n\nThe month in the Postgres table {table}, loaded by COPY and swapped "
        "in as the month's partition.",
        code_version=code_version(service, 1),
        **monthly,
    )
    def postgres_trips(context: dg.AssetExecutionContext, postgres: TableStore, lake: Lake) -> dg.MaterializeResult:
        return load_months(context, service, postgres, lake, "postgres")

    return [raw_trips, clean_trips, warehouse_trips, postgres_trips]
