"""The warehouse in BigQuery, loaded straight from the lake's parquet objects in GCS.

A month is loaded by a BigQuery load job (no row passes through this process) into a staging table that expires
on its own, then swapped into ``<service>_trips`` by one multi-statement transaction: delete the month, insert
the staged rows, check the month's count, commit. A reader sees the old month or the new one; a failed load or a
failed check leaves the old month in place. The count reported is read back from BigQuery after the commit.

Why not the alternatives: a load into the partition decorator (``table$202101``) with WRITE_TRUNCATE is atomic
too, but the emulator the tests run on rejects decorators; ``MERGE ... WHEN NOT MATCHED BY SOURCE`` returned
success there without inserting anything. The transaction works on both, and its in-transaction count check
turns any such silent no-op into a rollback.

Schema evolution: the load job gets the schema of the file's own columns (read from the object's footer and
checked against the contract first), and the swap inserts those columns: a clean file written before the
contract gained an optional column loads with it null. A table created from an older contract gains the new
columns as NULLABLE fields (a schema change, no loaded month is rewritten; they read null). The emulator needs two
steps for that, both right on BigQuery: ``update_table`` of the schema (the emulator changes only its catalog),
then ``ALTER TABLE ... ADD COLUMN IF NOT EXISTS`` (the emulator adds the column to its storage; on BigQuery the
column already exists and the statement does nothing). The emulator also matches a parquet file's columns to the
load job's schema by position, not by name: another reason the load schema is the file's own columns, in order.

Real BigQuery, beyond the emulator:
- Two transactions that change one table at once conflict, and BigQuery cancels one ("Transaction is aborted due
  to concurrent update", a 400). The swap is then run again with jittered exponential backoff (up to
  ``swap_retry_timeout_s``); the staging table stays until the swap commits or the retries run out.
- A job that outlasts ``job_timeout_s`` is cancelled, and the staging table is dropped only once the job has
  stopped: a swap that still runs after ``cancel_wait_s`` keeps its staging table (which expires by itself).
- A dataset or table with a default expiration would delete tables, or the partitions of old months, by itself:
  it is refused before anything is written (``check_no_expiration``). The BigQuery sandbox (a project without
  billing) forces such expirations on every dataset, and has no DML: it is refused the same way.
- A missing dataset, table or object (404) and a permission error (403) fail the step at once; a 403 for a rate
  limit stays retryable.
"""

from __future__ import annotations

import concurrent.futures
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import dagster as dg
import pyarrow as pa
import requests
from dagster_gcp import BigQueryResource
from google.api_core.exceptions import BadRequest, Forbidden, GoogleAPICallError, NotFound, RetryError
from google.api_core.retry import Retry
from google.cloud import bigquery
from pydantic import Field

from taxi_assets.months import Month
from taxi_assets.resources.gcp_config import (
    api_endpoint_field,
    client_options,
    credentials_field,
    load_credentials,
)
from taxi_assets.resources.lake import Lake
from taxi_assets.resources.sql import added_columns, file_columns
from taxi_assets.resources.stores import LoadResult, TableStore
from taxi_assets.services import Column, ContractError, DataContract, TripService
from taxi_assets.settings import BQ_ENDPOINT, BQ_LOCATION

# Arrow type of the data contract -> BigQuery type (the names the API returns, so schemas compare equal).
# Naive timestamps are NYC wall-clock times: DATETIME, not TIMESTAMP (which would claim they are UTC).
# The contract's types come first; the others are those of the summaries' DataFrames (bigquery_io_manager.py).
BQ_TYPES = {
    pa.int64(): "INTEGER",
    pa.float64(): "FLOAT",
    pa.string(): "STRING",
    pa.timestamp("us"): "DATETIME",
    pa.large_string(): "STRING",
    pa.bool_(): "BOOLEAN",
    pa.date32(): "DATE",
    pa.timestamp("ns"): "DATETIME",
}
# The same types in GoogleSQL DDL (ALTER TABLE ... ADD COLUMN).
_DDL_TYPES = {pa.int64(): "INT64", pa.float64(): "FLOAT64", pa.string(): "STRING", pa.timestamp("us"): "DATETIME"}
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


class BigQueryClientResource(BigQueryResource):
    """dagster-gcp's ``BigQueryResource`` with a key given as a path or JSON, and an endpoint override.

    The stock ``gcp_credentials`` field (a base64 key) still works; it sets ``GOOGLE_APPLICATION_CREDENTIALS``
    for the whole process while the client lives, which is why ``credentials`` (passed to the client directly)
    is preferred.

    Example:
        .. code-block:: python

            bigquery = BigQueryClientResource(project=dg.EnvVar("TAXI_GCP_PROJECT"), location="US")
            with bigquery.get_client() as client:
                client.query("SELECT 1").result()
    """

    credentials: str | None = credentials_field()
    api_endpoint: str | None = api_endpoint_field("BigQuery", BQ_ENDPOINT)

    @contextmanager
    def get_client(self) -> Iterator[bigquery.Client]:
        if self.gcp_credentials:
            with super().get_client() as client:
                yield client
            return
        with bigquery_client(self.project, self.location, self.credentials, self.api_endpoint) as client:
            yield client


@contextmanager
def bigquery_client(
    project: str | None, location: str | None, credentials: str | None, api_endpoint: str | None
) -> Iterator[bigquery.Client]:
    """A BigQuery client with a key given as a path or JSON (else the default credentials) and an optional
    endpoint (an emulator), closed afterwards: the one way the resource and the summaries' IO manager build it."""
    client = bigquery.Client(
        project=project,
        location=location,
        credentials=load_credentials(credentials, api_endpoint),
        client_options=client_options(api_endpoint),
    )
    try:
        yield client
    finally:
        client.close()


def bigquery_schema(contract: DataContract, columns: Iterable[Column] | None = None) -> list[bigquery.SchemaField]:
    """The contract's canonical schema as BigQuery fields: given explicitly to every table and load, never detected.

    ``columns``: only these of the contract's columns, in this order (a file's own columns, for its load job).
    """
    return [
        bigquery.SchemaField(c.name, BQ_TYPES[c.type], mode="NULLABLE", description=c.description or None)
        for c in (contract.columns if columns is None else columns)
    ]


def external_source_uris(service: TripService, lake: Lake) -> list[str]:
    """Every clean parquet object of ``service``: the source of ``<service>_trips_external``."""
    return [lake.uri(f"{service.clean_prefix()}*.parquet")]


def _load_job_metadata(uri: str, load: bigquery.LoadJob) -> dict:
    """What the UI shows of a load job: the gs:// object, the job id (to find it in the console), its counts."""
    return {
        "source_uri": dg.MetadataValue.path(uri),
        "bigquery_load_job_id": load.job_id,
        "rows_loaded": dg.MetadataValue.int(load.output_rows or 0),
        **({"bytes_loaded": dg.MetadataValue.int(load.input_file_bytes)} if load.input_file_bytes else {}),
    }


def _datetime_literal(value: datetime) -> str:
    # Literals, not bound parameters, inside the transaction script: the emulator rejects parameters in
    # multi-statement queries. Safe: built from a datetime, never from text.
    return f"DATETIME '{value:%Y-%m-%d %H:%M:%S}'"


# -- real-BigQuery failure modes: conflicts, timeouts, expirations ----------------------------------------------

T = TypeVar("T")
_CONCURRENT_UPDATE = re.compile(r"due to concurrent update", re.IGNORECASE)
# 403s that mean "slow down", not "not allowed" (BigQuery's own retry reasons, plus the per-job one).
_RATE_LIMIT_REASONS = {"rateLimitExceeded", "jobRateLimitExceeded", "backendError", "internalError"}
_SANDBOX_EXPIRATION_MS = 60 * 24 * 3600 * 1000  # the BigQuery sandbox forces 60 days on every dataset


class BigQueryBusy(RuntimeError):
    """A 403 that is a rate limit: retryable, unlike other 403s (``fail_fast_on`` reads ``transient``)."""

    transient = True


class ExpiringStorageError(ValueError):
    """A dataset or table that deletes tables or partitions by itself: loading into it would lose months."""


class JobTimeout(TimeoutError):
    """A job outlasted its timeout and was cancelled; ``stopped`` says whether it ended within the wait after."""

    def __init__(self, message: str, stopped: bool):
        super().__init__(message)
        self.stopped = stopped


def _messages(error: BaseException) -> list[str]:
    details = [e.get("message", "") for e in getattr(error, "errors", None) or [] if isinstance(e, dict)]
    return [str(getattr(error, "message", "") or error), *details]


def _reasons(error: BaseException) -> set[str]:
    return {e.get("reason", "") for e in getattr(error, "errors", None) or [] if isinstance(e, dict)}


def is_concurrent_update(error: BaseException) -> bool:
    """Whether ``error`` is BigQuery cancelling a transaction or DML job because another one changed the same
    table ("Transaction is aborted due to concurrent update against table ...", "Could not serialize access to
    table ... due to concurrent update": both 400 ``invalidQuery``). Nothing was changed; a rerun succeeds."""
    return isinstance(error, BadRequest) and any(_CONCURRENT_UPDATE.search(m) for m in _messages(error))


def concurrent_update_retry(timeout_s: float, what: str) -> Retry:
    """Reruns of a whole transaction aborted by a concurrent update: full-jitter exponential backoff from 1 s,
    at most 30 s apart, for ``timeout_s``. Each abort is logged with ``what`` (the table)."""

    def log(error: BaseException) -> None:
        dg.get_dagster_logger().warning(f"{what}: transaction aborted by a concurrent update, retrying: {error}")

    return Retry(
        predicate=is_concurrent_update, initial=1.0, maximum=30.0, multiplier=2.0, timeout=timeout_s, on_error=log
    )


def retry_on_concurrent_update(run: Callable[[], T], timeout_s: float, what: str) -> T:
    """``run()`` (one whole transaction), rerun while BigQuery aborts it for a concurrent update of ``what``."""
    try:
        return concurrent_update_retry(timeout_s, what)(run)()
    except RetryError as error:
        raise dg.Failure(
            description=f"{what}: the transaction was aborted by concurrent updates of the table for {timeout_s:.0f}s "
            f"and was not committed (last error: {error.cause}); the month is unchanged",
            allow_retries=False,
        ) from error


@contextmanager
def classify_errors(what: str) -> Iterator[None]:
    """Re-raise a rate-limit 403 as ``BigQueryBusy`` (retryable); any other 403 stays permanent. A 403 for a
    project without billing (the BigQuery sandbox, which has no DML) says how to fix it."""
    try:
        yield
    except Forbidden as error:
        reasons = _reasons(error)
        if reasons & _RATE_LIMIT_REASONS:
            limit = ", ".join(sorted(reasons))
            raise BigQueryBusy(f"{what}: BigQuery rate limit ({limit}): {error.message}") from error
        if "billingNotEnabled" in reasons or any("billing" in m.lower() for m in _messages(error)):
            raise Forbidden(
                f"{what}: the project has no billing (a BigQuery sandbox project cannot run the DML this store "
                f"needs): enable billing for it. {error.message}",
                errors=error.errors,
            ) from error
        raise


def wait_for_job(job: bigquery.LoadJob | bigquery.QueryJob, timeout_s: float, cancel_wait_s: float, what: str) -> None:
    """Wait up to ``timeout_s`` for ``job``. Past that, cancel it and wait up to ``cancel_wait_s`` for it to stop,
    so nothing it reads (a staging table) is dropped under it; then raise ``JobTimeout``. A job that finished
    successfully in the meantime (the cancel came too late) is simply done."""
    try:
        job.result(timeout=timeout_s)
        return
    except (concurrent.futures.TimeoutError, requests.exceptions.Timeout):
        pass
    log = dg.get_dagster_logger()
    log.warning(f"{what}: BigQuery job {job.job_id} still running after {timeout_s:.0f}s: cancelling it")
    try:
        job.cancel(timeout=60)
    except GoogleAPICallError as error:  # it may have finished meanwhile; the state below tells
        log.warning(f"{what}: cancelling job {job.job_id} failed: {error}")
    deadline = time.monotonic() + cancel_wait_s
    while True:
        job.reload(timeout=60)
        if job.state == "DONE" or time.monotonic() >= deadline:
            break
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    if job.state == "DONE" and job.error_result is None:
        log.warning(f"{what}: job {job.job_id} finished before the cancel took effect")
        return
    stopped = job.state == "DONE"
    outcome = "cancelled" if stopped else f"still running {cancel_wait_s:.0f}s after it was cancelled"
    raise JobTimeout(f"{what}: BigQuery job {job.job_id} did not finish within {timeout_s:.0f}s: {outcome}", stopped)


def check_no_expiration(dataset: bigquery.Dataset | None = None, table: bigquery.Table | None = None) -> None:
    """Refuse (``ExpiringStorageError``) a dataset with a default table or partition expiration, and a table
    that expires or drops old partitions: either would delete loaded months by itself, without an error.

    The message names the dataset or table, the setting, and the statement that removes it. The BigQuery sandbox
    forces a 60-day default on every dataset: the message then says so (it has no DML either: enable billing).
    """
    problems: list[str] = []
    if dataset is not None:
        name = f"{dataset.project}.{dataset.dataset_id}"
        ms = dataset.default_table_expiration_ms
        if ms:
            problems.append(f"dataset {name} has a default table expiration of {_days(ms)} (defaultTableExpirationMs)")
        ms_part = dataset.default_partition_expiration_ms
        if ms_part:
            problems.append(
                f"dataset {name} has a default partition expiration of {_days(ms_part)} (defaultPartitionExpirationMs)"
            )
        if problems:
            fix = (
                f"remove it: ALTER SCHEMA `{name}` SET OPTIONS (default_table_expiration_days = NULL, "
                "default_partition_expiration_days = NULL), or set TAXI_BQ_DATASET to another dataset"
            )
            if _SANDBOX_EXPIRATION_MS in (ms, ms_part):
                fix += (
                    "; 60 days is what the BigQuery sandbox forces: a project without billing also has no DML, "
                    "enable billing for it"
                )
            problems.append(fix)
    if table is not None:
        name = f"{table.project}.{table.dataset_id}.{table.table_id}"
        fixes = []
        if table.expires is not None:
            problems.append(f"table {name} expires at {table.expires:%Y-%m-%d %H:%M} UTC (expirationTime)")
            fixes.append("expiration_timestamp = NULL")
        partition_ms = table.time_partitioning.expiration_ms if table.time_partitioning else None
        if partition_ms:
            problems.append(
                f"table {name} drops partitions older than {_days(partition_ms)} (timePartitioning.expirationMs), "
                "which are the old months"
            )
            fixes.append("partition_expiration_days = NULL")
        if fixes:
            problems.append(f"remove it: ALTER TABLE `{name}` SET OPTIONS ({', '.join(fixes)})")
    if problems:
        raise ExpiringStorageError(
            "; ".join(problems) + ". Nothing was loaded: months loaded there would be deleted by BigQuery itself"
        )


def _days(ms: int) -> str:
    days = int(ms) / 86_400_000
    return f"{days:g} days" if days >= 1 else f"{int(ms) / 3_600_000:g} hours"


class BigQueryWarehouse(TableStore):
    """Tables in a BigQuery dataset; trips tables are partitioned by month and clustered by pickup zone.

    Example:
        .. code-block:: python

            warehouse = BigQueryWarehouse(
                bigquery=BigQueryClientResource(project="my-project", location="US"), dataset="nyc_taxi"
            )
            warehouse.replace_month(YELLOW, Month.parse("2021-01"), gcs_lake, YELLOW.clean_key("2021-01"))
    """

    # A missing object, dataset or table (404), no access (403: a rate limit is re-raised as BigQueryBusy, which
    # stays retryable), a file or table that does not fit the contract, a dataset or table that expires, a load or
    # query BigQuery rejects as invalid (corrupt file, schema mismatch, rows outside the month: 400 Bad Request; a
    # concurrent-update abort is retried here first), or a request whose own retries (the client's, for quota, 5xx
    # and timeouts) ran out: a step retry would not help, or would only repeat them.
    permanent_errors = (
        FileNotFoundError,
        pa.ArrowInvalid,
        ContractError,
        ExpiringStorageError,
        BadRequest,
        NotFound,
        Forbidden,
        RetryError,
    )

    bigquery: BigQueryResource = Field(description="The BigQuery client resource (project, location, credentials).")
    dataset: str = Field(
        default="nyc_taxi", description="Dataset that holds the tables (TAXI_BQ_DATASET); created in the location."
    )
    staging_expiration_hours: float = Field(
        default=24, gt=0, description="Lifetime of a staging table, so one left by a killed run removes itself."
    )
    job_timeout_s: float = Field(
        default=1800, gt=0, description="How long to wait for one load or query job before cancelling it."
    )
    cancel_wait_s: float = Field(
        default=60, ge=0, description="How long to wait for a cancelled job to stop before dropping its staging table."
    )
    swap_retry_timeout_s: float = Field(
        default=300,
        gt=0,
        description="How long to keep rerunning a month's swap that BigQuery aborts for a concurrent update of the "
        "table (jittered exponential backoff).",
    )

    # -- names -----------------------------------------------------------------------------------------------

    def _table_id(self, client: bigquery.Client, name: str) -> str:
        for part in (self.dataset, name):
            if not _NAME.match(part):
                raise ValueError(f"{part!r} is not a BigQuery dataset or table name")
        return f"{client.project}.{self.dataset}.{name}"

    @staticmethod
    def _sql(table_id: str) -> str:
        return f"`{table_id}`"  # the parts are checked by _table_id: no backtick can get in

    # -- setup: dataset, tables ------------------------------------------------------------------------------

    def _ensure_dataset(self, client: bigquery.Client) -> None:
        ref = bigquery.DatasetReference(client.project, self.dataset)
        try:
            dataset = client.get_dataset(ref)
        except NotFound:
            new = bigquery.Dataset(ref)
            new.location = self.bigquery.location
            new.description = "NYC TLC taxi trips, loaded by the taxi_assets Dagster code location."
            dataset = client.create_dataset(new, exists_ok=True)  # exists_ok: another run may win the race
        want = (self.bigquery.location or "").upper()
        if want and (dataset.location or "").upper() != want:
            raise dg.Failure(
                f"dataset {client.project}.{self.dataset} is in {dataset.location}, not {want}: "
                f"set {BQ_LOCATION}={dataset.location} or use another dataset"
            )
        check_no_expiration(dataset=dataset)  # also the sandbox, which forces one on every dataset

    def _ensure_trips_table(self, client: bigquery.Client, service: TripService) -> str:
        table_id = self._table_id(client, service.table_name)
        table = bigquery.Table(table_id, schema=bigquery_schema(service))
        table.description = service.description
        table.time_partitioning = bigquery.TimePartitioning(
            type_=bigquery.TimePartitioningType.MONTH, field=service.pickup_column
        )
        table.clustering_fields = ["pu_location_id"]
        existing = client.create_table(table, exists_ok=True)
        check_no_expiration(table=existing)
        added = _check_schema(existing, service)
        if added:  # created from an older contract: the months loaded before read the new columns as null
            self._add_fields(client, existing, added)
            # The emulator's schema update changes its catalog only; this adds the columns to its storage. On
            # BigQuery they exist by now, and IF NOT EXISTS makes each statement a no-op.
            for field in added:
                ddl_type = _DDL_TYPES[service.column(field.name).type]
                self._query(
                    client,
                    f"ALTER TABLE {self._sql(table_id)} ADD COLUMN IF NOT EXISTS {field.name} {ddl_type}",
                    {"taxi_service": service.name},
                )
        return table_id

    def _add_fields(self, client: bigquery.Client, table: bigquery.Table, added: list[bigquery.SchemaField]) -> None:
        """Append the NULLABLE ``added`` fields to ``table``'s schema (a schema change: no row is rewritten)."""
        table_id = f"{table.project}.{table.dataset_id}.{table.table_id}"
        names = ", ".join(f.name for f in added)
        dg.get_dagster_logger().info(f"{table_id}: adding the contract's new column(s) {names}")
        # A new Table object, without the etag: two runs that add the same columns at once both succeed.
        client.update_table(bigquery.Table(table_id, schema=[*table.schema, *added]), ["schema"])

    def _ensure_external_table(self, client: bigquery.Client, service: TripService, lake: Lake) -> str:
        table_id = self._table_id(client, f"{service.table_name}_external")
        config = bigquery.ExternalConfig(bigquery.ExternalSourceFormat.PARQUET)
        config.source_uris = external_source_uris(service, lake)
        table = bigquery.Table(table_id, schema=bigquery_schema(service))  # explicit: every month agrees
        table.external_data_configuration = config
        table.description = f"Ad-hoc queries over the lake: every clean parquet object of {service.name}."
        existing = client.create_table(table, exists_ok=True)
        added = _check_schema(existing, service)
        if added:
            self._add_fields(client, existing, added)  # an external table has no storage to ALTER
        return table_id

    # -- jobs ------------------------------------------------------------------------------------------------

    def _load(self, client: bigquery.Client, uri: str, table_id: str, schema, labels) -> bigquery.LoadJob:
        config = bigquery.LoadJobConfig(
            source_format=bigquery.SourceFormat.PARQUET,
            schema=schema,
            autodetect=False,
            write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
            labels=labels,
        )
        job = client.load_table_from_uri(uri, table_id, job_config=config, job_id_prefix="taxi_load_")
        wait_for_job(job, self.job_timeout_s, self.cancel_wait_s, f"loading {uri} into {table_id}")
        return job

    def _query(self, client: bigquery.Client, sql: str, labels, **params: datetime) -> bigquery.QueryJob:
        config = bigquery.QueryJobConfig(
            labels=labels,
            query_parameters=[bigquery.ScalarQueryParameter(k, "DATETIME", v) for k, v in params.items()],
        )
        job = client.query(sql, job_config=config, job_id_prefix="taxi_query_")
        wait_for_job(job, self.job_timeout_s, self.cancel_wait_s, f"query on {self.dataset}")
        return job

    def _month_where(self, service: TripService) -> str:
        return f"{service.pickup_column} >= @start AND {service.pickup_column} < @end"

    def _count_month(self, client: bigquery.Client, table_id: str, service: TripService, month: Month, labels) -> int:
        job = self._query(
            client,
            f"SELECT COUNT(*) AS n FROM {self._sql(table_id)} WHERE {self._month_where(service)}",
            labels,
            start=month.start,
            end=month.end,
        )
        return next(iter(job.result())).n

    # -- the TableStore interface ----------------------------------------------------------------------------

    def replace_month(self, service: TripService, month: Month, lake: Lake, key: str) -> LoadResult:
        uri = _gs_uri(lake, key)
        labels = {"taxi_service": service.name, "taxi_month": month.key}
        # Checked before anything changes; the file's own columns, in its order, are the load job's schema.
        present = file_columns(service, lake.parquet_schema(key), uri)
        with self.bigquery.get_client() as client, classify_errors(f"{uri} -> {self.dataset}.{service.table_name}"):
            self._ensure_dataset(client)
            table_id = self._ensure_trips_table(client, service)
            external_id = self._ensure_external_table(client, service, lake)

            staging_id = self._create_staging(client, service, month, present)
            keep_staging = False
            try:
                load = self._load(client, uri, staging_id, bigquery_schema(service, present), labels)
                staged, outside = self._staged_counts(client, staging_id, service, month, labels)
                if outside:
                    raise dg.Failure(
                        f"{uri}: {outside:,} of {staged:,} rows have a pickup outside {month.key}; "
                        "the month in BigQuery is unchanged"
                    )
                swap_sql = self._swap_sql(service, month, table_id, staging_id, staged, present)
                # A concurrent update of the table aborts the whole transaction: it is rerun, and the staging
                # table it reads stays until it commits.
                swap = retry_on_concurrent_update(
                    lambda: self._query(client, swap_sql, labels), self.swap_retry_timeout_s, f"{table_id} {month.key}"
                )
            except JobTimeout as error:
                keep_staging = not error.stopped
                if keep_staging:  # dropping it under a running swap would turn a clean outcome into a failed read
                    dg.get_dagster_logger().warning(
                        f"{staging_id} kept for the job that still runs; it expires by itself "
                        f"within {self.staging_expiration_hours:g} h"
                    )
                raise
            finally:
                if not keep_staging:
                    client.delete_table(staging_id, not_found_ok=True)
            rows = self._count_month(client, table_id, service, month, labels)
            # COUNT(*) of a whole table is answered from metadata: no bytes scanned, nothing billed.
            whole = self._query(client, f"SELECT COUNT(*) AS n FROM {self._sql(table_id)}", labels)
            table_rows = next(iter(whole.result())).n

        if rows != staged:  # the transaction checked this; a concurrent writer could still change it after
            raise dg.Failure(f"{table_id}: {month.key} holds {rows:,} rows after the load, expected {staged:,}")
        return LoadResult(
            table=table_id,
            rows=rows,
            table_rows=table_rows,
            metadata={
                **_load_job_metadata(uri, load),
                "bigquery_transaction_job_id": swap.job_id,
                "external_table": external_id,
            },
        )

    def _create_staging(
        self, client: bigquery.Client, service: TripService, month: Month, columns: list[Column]
    ) -> str:
        # A unique name per attempt (concurrent runs never share one) and an expiry in case the run dies.
        name = f"_staging_{service.table_name}_{month.key.replace('-', '')}_{uuid.uuid4().hex[:8]}"
        staging_id = self._table_id(client, name)
        staging = bigquery.Table(staging_id, schema=bigquery_schema(service, columns))
        staging.expires = datetime.now(UTC) + timedelta(hours=self.staging_expiration_hours)
        client.create_table(staging)
        return staging_id

    def _staged_counts(self, client, staging_id: str, service: TripService, month: Month, labels) -> tuple[int, int]:
        pickup = service.pickup_column
        job = self._query(
            client,
            f"SELECT COUNT(*) AS staged, COUNTIF({pickup} IS NULL OR {pickup} < @start OR {pickup} >= @end) AS outside "
            f"FROM {self._sql(staging_id)}",
            labels,
            start=month.start,
            end=month.end,
        )
        row = next(iter(job.result()))
        return row.staged, row.outside

    def _swap_sql(
        self, service: TripService, month: Month, table_id: str, staging_id: str, expected: int, present: list[Column]
    ) -> str:
        # The staged columns only: the table's others (optional, newer than the file) are inserted as null.
        pickup, columns = service.pickup_column, ", ".join(c.name for c in present)
        where = f"{pickup} >= {_datetime_literal(month.start)} AND {pickup} < {_datetime_literal(month.end)}"
        # The check inside the transaction: a statement that reports success without writing (as MERGE did on
        # the emulator) fails the script, and BigQuery rolls the transaction back.
        return f"""
BEGIN TRANSACTION;
DELETE FROM {self._sql(table_id)} WHERE {where};
INSERT INTO {self._sql(table_id)} ({columns}) SELECT {columns} FROM {self._sql(staging_id)};
SELECT IF((SELECT COUNT(*) FROM {self._sql(table_id)} WHERE {where}) = {int(expected)}, 'ok',
          ERROR('month {month.key}: row count after insert differs from the staged rows; rolled back'));
COMMIT TRANSACTION;
"""

    def replace_table(self, contract: DataContract, lake: Lake, key: str) -> LoadResult:
        # A lookup table is replaced whole by one load job with WRITE_TRUNCATE: a load job commits all or
        # nothing, so this is atomic without a staging table.
        uri = _gs_uri(lake, key)
        labels = {"taxi_table": contract.table_name}
        present = file_columns(contract, lake.parquet_schema(key), uri)
        # The load's schema becomes the table's: a lookup file must have every column of its contract.
        missing = [c.name for c in contract.columns if c not in present]
        if missing:
            raise ContractError(
                f"{uri}: column(s) {', '.join(map(repr, missing))} missing: a lookup table is replaced whole by "
                "its file, which must have every column of the contract"
            )
        with self.bigquery.get_client() as client, classify_errors(f"{uri} -> {self.dataset}.{contract.table_name}"):
            self._ensure_dataset(client)
            table_id = self._table_id(client, contract.table_name)
            try:
                check_no_expiration(table=client.get_table(table_id))
            except NotFound:
                pass  # the load job creates it, with the dataset's defaults (checked above)
            load = self._load(client, uri, table_id, bigquery_schema(contract, present), labels)
            job = self._query(client, f"SELECT COUNT(*) AS n FROM {self._sql(table_id)}", labels)
            rows = next(iter(job.result())).n
        if rows != load.output_rows:
            raise dg.Failure(f"{table_id}: {rows:,} rows after the load, the load job reported {load.output_rows:,}")
        return LoadResult(
            table=table_id,
            rows=rows,
            metadata=_load_job_metadata(uri, load),
        )

    def month_row_count(self, service: TripService, month: Month) -> int:
        with self.bigquery.get_client() as client, classify_errors(f"{self.dataset}.{service.table_name}"):
            table_id = self._table_id(client, service.table_name)
            if not table_exists(client, table_id):
                return 0
            return self._count_month(client, table_id, service, month, {"taxi_service": service.name})


def table_exists(client: bigquery.Client, table_id: str) -> bool:
    """Whether ``table_id`` (``project.dataset.table``, or ``dataset.table``) exists; a missing dataset is no table."""
    try:
        client.get_table(table_id)
        return True
    except NotFound:
        return False


def _gs_uri(lake: Lake, key: str) -> str:
    uri = lake.uri(key)
    if not uri.startswith("gs://"):
        raise dg.Failure(f"BigQuery loads from GCS: the lake gave {uri!r} (use GCSLake with TAXI_TARGET=gcp)")
    return uri


def _check_schema(table: bigquery.Table, contract: DataContract) -> list[bigquery.SchemaField]:
    """The contract's fields ``table`` lacks: the optional columns the contract gained since the table was created.

    A table whose columns differ otherwise is refused (``ContractError``): loads would fail later, or worse,
    misplace values.
    """
    name = f"{table.project}.{table.dataset_id}.{table.table_id}"
    want = bigquery_schema(contract)
    differ = [
        f"{h.name} is {_standard_type(h)}, not {_standard_type(w)}"
        for h, w in zip(table.schema, want, strict=False)
        if h.name == w.name and _standard_type(h) != _standard_type(w)
    ]
    if differ:
        raise ContractError(
            f"{name} does not match the {contract.name} contract ({'; '.join(differ[:5])}): "
            "drop the table (or migrate it) and reload"
        )
    added_columns(contract, [f.name for f in table.schema], name)  # the contract's first columns, the rest optional
    return want[len(table.schema) :]


def _standard_type(field: bigquery.SchemaField) -> str:
    return _STANDARD_TYPES.get(field.field_type, field.field_type)


# The API may answer with either spelling of a type.
_STANDARD_TYPES = {"INT64": "INTEGER", "FLOAT64": "FLOAT", "BOOL": "BOOLEAN"}
