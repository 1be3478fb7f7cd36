"""The warehouse in BigQuery, loaded straight from the lake's parquet objects in GCS.

A month is loaded by a BigQuery load job (no row passes through this process) into a staging table that expires
on its own, then swapped into ``<service>_trips`` by one multi-statement transaction: delete the month, insert
the staged rows, check the month's count, commit. A reader sees the old month or the new one; a failed load or a
failed check leaves the old month in place. The count reported is read back from BigQuery after the commit.

Why not the alternatives: a load into the partition decorator (``table$202101``) with WRITE_TRUNCATE is atomic
too, but the emulator the tests run on rejects decorators; ``MERGE ... WHEN NOT MATCHED BY SOURCE`` returned
success there without inserting anything. The transaction works on both, and its in-transaction count check
turns any such silent no-op into a rollback.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import dagster as dg
import pyarrow as pa
from dagster_gcp import BigQueryResource
from google.api_core.exceptions import BadRequest, NotFound
from google.cloud import bigquery
from pydantic import Field

from taxi_assets.partitions import Month
from taxi_assets.resources.gcp_config import LOCATION, client_options, load_credentials
from taxi_assets.resources.lake import Lake
from taxi_assets.resources.stores import LoadResult, TableStore
from taxi_assets.services import DataContract, TripService

# Arrow type of the data contract -> BigQuery type (the names the API returns, so schemas compare equal).
# Naive timestamps are NYC wall-clock times: DATETIME, not TIMESTAMP (which would claim they are UTC).
_BQ_TYPES = {
    pa.int64(): "INTEGER",
    pa.float64(): "FLOAT",
    pa.string(): "STRING",
    pa.timestamp("us"): "DATETIME",
}
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

    credentials: str | None = Field(
        default=None,
        description="Key of a service account (path to the JSON file, or the JSON itself); unset: Application "
        "Default Credentials. Give it with EnvVar so it never shows in the UI.",
    )
    api_endpoint: str | None = Field(
        default=None, description="BigQuery API endpoint override, e.g. an emulator (TAXI_BQ_API_ENDPOINT)."
    )

    @contextmanager
    def get_client(self) -> Iterator[bigquery.Client]:
        if self.gcp_credentials:
            with super().get_client() as client:
                yield client
            return
        client = bigquery.Client(
            project=self.project,
            location=self.location,
            credentials=load_credentials(self.credentials, self.api_endpoint),
            client_options=client_options(self.api_endpoint),
        )
        try:
            yield client
        finally:
            client.close()


def bigquery_schema(contract: DataContract) -> list[bigquery.SchemaField]:
    """The contract's canonical schema as BigQuery fields: given explicitly to every table and load, never detected."""
    return [
        bigquery.SchemaField(
            f.name,
            _BQ_TYPES[f.type],
            mode="NULLABLE",
            description=(f.metadata or {}).get(b"description", b"").decode() or None,
        )
        for f in contract.schema
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


class BigQueryWarehouse(TableStore):
    """Tables in a BigQuery dataset; trips tables are partitioned by month and clustered by pickup zone.

    Example:
        .. code-block:: python

            warehouse = BigQueryWarehouse(
                bigquery=BigQueryClientResource(project="my-project", location="US"), dataset="nyc_taxi"
            )
            warehouse.replace_month(YELLOW, Month.parse("2021-01"), gcs_lake, YELLOW.clean_key("2021-01"))
    """

    # A missing object, or a load or query BigQuery rejects as invalid (corrupt file, schema mismatch, rows
    # outside the month): 400 Bad Request. Quota, 5xx and timeouts are retried.
    permanent_errors = (FileNotFoundError, BadRequest)

    bigquery: BigQueryResource = Field(description="The BigQuery client resource (project, location, credentials).")
    dataset: str = Field(
        default="nyc_taxi", description="Dataset that holds the tables (TAXI_BQ_DATASET); created in the location."
    )
    staging_expiration_hours: float = Field(
        default=24, gt=0, description="Lifetime of a staging table, so one left by a killed run removes itself."
    )
    job_timeout_s: float = Field(default=1800, gt=0, description="How long to wait for one load or query job.")

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
                f"set {LOCATION}={dataset.location} or use another dataset"
            )

    def _ensure_trips_table(self, client: bigquery.Client, service: TripService) -> str:
        table_id = self._table_id(client, service.table_name)
        table = bigquery.Table(table_id, schema=bigquery_schema(service))
        table.description = service.description
        table.time_partitioning = bigquery.TimePartitioning(
            type_=bigquery.TimePartitioningType.MONTH, field=service.pickup_column
        )
        table.clustering_fields = ["pu_location_id"]
        existing = client.create_table(table, exists_ok=True)
        _check_schema(existing, service)
        return table_id

    def _ensure_external_table(self, client: bigquery.Client, service: TripService, lake: Lake) -> str:
        table_id = self._table_id(client, f"{service.table_name}_external")
        config = bigquery.ExternalConfig(bigquery.ExternalSourceFormat.PARQUET)
        config.source_uris = external_source_uris(service, lake)
        table = bigquery.Table(table_id, schema=bigquery_schema(service))  # explicit: every month agrees
        table.external_data_configuration = config
        table.description = f"Ad-hoc queries over the lake: every clean parquet object of {service.name}."
        client.create_table(table, exists_ok=True)
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
        job.result(timeout=self.job_timeout_s)
        return job

    def _query(self, client: bigquery.Client, sql: str, labels, **params: datetime) -> bigquery.QueryJob:
        config = bigquery.QueryJobConfig(
            labels=labels,
            query_parameters=[bigquery.ScalarQueryParameter(k, "DATETIME", v) for k, v in params.items()],
        )
        job = client.query(sql, job_config=config, job_id_prefix="taxi_query_")
        job.result(timeout=self.job_timeout_s)
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
        with self.bigquery.get_client() as client:
            self._ensure_dataset(client)
            table_id = self._ensure_trips_table(client, service)
            external_id = self._ensure_external_table(client, service, lake)

            staging_id = self._create_staging(client, service, month)
            try:
                load = self._load(client, uri, staging_id, bigquery_schema(service), labels)
                staged, outside = self._staged_counts(client, staging_id, service, month, labels)
                if outside:
                    raise dg.Failure(
                        f"{uri}: {outside:,} of {staged:,} rows have a pickup outside {month.key}; "
                        "the month in BigQuery is unchanged"
                    )
                swap = self._query(client, self._swap_sql(service, month, table_id, staging_id, staged), labels)
            finally:
                client.delete_table(staging_id, not_found_ok=True)
            rows = self._count_month(client, table_id, service, month, labels)

        if rows != staged:  # the transaction checked this; a concurrent writer could still change it after
            raise dg.Failure(f"{table_id}: {month.key} holds {rows:,} rows after the load, expected {staged:,}")
        return LoadResult(
            table=table_id,
            rows=rows,
            metadata={
                **_load_job_metadata(uri, load),
                "bigquery_transaction_job_id": swap.job_id,
                "external_table": external_id,
            },
        )

    def _create_staging(self, client: bigquery.Client, service: TripService, month: Month) -> str:
        # A unique name per attempt (concurrent runs never share one) and an expiry in case the run dies.
        name = f"_staging_{service.table_name}_{month.key.replace('-', '')}_{uuid.uuid4().hex[:8]}"
        staging_id = self._table_id(client, name)
        staging = bigquery.Table(staging_id, schema=bigquery_schema(service))
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

    def _swap_sql(self, service: TripService, month: Month, table_id: str, staging_id: str, expected: int) -> str:
        pickup, columns = service.pickup_column, ", ".join(c.name for c in service.columns)
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
        with self.bigquery.get_client() as client:
            self._ensure_dataset(client)
            table_id = self._table_id(client, contract.table_name)
            load = self._load(client, uri, table_id, bigquery_schema(contract), labels)
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
        with self.bigquery.get_client() as client:
            table_id = self._table_id(client, service.table_name)
            try:
                client.get_table(table_id)
            except NotFound:
                return 0  # the dataset or table does not exist yet
            return self._count_month(client, table_id, service, month, {"taxi_service": service.name})


def _gs_uri(lake: Lake, key: str) -> str:
    uri = lake.uri(key)
    if not uri.startswith("gs://"):
        raise dg.Failure(f"BigQuery loads from GCS: the lake gave {uri!r} (use GCSLake with TAXI_TARGET=gcp)")
    return uri


def _check_schema(table: bigquery.Table, contract: DataContract) -> None:
    """Refuse a table whose columns differ from the contract: loads would fail later, or worse, misplace values."""
    have = [(f.name, _STANDARD_TYPES.get(f.field_type, f.field_type)) for f in table.schema]
    want = [(f.name, _STANDARD_TYPES.get(f.field_type, f.field_type)) for f in bigquery_schema(contract)]
    if have != want:
        differ = [f"{h} != {w}" for h, w in zip(have, want, strict=False) if h != w]
        differ = differ or [f"{len(have)} columns, the contract has {len(want)}"]
        raise dg.Failure(
            f"{table.project}.{table.dataset_id}.{table.table_id} does not match the {contract.name} contract "
            f"({'; '.join(differ[:5])}): drop the table (or migrate it) and reload"
        )


# The API may answer with either spelling of a type.
_STANDARD_TYPES = {"INT64": "INTEGER", "FLOAT64": "FLOAT", "BOOL": "BOOLEAN"}
