"""What real GCP does and the emulators cannot show, through a fault proxy in front of them (fault_proxy.py).

BigQuery: a transaction aborted for a concurrent update (the same 400 ``invalidQuery`` and message BigQuery
sends, produced by the emulator itself from the rewritten script), a swap that outlasts its timeout, a 403,
datasets and tables with expirations. GCS: an upload corrupted on the wire (refused by the server, or accepted
and caught by the client, which then deletes what it wrote), the generation precondition of the final name.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import dagster as dg
import numpy as np
import pyarrow.parquet as pq
import pytest
from google.api_core.exceptions import Forbidden, from_http_status
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery, storage

from taxi_assets.assets.metadata import TargetKinds
from taxi_assets.assets.trips import build_trip_assets
from taxi_assets.months import Month
from taxi_assets.partitions import Calendar
from taxi_assets.resources.bigquery import (
    BigQueryBusy,
    BigQueryClientResource,
    BigQueryWarehouse,
    ExpiringStorageError,
    JobTimeout,
    check_no_expiration,
    classify_errors,
    is_concurrent_update,
)
from taxi_assets.resources.gcs_lake import UPLOAD_PREFIX, GCSClientResource, GCSLake, UploadError
from taxi_assets.services import YELLOW
from taxi_assets_tests.gcp.conftest import PROJECT
from taxi_assets_tests.gcp.fault_proxy import Proxy, Reply, Request, fault_proxy
from taxi_assets_tests.gcp.test_gcp_resources import put, trips

JAN = Month.parse("2021-01")
KEY = YELLOW.clean_key(JAN.key)
ABORT = "Transaction is aborted due to concurrent update against table {table}. Transaction ID: 6f3c-test"


@pytest.fixture
def bq_proxy(gcp_env) -> Iterator[Proxy]:
    with fault_proxy(gcp_env.bq_endpoint) as proxy:
        yield proxy


@pytest.fixture
def gcs_proxy(gcp_env) -> Iterator[Proxy]:
    with fault_proxy(gcp_env.gcs_endpoint) as proxy:
        yield proxy


def lake_at(env, endpoint: str, **fields) -> GCSLake:
    return GCSLake(bucket=env.bucket, gcs=GCSClientResource(project=PROJECT, api_endpoint=endpoint), **fields)


def warehouse_at(env, endpoint: str, **fields) -> BigQueryWarehouse:
    client = BigQueryClientResource(project=PROJECT, location="US", api_endpoint=endpoint)
    return BigQueryWarehouse(bigquery=client, dataset=env.dataset, **fields)


def bq(env) -> bigquery.Client:
    return bigquery.Client(
        project=PROJECT, credentials=AnonymousCredentials(), client_options={"api_endpoint": env.bq_endpoint}
    )


def table_names(env) -> set[str]:
    return {t.table_id for t in bq(env).list_tables(f"{PROJECT}.{env.dataset}")}


def loaded_january(env, rows: int = 2_000) -> tuple[GCSLake, BigQueryWarehouse]:
    """January loaded directly (no proxy), then a new January object of 2,500 rows in the lake."""
    lake, warehouse = lake_at(env, env.gcs_endpoint), warehouse_at(env, env.bq_endpoint)
    put(lake, KEY, trips(JAN, rows, seed=1))
    assert warehouse.replace_month(YELLOW, JAN, lake, KEY).rows == rows
    put(lake, KEY, trips(JAN, 2_500, seed=2))
    return lake, warehouse


def is_swap(request: Request) -> bool:
    return request.method == "POST" and request.path.endswith("/jobs") and b"BEGIN TRANSACTION" in request.body


def swap_query(request: Request) -> str:
    return request.json()["configuration"]["query"]["query"]


def with_query(request: Request, sql: str) -> bytes:
    body = request.json()
    body["configuration"]["query"]["query"] = sql
    return json.dumps(body).encode()


def staging_deletes(proxy: Proxy) -> list[Request]:
    return [r for r in proxy.matching("DELETE", "/tables/") if "/tables/_staging" in r.path]


# -- BigQuery: concurrent updates ----------------------------------------------------------------------------


@pytest.mark.fault_case("BigQuery aborts a swap for a concurrent update")
def test_a_swap_aborted_by_concurrent_updates_is_rerun_and_its_staging_table_kept_until_it_commits(gcp_env, bq_proxy):
    lake, _ = loaded_january(gcp_env)
    aborts = []

    def abort_twice(request: Request):
        if is_swap(request) and len(aborts) < 2:
            aborts.append(request)
            table = f"{PROJECT}.{gcp_env.dataset}.yellow_trips"
            return with_query(request, f"SELECT ERROR('{ABORT.format(table=table)}')")
        return None

    bq_proxy.fault = abort_twice
    result = warehouse_at(gcp_env, bq_proxy.url).replace_month(YELLOW, JAN, lake, KEY)

    assert result.rows == 2_500 and result.table_rows == 2_500
    swaps = [r for r in bq_proxy.requests if is_swap(r)]
    assert len(swaps) == 3  # two aborted, the third committed
    assert len({swap_query(r) for r in [*aborts, swaps[-1]]}) == 1  # the very same script, same staging table
    (drop,) = staging_deletes(bq_proxy)
    assert bq_proxy.requests.index(drop) > bq_proxy.requests.index(swaps[-1])  # dropped only after the commit
    assert table_names(gcp_env) == {"yellow_trips", "yellow_trips_external"}


@pytest.mark.fault_case("BigQuery aborts a swap for a concurrent update")
def test_concurrent_updates_that_outlast_the_retry_budget_fail_the_step_and_change_nothing(gcp_env, bq_proxy):
    lake, _ = loaded_january(gcp_env)
    table = f"{PROJECT}.{gcp_env.dataset}.yellow_trips"
    bq_proxy.fault = lambda r: with_query(r, f"SELECT ERROR('{ABORT.format(table=table)}')") if is_swap(r) else None

    warehouse = warehouse_at(gcp_env, bq_proxy.url, swap_retry_timeout_s=2)
    with pytest.raises(dg.Failure, match=r"aborted by concurrent updates of the table for 2s") as error:
        warehouse.replace_month(YELLOW, JAN, lake, KEY)

    assert error.value.allow_retries is False
    assert "the month is unchanged" in error.value.description
    assert len([r for r in bq_proxy.requests if is_swap(r)]) >= 2
    assert warehouse_at(gcp_env, gcp_env.bq_endpoint).month_row_count(YELLOW, JAN) == 2_000
    assert table_names(gcp_env) == {"yellow_trips", "yellow_trips_external"}


def test_concurrent_update_errors_are_recognized_by_their_message():
    table = "p.d.yellow_trips"
    for message in (ABORT.format(table=table), f"Could not serialize access to table {table} due to concurrent update"):
        error = from_http_status(
            400, f"Query error: {message}", errors=[{"reason": "invalidQuery", "message": message}]
        )
        assert is_concurrent_update(error)
    other = from_http_status(400, "Query error: month 2021-01: row count after insert differs from the staged rows")
    assert not is_concurrent_update(other)
    assert not is_concurrent_update(from_http_status(409, f"Already Exists: due to concurrent update of {table}"))


# -- BigQuery: a job past its timeout ------------------------------------------------------------------------


class StuckSwap:
    """The swap job runs "forever": its script is replaced by a no-op (the month must not change) and every poll
    is told it is still RUNNING. After a cancel, ``stops`` says whether it then reports DONE (cancelled)."""

    def __init__(self, proxy: Proxy, stops: bool):
        self.proxy, self.stops, self.job_id, self.cancelled = proxy, stops, None, False

    def __call__(self, request: Request):
        if is_swap(request):
            self.job_id = request.json()["jobReference"]["jobId"]
            return self._reply(request, with_query(request, "SELECT 1"))
        if self.job_id is None or self.job_id not in request.path:
            return None
        if request.path.endswith("/cancel"):
            self.cancelled = True
            job = self._job(self.proxy.forward("GET", request.path[: -len("/cancel")], request.headers, b""))
            return Reply(200, {"kind": "bigquery#jobCancelResponse", "job": job})
        if "/queries/" in request.path and not (self.cancelled and self.stops):
            return Reply(200, {"jobReference": {"projectId": PROJECT, "jobId": self.job_id}, "jobComplete": False})
        return self._reply(request, request.body)

    def _reply(self, request: Request, body: bytes) -> Reply:
        return Reply(200, self._job(self.proxy.forward(request.method, request.path, request.headers, body)))

    def _job(self, response) -> dict:
        job = json.loads(response[2])
        if self.cancelled and self.stops:
            message = "Job execution was cancelled: User requested cancellation"
            job["status"] = {"state": "DONE", "errorResult": {"reason": "stopped", "message": message}}
        else:
            job["status"] = {"state": "RUNNING"}
        return job


@pytest.mark.fault_case("BigQuery job outlasts its timeout")
def test_a_swap_past_its_timeout_is_cancelled_and_its_staging_table_dropped_once_it_stopped(gcp_env, bq_proxy):
    lake, _ = loaded_january(gcp_env)
    stuck = StuckSwap(bq_proxy, stops=True)
    bq_proxy.fault = stuck

    warehouse = warehouse_at(gcp_env, bq_proxy.url, job_timeout_s=2, cancel_wait_s=10)
    with pytest.raises(JobTimeout, match=r"did not finish within 2s: cancelled") as error:
        warehouse.replace_month(YELLOW, JAN, lake, KEY)

    assert error.value.stopped is True
    (cancel,) = bq_proxy.matching("POST", f"/jobs/{stuck.job_id}/cancel")
    (drop,) = staging_deletes(bq_proxy)
    assert bq_proxy.requests.index(cancel) < bq_proxy.requests.index(drop)
    assert warehouse_at(gcp_env, gcp_env.bq_endpoint).month_row_count(YELLOW, JAN) == 2_000
    assert table_names(gcp_env) == {"yellow_trips", "yellow_trips_external"}


@pytest.mark.fault_case("BigQuery job outlasts its timeout")
def test_a_swap_still_running_after_its_cancel_keeps_its_staging_table(gcp_env, bq_proxy):
    lake, _ = loaded_january(gcp_env)
    stuck = StuckSwap(bq_proxy, stops=False)
    bq_proxy.fault = stuck

    warehouse = warehouse_at(gcp_env, bq_proxy.url, job_timeout_s=2, cancel_wait_s=1)
    with pytest.raises(JobTimeout, match=r"still running 1s after it was cancelled") as error:
        warehouse.replace_month(YELLOW, JAN, lake, KEY)

    assert error.value.stopped is False
    assert len(bq_proxy.matching("POST", f"/jobs/{stuck.job_id}/cancel")) == 1
    assert staging_deletes(bq_proxy) == []
    staging = [name for name in table_names(gcp_env) if name.startswith("_staging_yellow_trips_202101_")]
    assert len(staging) == 1  # left for the running job; it expires by itself
    assert warehouse_at(gcp_env, gcp_env.bq_endpoint).month_row_count(YELLOW, JAN) == 2_000


# -- BigQuery: 403 and 404 are permanent ---------------------------------------------------------------------


@pytest.mark.fault_case("BigQuery or GCS answers 403/404")
def test_access_denied_fails_the_warehouse_step_without_a_retry(gcp_env, bq_proxy):
    lake = lake_at(gcp_env, gcp_env.gcs_endpoint)
    put(lake, KEY, trips(JAN, 500))
    denied = {"code": 403, "message": "Access Denied: Project local: User does not have bigquery.jobs.create"}
    denied["errors"] = [{"reason": "accessDenied", "message": denied["message"]}]
    bq_proxy.fault = lambda r: (
        Reply(403, {"error": denied}) if r.method == "POST" and r.path.endswith("/jobs") else None
    )
    _, _, load, _ = build_trip_assets(
        YELLOW, TargetKinds("gcs", "bigquery"), dg.BackfillPolicy.single_run(), Calendar()
    )

    result = dg.materialize(
        [load],
        partition_key=JAN.key,
        resources={"lake": lake, "warehouse": warehouse_at(gcp_env, bq_proxy.url)},
        raise_on_error=False,
    )

    events = [e.event_type for e in result.all_events]
    assert dg.DagsterEventType.STEP_FAILURE in events and dg.DagsterEventType.STEP_UP_FOR_RETRY not in events
    (failure,) = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert "bigquery.jobs.create" in failure.event_specific_data.error.to_string()
    assert len([r for r in bq_proxy.requests if r.method == "POST" and r.path.endswith("/jobs")]) == 1


def test_a_rate_limit_403_stays_retryable_and_a_sandbox_403_says_to_enable_billing():
    def forbidden(reason: str, message: str) -> Forbidden:
        return from_http_status(403, message, errors=[{"reason": reason, "message": message}])

    with pytest.raises(BigQueryBusy, match=r"^p\.d\.t: BigQuery rate limit \(rateLimitExceeded\)") as busy:
        with classify_errors("p.d.t"):
            raise forbidden("rateLimitExceeded", "Exceeded rate limits: too many table update operations")
    assert busy.value.transient is True
    assert not isinstance(busy.value, BigQueryWarehouse.permanent_errors)

    with pytest.raises(Forbidden, match=r"^403 p\.d\.t: the project has no billing .* enable billing") as billing:
        with classify_errors("p.d.t"):
            raise forbidden("billingNotEnabled", "Billing has not been enabled for this project.")
    assert isinstance(billing.value, BigQueryWarehouse.permanent_errors)
    with pytest.raises(Forbidden, match=r"^403 Access Denied$"):
        with classify_errors("p.d.t"):
            raise forbidden("accessDenied", "Access Denied")
    assert isinstance(from_http_status(404, "Not found: Dataset p:d"), BigQueryWarehouse.permanent_errors)


# -- BigQuery: expirations -----------------------------------------------------------------------------------


@pytest.mark.fault_case("Dataset or table with an expiration (or the BigQuery sandbox)")
def test_a_dataset_with_a_default_table_expiration_is_refused_before_anything_is_created(gcp_env):
    lake, warehouse = lake_at(gcp_env, gcp_env.gcs_endpoint), warehouse_at(gcp_env, gcp_env.bq_endpoint)
    dataset = bigquery.Dataset(f"{PROJECT}.{gcp_env.dataset}")
    dataset.location, dataset.default_table_expiration_ms = "US", 30 * 86_400_000
    bq(gcp_env).create_dataset(dataset)
    put(lake, KEY, trips(JAN, 100))

    with pytest.raises(ExpiringStorageError) as error:
        warehouse.replace_month(YELLOW, JAN, lake, KEY)

    name = f"{PROJECT}.{gcp_env.dataset}"
    assert str(error.value) == (
        f"dataset {name} has a default table expiration of 30 days (defaultTableExpirationMs); remove it: "
        f"ALTER SCHEMA `{name}` SET OPTIONS (default_table_expiration_days = NULL, "
        "default_partition_expiration_days = NULL), or set TAXI_BQ_DATASET to another dataset. Nothing was "
        "loaded: months loaded there would be deleted by BigQuery itself"
    )
    assert table_names(gcp_env) == set()
    assert isinstance(error.value, BigQueryWarehouse.permanent_errors)


@pytest.mark.fault_case("Dataset or table with an expiration (or the BigQuery sandbox)")
def test_a_trips_table_that_drops_old_partitions_is_refused_and_left_alone(gcp_env):
    lake, warehouse = loaded_january(gcp_env)
    client, table_id = bq(gcp_env), f"{PROJECT}.{gcp_env.dataset}.yellow_trips"
    table = client.get_table(table_id)
    table.time_partitioning = bigquery.TimePartitioning(
        type_=bigquery.TimePartitioningType.MONTH, field="pickup_datetime", expiration_ms=90 * 86_400_000
    )
    client.update_table(table, ["time_partitioning"])

    with pytest.raises(ExpiringStorageError, match="drops partitions older than 90 days") as error:
        warehouse.replace_month(YELLOW, JAN, lake, KEY)

    assert f"ALTER TABLE `{table_id}` SET OPTIONS (partition_expiration_days = NULL)" in str(error.value)
    assert warehouse.month_row_count(YELLOW, JAN) == 2_000
    assert table_names(gcp_env) == {"yellow_trips", "yellow_trips_external"}


def test_expiration_check_on_api_representations():
    """Settings the emulator does not keep (a table's expirationTime) and the sandbox's forced 60 days."""
    sandbox = bigquery.Dataset.from_api_repr(
        {
            "datasetReference": {"projectId": "p", "datasetId": "nyc_taxi"},
            "defaultTableExpirationMs": "5184000000",
            "defaultPartitionExpirationMs": "5184000000",
        }
    )
    with pytest.raises(ExpiringStorageError) as error:
        check_no_expiration(dataset=sandbox)
    message = str(error.value)
    assert message.startswith(
        "dataset p.nyc_taxi has a default table expiration of 60 days (defaultTableExpirationMs); dataset p.nyc_taxi "
        "has a default partition expiration of 60 days (defaultPartitionExpirationMs); remove it"
    )
    assert "BigQuery sandbox forces: a project without billing also has no DML, enable billing" in message

    expires = datetime(2027, 2, 1, 12, 30, tzinfo=UTC)
    table = bigquery.Table.from_api_repr(
        {
            "tableReference": {"projectId": "p", "datasetId": "d", "tableId": "yellow_trips"},
            "expirationTime": str(int(expires.timestamp() * 1000)),
            "timePartitioning": {"type": "MONTH", "field": "pickup_datetime", "expirationMs": "3600000"},
        }
    )
    with pytest.raises(ExpiringStorageError) as error:
        check_no_expiration(table=table)
    assert str(error.value) == (
        "table p.d.yellow_trips expires at 2027-02-01 12:30 UTC (expirationTime); table p.d.yellow_trips drops "
        "partitions older than 1 hours (timePartitioning.expirationMs), which are the old months; remove it: "
        "ALTER TABLE `p.d.yellow_trips` SET OPTIONS (expiration_timestamp = NULL, partition_expiration_days = NULL)"
        ". Nothing was loaded: months loaded there would be deleted by BigQuery itself"
    )

    plain = bigquery.Table.from_api_repr(
        {
            "tableReference": {"projectId": "p", "datasetId": "d", "tableId": "t"},
            "timePartitioning": {"type": "MONTH", "field": "pickup_datetime"},
        }
    )
    clean = bigquery.Dataset.from_api_repr({"datasetReference": {"projectId": "p", "datasetId": "nyc_taxi"}})
    check_no_expiration(dataset=clean, table=plain)  # nothing expires: no error


# -- GCS: checksums and generations --------------------------------------------------------------------------


def is_final_chunk(request: Request) -> bool:
    span = request.header("Content-Range")  # bytes a-b/total
    if request.method != "PUT" or "upload_id" not in request.query or "/" not in span or "-" not in span:
        return False
    end, total = span.split(" ")[-1].split("/")
    return total != "*" and int(end.split("-")[1]) + 1 == int(total)


def flip(body: bytes, at: int) -> bytes:
    return body[:at] + bytes([body[at] ^ 0xFF]) + body[at + 1 :]


def object_bytes(env, key: str) -> bytes:
    client = storage.Client(
        project=PROJECT, credentials=AnonymousCredentials(), client_options={"api_endpoint": env.gcs_endpoint}
    )
    return client.bucket(env.bucket).blob(key).download_as_bytes()


def object_names(env) -> list[str]:
    client = storage.Client(
        project=PROJECT, credentials=AnonymousCredentials(), client_options={"api_endpoint": env.gcs_endpoint}
    )
    return sorted(b.name for b in client.list_blobs(env.bucket))


BIG = np.random.default_rng(3).bytes(9 * 1024 * 1024)  # over 8 MiB: a resumable upload, in 1 MiB chunks here


def write(lake: GCSLake, key: str, data: bytes) -> None:
    with lake.write(key) as path:
        path.write_bytes(data)


@pytest.mark.fault_case("Upload corrupted on the wire")
@pytest.mark.parametrize("server_checks", [True, False], ids=["server-refuses", "client-detects"])
def test_a_corrupted_resumable_upload_never_replaces_the_object(gcp_env, gcs_proxy, server_checks):
    """The last chunk is corrupted on the wire. With the CRC32C sent up front, GCS refuses to finalize; without
    it (stripped here, as by a server that does not check) GCS stores the bytes, the client finds the mismatch
    and deletes what it wrote: the staging object, never the good version under the final name."""
    key = "raw/test/big.bin"
    write(lake_at(gcp_env, gcp_env.gcs_endpoint), key, b"the good version")

    def corrupt(request: Request):
        if is_final_chunk(request):
            return flip(request.body, len(request.body) // 2)
        if not server_checks and request.method == "POST" and request.query.get("uploadType") == ["resumable"]:
            metadata = request.json()
            metadata.pop("crc32c")
            return json.dumps(metadata).encode()
        return None

    gcs_proxy.fault = corrupt
    with pytest.raises(UploadError, match=rf"^gs://{gcp_env.bucket}/{key}: .*the object was not replaced"):
        write(lake_at(gcp_env, gcs_proxy.url, chunk_size_mib=1), key, BIG)

    assert object_bytes(gcp_env, key) == b"the good version"
    assert object_names(gcp_env) == [key]  # no staging object left either
    deletes = gcs_proxy.matching("DELETE", "/o/")
    if not server_checks:  # the client's own delete after the mismatch went to the staging name
        assert deletes and all(UPLOAD_PREFIX.rstrip("/") in r.path for r in deletes)
    assert not gcs_proxy.matching("POST", "/rewriteTo/")


@pytest.mark.fault_case("Upload corrupted on the wire")
def test_a_corrupted_small_upload_is_refused_by_the_server(gcp_env, gcs_proxy):
    key = "raw/test/small.bin"
    write(lake_at(gcp_env, gcp_env.gcs_endpoint), key, b"the good version")

    def corrupt(request: Request):
        if request.method == "POST" and request.query.get("uploadType") == ["multipart"]:
            media = request.body.index(b"\r\n\r\n", request.body.index(b"\r\n\r\n") + 4) + 4
            return flip(request.body, media + 100)
        return None

    gcs_proxy.fault = corrupt
    with pytest.raises(UploadError, match=rf"^gs://{gcp_env.bucket}/{key}: GCS refused the upload"):
        write(lake_at(gcp_env, gcs_proxy.url), key, b"x" * 4096)
    assert object_bytes(gcp_env, key) == b"the good version"
    assert object_names(gcp_env) == [key]


@pytest.mark.fault_case("Another writer replaces a lake object during an upload")
def test_the_final_name_is_written_only_if_its_generation_is_still_the_one_seen(gcp_env, gcs_proxy):
    lake, key = lake_at(gcp_env, gcs_proxy.url), "clean/yellow/yellow_tripdata_2021-01.parquet"
    put(lake, key, trips(JAN, 100))
    put(lake, key, trips(JAN, 200))
    first, second = gcs_proxy.matching("POST", "/rewriteTo/")
    assert first.query["ifGenerationMatch"] == ["0"]  # a new name: it must still be free
    gcs = storage.Client(
        project=PROJECT, credentials=AnonymousCredentials(), client_options={"api_endpoint": gcp_env.gcs_endpoint}
    )
    generation = gcs.bucket(gcp_env.bucket).get_blob(key).generation
    assert second.query["ifGenerationMatch"] != ["0"]

    # Another writer got there first: GCS answers 412 and nothing of this upload lands.
    precondition = {"code": 412, "message": "At least one of the pre-conditions you specified did not hold."}
    precondition["errors"] = [{"reason": "conditionNotMet", "message": precondition["message"]}]
    gcs_proxy.fault = lambda r: Reply(412, {"error": precondition}) if "/rewriteTo/" in r.path else None
    with pytest.raises(UploadError, match=r"written by another writer during this upload \(expected generation"):
        put(lake, key, trips(JAN, 300))
    with lake_at(gcp_env, gcp_env.gcs_endpoint).read(key) as path:
        assert pq.read_metadata(path).num_rows == 200
    assert gcs.bucket(gcp_env.bucket).get_blob(key).generation == generation

    # The copy happened but its answer was lost and the retry met the precondition: the object is this file.
    def lost_answer(request: Request):
        if "/rewriteTo/" in request.path:
            gcs_proxy.forward(request.method, request.path + "?" + _query(request), request.headers, request.body)
            return Reply(412, {"error": precondition})
        return None

    gcs_proxy.fault = lost_answer
    put(lake, key, trips(JAN, 400))
    with lake_at(gcp_env, gcp_env.gcs_endpoint).read(key) as path:
        assert pq.read_metadata(path).num_rows == 400
    assert object_names(gcp_env) == [key]


def _query(request: Request) -> str:
    from urllib.parse import urlencode

    return urlencode(request.query, doseq=True)


def test_gcs_forbidden_and_not_found_are_permanent():
    assert isinstance(from_http_status(403, "no storage.objects.create"), GCSLake.permanent_errors)
    assert isinstance(from_http_status(404, "No such object"), GCSLake.permanent_errors)
    assert not isinstance(UploadError("x"), GCSLake.permanent_errors)  # a fresh upload may well succeed
