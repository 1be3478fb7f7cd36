"""The GCS lake and the BigQuery warehouse against the emulators: uploads, month swaps, failures, settings."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import ExitStack

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from google.cloud import bigquery

from taxi_assets.months import Month
from taxi_assets.resources.bigquery import BigQueryWarehouse
from taxi_assets.resources.gcs_lake import GCSLake
from taxi_assets.services import TAXI_ZONES, YELLOW, ContractError
from taxi_assets.settings import ConfigurationError
from taxi_assets.targets import gcp_resources

JAN, FEB = Month.parse("2021-01"), Month.parse("2021-02")
# The yellow contract before the TLC added cbd_congestion_fee (2025): what a deployment loaded until then.
YELLOW_BEFORE_CBD = dataclasses.replace(YELLOW, columns=YELLOW.columns[:-1])


@pytest.fixture
def stores(gcp_env) -> Iterator[tuple[GCSLake, BigQueryWarehouse]]:
    """The lake and warehouse exactly as the gcp target builds them, with their EnvVars resolved."""
    resources = gcp_resources()
    with ExitStack() as stack:
        lake = stack.enter_context(resources["lake"].process_config_and_initialize_cm())
        warehouse = stack.enter_context(resources["warehouse"].process_config_and_initialize_cm())
        yield lake, warehouse


def trips(month: Month, rows: int, seed: int = 0, outside: int = 0) -> pa.Table:
    """``rows`` yellow trips with pickups in ``month`` (the last ``outside`` of them a month later)."""
    rng = np.random.default_rng(seed)
    seconds = int((month.end - month.start).total_seconds())
    pickup = np.datetime64(month.start) + rng.integers(0, seconds, rows).astype("timedelta64[s]")
    if outside:
        pickup[-outside:] += np.timedelta64(40, "D")
    columns = {}
    for field in YELLOW.schema:
        if field.name == "pickup_datetime":
            columns[field.name] = pa.array(pickup).cast(field.type)
        elif field.name == "dropoff_datetime":
            columns[field.name] = pa.array(pickup + np.timedelta64(600, "s")).cast(field.type)
        elif pa.types.is_integer(field.type):
            columns[field.name] = pa.array(rng.integers(1, 266, rows), field.type)
        elif pa.types.is_floating(field.type):
            columns[field.name] = pa.array(rng.random(rows) * 50)
        else:
            columns[field.name] = pa.array(rng.choice(["N", "Y", None], rows), pa.string())
    return pa.table(columns, schema=YELLOW.schema)


def put(lake: GCSLake, key: str, table: pa.Table) -> None:
    with lake.write(key) as path:
        pq.write_table(table, path, compression="zstd")


def bq_client(env) -> bigquery.Client:
    from google.auth.credentials import AnonymousCredentials

    return bigquery.Client(
        project="local", credentials=AnonymousCredentials(), client_options={"api_endpoint": env.bq_endpoint}
    )


# -- the lake ------------------------------------------------------------------------------------------------


def test_gcs_lake_round_trip(stores, gcp_env):
    lake, _ = stores
    key = YELLOW.clean_key(JAN.key)
    put(lake, key, trips(JAN, 1_000))

    assert lake.uri(key) == f"gs://{gcp_env.bucket}/{key}"
    assert lake.exists(key) and not lake.exists(YELLOW.clean_key(FEB.key))
    assert lake.list_objects("raw/") == {}
    with lake.read(key) as path:
        assert pq.read_metadata(path).num_rows == 1_000
        assert lake.size(key) == path.stat().st_size
        assert lake.list_objects("clean/yellow/") == {key: path.stat().st_size}
    with pytest.raises(FileNotFoundError, match="gs://"):
        with lake.read("clean/yellow/missing.parquet"):
            pass


def test_parquet_row_count_reads_only_the_footer(stores, monkeypatch):
    from google.cloud.storage import Blob

    lake, _ = stores
    key = YELLOW.clean_key(JAN.key)
    put(lake, key, trips(JAN, 200_000))
    assert lake.size(key) > 4 * 1024 * 1024

    download, fetched = Blob.download_as_bytes, []

    def counting(self, *args, **kwargs):
        data = download(self, *args, **kwargs)
        fetched.append(len(data))
        return data

    monkeypatch.setattr(Blob, "download_as_bytes", counting)
    assert lake.parquet_row_count(key) == 200_000
    assert 0 < sum(fetched) <= 1024 * 1024  # the footer's ranged reads, not the 4+ MiB object
    with pytest.raises(FileNotFoundError):
        lake.parquet_row_count("clean/yellow/missing.parquet")


def test_failed_writer_uploads_nothing(stores):
    lake, _ = stores
    key = YELLOW.clean_key(JAN.key)
    put(lake, key, trips(JAN, 100))
    with pytest.raises(RuntimeError, match="writer failed"):
        with lake.write(key) as path:
            path.write_bytes(b"half a file")
            raise RuntimeError("writer failed")
    with lake.read(key) as path:
        assert pq.read_metadata(path).num_rows == 100  # the previous version, untouched


def test_interrupted_upload_leaves_no_partial_object(stores, monkeypatch):
    """A resumable upload cut after its first chunk: the old object stays, a new name never appears."""
    from google.cloud.storage._media.requests.upload import ResumableUpload

    lake, _ = stores
    lake = lake.model_copy(update={"chunk_size_mib": 1})  # 1 MiB chunks
    old_key, new_key = "raw/test/old.bin", "raw/test/new.bin"
    with lake.write(old_key) as path:
        path.write_bytes(b"previous version")

    transmit, calls = ResumableUpload.transmit_next_chunk, []

    def fail_after_first_chunk(self, *args, **kwargs):
        calls.append(id(self))
        if calls.count(id(self)) > 1:  # this upload's second chunk
            raise RuntimeError("connection lost")  # not a transient error: no retry, the upload is abandoned
        return transmit(self, *args, **kwargs)

    monkeypatch.setattr(ResumableUpload, "transmit_next_chunk", fail_after_first_chunk)
    for key in (old_key, new_key):
        with pytest.raises(RuntimeError, match="connection lost"):
            with lake.write(key) as path:
                # Over 8 MiB: below that the client sends one multipart request, all or nothing by itself.
                path.write_bytes(np.random.default_rng(1).bytes(9 * 1024 * 1024))
    monkeypatch.setattr(ResumableUpload, "transmit_next_chunk", transmit)

    assert len(calls) == 4  # two uploads, each cut at its second chunk
    assert not lake.exists(new_key)
    with lake.read(old_key) as path:
        assert path.read_bytes() == b"previous version"


# -- the warehouse -------------------------------------------------------------------------------------------


def test_replace_month_twice_keeps_counts_and_shapes_the_table(stores, gcp_env):
    lake, warehouse = stores
    key = YELLOW.clean_key(JAN.key)
    put(lake, key, trips(JAN, 5_000))

    first = warehouse.replace_month(YELLOW, JAN, lake, key)
    second = warehouse.replace_month(YELLOW, JAN, lake, key)

    assert first.rows == second.rows == 5_000
    assert warehouse.month_row_count(YELLOW, JAN) == 5_000
    assert second.table == f"local.{gcp_env.dataset}.yellow_trips"
    meta = second.metadata
    assert meta["source_uri"].value == f"gs://{gcp_env.bucket}/{key}"
    assert meta["rows_loaded"].value == 5_000
    assert meta["bigquery_load_job_id"] and meta["bigquery_transaction_job_id"]
    assert meta["bigquery_load_job_id"] != first.metadata["bigquery_load_job_id"]

    client = bq_client(gcp_env)
    table = client.get_table(second.table)
    assert [f.name for f in table.schema] == YELLOW.schema.names
    assert table.schema[1].field_type == "DATETIME"
    assert table.time_partitioning.type_ == "MONTH" and table.time_partitioning.field == "pickup_datetime"
    assert table.clustering_fields == ["pu_location_id"]
    names = {t.table_id for t in client.list_tables(f"local.{gcp_env.dataset}")}
    # The emulator keeps the external table as a plain table (no external data); its existence is what it shows.
    assert names == {"yellow_trips", "yellow_trips_external"}, "staging tables must be dropped"


def test_second_month_leaves_the_first_intact(stores):
    lake, warehouse = stores
    put(lake, YELLOW.clean_key(JAN.key), trips(JAN, 3_000, seed=1))
    put(lake, YELLOW.clean_key(FEB.key), trips(FEB, 2_000, seed=2))
    warehouse.replace_month(YELLOW, JAN, lake, YELLOW.clean_key(JAN.key))
    warehouse.replace_month(YELLOW, FEB, lake, YELLOW.clean_key(FEB.key))
    assert warehouse.month_row_count(YELLOW, JAN) == 3_000
    assert warehouse.month_row_count(YELLOW, FEB) == 2_000

    put(lake, YELLOW.clean_key(FEB.key), trips(FEB, 1_500, seed=3))  # a corrected February
    warehouse.replace_month(YELLOW, FEB, lake, YELLOW.clean_key(FEB.key))
    assert warehouse.month_row_count(YELLOW, JAN) == 3_000
    assert warehouse.month_row_count(YELLOW, FEB) == 1_500


def test_load_failure_leaves_the_previous_month(stores, gcp_env):
    lake, warehouse = stores
    key = YELLOW.clean_key(JAN.key)
    put(lake, key, trips(JAN, 2_000))
    warehouse.replace_month(YELLOW, JAN, lake, key)

    with lake.write(key) as path:  # a corrupt object under the month's key
        path.write_bytes(b"PAR1 this is not parquet")
    # Found in the footer, read before any job: the error names the object.
    with pytest.raises(pa.ArrowInvalid, match=rf"gs://{gcp_env.bucket}/{key}: .*magic bytes"):
        warehouse.replace_month(YELLOW, JAN, lake, key)
    assert warehouse.month_row_count(YELLOW, JAN) == 2_000

    put(lake, key, trips(JAN, 1_000, outside=10))  # rows of another month in January's file
    with pytest.raises(dg.Failure, match="outside 2021-01"):
        warehouse.replace_month(YELLOW, JAN, lake, key)
    assert warehouse.month_row_count(YELLOW, JAN) == 2_000

    client = bq_client(gcp_env)
    assert not [t for t in client.list_tables(f"local.{gcp_env.dataset}") if t.table_id.startswith("_staging")]


def test_count_check_inside_the_transaction_rolls_back(stores, monkeypatch):
    """If the insert wrote other than the staged rows (as MERGE did on the emulator), nothing is committed."""
    lake, warehouse = stores
    key = YELLOW.clean_key(JAN.key)
    put(lake, key, trips(JAN, 2_000, seed=4))
    warehouse.replace_month(YELLOW, JAN, lake, key)

    put(lake, key, trips(JAN, 2_500, seed=5))
    staged_counts = type(warehouse)._staged_counts
    monkeypatch.setattr(
        type(warehouse),
        "_staged_counts",
        lambda self, *a: (staged_counts(self, *a)[0] + 1, 0),  # expect one too many
    )
    with pytest.raises(Exception, match="differs from the staged rows"):
        warehouse.replace_month(YELLOW, JAN, lake, key)
    monkeypatch.undo()
    assert warehouse.month_row_count(YELLOW, JAN) == 2_000


def test_replace_table_and_counts_before_any_load(stores, gcp_env):
    lake, warehouse = stores
    assert warehouse.month_row_count(YELLOW, JAN) == 0  # no dataset, no table yet

    zones = pa.table(
        {
            "location_id": pa.array(range(1, 266), pa.int64()),
            "borough": ["Queens"] * 265,
            "zone": [f"Zone {i}" for i in range(1, 266)],
            "service_zone": ["Boro Zone"] * 265,
        },
        schema=TAXI_ZONES.schema,
    )
    put(lake, "clean/taxi_zones/taxi_zone_lookup.parquet", zones)
    for _ in range(2):
        result = warehouse.replace_table(TAXI_ZONES, lake, "clean/taxi_zones/taxi_zone_lookup.parquet")
        assert result.rows == 265
    table = bq_client(gcp_env).get_table(result.table)
    assert [f.name for f in table.schema] == TAXI_ZONES.schema.names  # lower case, unlike the pandas IO manager


def test_dataset_in_another_location_names_the_setting(stores, gcp_env):
    lake, warehouse = stores
    dataset = bigquery.Dataset(f"local.{gcp_env.dataset}")
    dataset.location = "EU"
    bq_client(gcp_env).create_dataset(dataset)
    put(lake, YELLOW.clean_key(JAN.key), trips(JAN, 10))
    with pytest.raises(dg.Failure, match="TAXI_BQ_LOCATION"):
        warehouse.replace_month(YELLOW, JAN, lake, YELLOW.clean_key(JAN.key))


# -- schema evolution ----------------------------------------------------------------------------------------


def month_stats(env, table_id: str) -> list[tuple]:
    """Per month: rows, null cbd_congestion_fee, sum of cbd_congestion_fee, sum of vendor_id."""
    rows = bq_client(env).query(
        "SELECT EXTRACT(MONTH FROM pickup_datetime) AS m, COUNT(*) AS n, COUNTIF(cbd_congestion_fee IS NULL) AS nulls, "
        f"SUM(cbd_congestion_fee) AS cbd, SUM(vendor_id) AS vendors FROM `{table_id}` GROUP BY m ORDER BY m"
    )
    return [(r.m, r.n, r.nulls, r.cbd, r.vendors) for r in rows.result()]


def test_a_month_loaded_before_a_new_column_is_intact_after_a_month_with_it(stores, gcp_env):
    """January loaded by the code of before cbd_congestion_fee; after the upgrade, February brings the column."""
    lake, warehouse = stores
    january = trips(JAN, 3_000, seed=1).drop_columns(["cbd_congestion_fee"])
    put(lake, YELLOW.clean_key(JAN.key), january)
    table_id = warehouse.replace_month(YELLOW_BEFORE_CBD, JAN, lake, YELLOW.clean_key(JAN.key)).table
    client = bq_client(gcp_env)
    assert "cbd_congestion_fee" not in [f.name for f in client.get_table(table_id).schema]

    february = trips(FEB, 2_000, seed=2)
    cbd = pa.array([None if i % 4 == 0 else 0.75 for i in range(2_000)], pa.float64())  # 1,500 tolls of 0.75
    february = february.set_column(february.schema.get_field_index("cbd_congestion_fee"), "cbd_congestion_fee", cbd)
    put(lake, YELLOW.clean_key(FEB.key), february)
    assert warehouse.replace_month(YELLOW, FEB, lake, YELLOW.clean_key(FEB.key)).rows == 2_000

    table = client.get_table(table_id)
    assert [f.name for f in table.schema] == YELLOW.schema.names
    added = table.schema[-1]
    assert (added.field_type, added.mode) == ("FLOAT", "NULLABLE")
    assert added.description == YELLOW.column("cbd_congestion_fee").description
    assert table.time_partitioning.field == "pickup_datetime" and table.clustering_fields == ["pu_location_id"]
    external = client.get_table(f"{table_id}_external")
    assert [f.name for f in external.schema] == YELLOW.schema.names
    vendors = {m: sum(t["vendor_id"].to_pylist()) for m, t in ((1, january), (2, february))}
    expected = [
        (1, 3_000, 3_000, None, vendors[1]),  # every January row still there, unchanged, cbd null
        (2, 2_000, 500, 1_125.0, vendors[2]),
    ]
    assert month_stats(gcp_env, table_id) == expected
    assert warehouse.month_row_count(YELLOW, JAN) == 3_000 and warehouse.month_row_count(YELLOW, FEB) == 2_000

    # January again, with the new code, from its clean object of before: the missing optional column reads null.
    assert warehouse.replace_month(YELLOW, JAN, lake, YELLOW.clean_key(JAN.key)).rows == 3_000
    assert month_stats(gcp_env, table_id) == expected
    names = {t.table_id for t in client.list_tables(f"local.{gcp_env.dataset}")}
    assert names == {"yellow_trips", "yellow_trips_external"}, "staging tables must be dropped"


def test_an_object_that_does_not_fit_the_contract_names_it_and_changes_nothing(stores, gcp_env):
    lake, warehouse = stores
    key = YELLOW.clean_key(JAN.key)
    put(lake, key, trips(JAN, 1_000, seed=3).drop_columns(["cbd_congestion_fee"]))  # optional column missing
    assert warehouse.replace_month(YELLOW, JAN, lake, key).rows == 1_000
    uri = f"gs://{gcp_env.bucket}/{key}"

    put(lake, key, trips(JAN, 500).append_column("surprise_fee", pa.array([1.0] * 500)))
    with pytest.raises(ContractError, match=rf"^{uri}: column 'surprise_fee' is not in the yellow data contract"):
        warehouse.replace_month(YELLOW, JAN, lake, key)
    put(lake, key, trips(JAN, 500).drop_columns(["fare_amount"]))
    with pytest.raises(ContractError, match=rf"^{uri}: required column\(s\) 'fare_amount' missing"):
        warehouse.replace_month(YELLOW, JAN, lake, key)
    assert warehouse.month_row_count(YELLOW, JAN) == 1_000

    # A table that is not an older version of the contract is refused, not altered.
    client, table_id = bq_client(gcp_env), f"local.{gcp_env.dataset}.yellow_trips"
    client.delete_table(table_id)
    client.create_table(bigquery.Table(table_id, [bigquery.SchemaField("vendor_id", "STRING")]))
    put(lake, key, trips(JAN, 500))
    with pytest.raises(ContractError, match=r"yellow_trips does not match the yellow contract \(vendor_id is STRING"):
        warehouse.replace_month(YELLOW, JAN, lake, key)
    assert [(f.name, f.field_type) for f in client.get_table(table_id).schema] == [("vendor_id", "STRING")]


# -- settings ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["TAXI_GCS_BUCKET", "TAXI_GCP_PROJECT", "TAXI_POSTGRES_URL"])
def test_missing_setting_is_named(monkeypatch, name):
    for setting in ("TAXI_GCS_BUCKET", "TAXI_GCP_PROJECT", "TAXI_POSTGRES_URL"):
        monkeypatch.setenv(setting, "some-value")
    monkeypatch.delenv("TAXI_GCP_CREDENTIALS", raising=False)
    monkeypatch.delenv(name)
    with pytest.raises(ConfigurationError, match=name):
        gcp_resources()


@pytest.mark.parametrize(
    "value, problem",
    [
        ("/no/such/key-SECRET.json", "cannot read"),
        ('{"type": "service_account", "private_key": "SECRET"', "not valid JSON"),
        ('{"type": "service_account", "private_key": "SECRET"}', "incomplete or malformed"),
        ('{"type": "external_account", "credential_source": {"url": "http://SECRET"}}', "not a service_account"),
    ],
)
def test_unreadable_credentials_are_named_never_shown(monkeypatch, value, problem):
    for setting in ("TAXI_GCS_BUCKET", "TAXI_GCP_PROJECT", "TAXI_POSTGRES_URL"):
        monkeypatch.setenv(setting, "some-value")
    monkeypatch.setenv("TAXI_GCP_CREDENTIALS", value)
    with pytest.raises(ConfigurationError, match="TAXI_GCP_CREDENTIALS") as error:
        gcp_resources()
    assert problem in str(error.value) and "SECRET" not in str(error.value)
    # No chained exception (a JSON decoder's error carries the whole document) reaches a traceback.
    assert error.value.__cause__ is None and error.value.__context__ is None


def test_wrong_bucket_is_named(monkeypatch):
    monkeypatch.setenv("TAXI_GCS_BUCKET", "gs://my-bucket/lake")
    monkeypatch.setenv("TAXI_GCP_PROJECT", "p")
    monkeypatch.setenv("TAXI_POSTGRES_URL", "postgresql://db")
    with pytest.raises(ConfigurationError, match="TAXI_GCS_BUCKET"):
        gcp_resources()


def test_missing_bucket_at_run_time_names_the_setting(stores, gcp_env):
    lake, _ = stores
    lake = lake.model_copy(update={"bucket": "no-such-bucket-here"})
    with pytest.raises(FileNotFoundError, match="TAXI_GCS_BUCKET"):
        with lake.write("raw/x.csv.gz") as path:
            path.write_bytes(b"x")


def test_service_account_key_as_path_or_json(tmp_path, service_account_json):
    import json

    from google.oauth2 import service_account

    from taxi_assets.resources.bigquery import BigQueryClientResource
    from taxi_assets.resources.gcp_config import load_credentials
    from taxi_assets.resources.gcs_lake import GCSClientResource

    key = json.loads(service_account_json)
    path = tmp_path / "key.json"
    path.write_text(service_account_json)
    for value in (str(path), json.dumps(key)):
        credentials = load_credentials(value)
        assert isinstance(credentials, service_account.Credentials)
        assert credentials.service_account_email == key["client_email"]
        gcs = GCSClientResource(project="p", credentials=value).get_client()
        assert gcs._credentials.service_account_email == key["client_email"]
        with BigQueryClientResource(project="p", credentials=value).get_client() as client:
            assert client._credentials.service_account_email == key["client_email"]
    # An endpoint override means an emulator: anonymous, whatever the key.
    assert type(load_credentials(str(path), "http://127.0.0.1:9")).__name__ == "AnonymousCredentials"
    assert load_credentials(None) is None  # Application Default Credentials, found by the client library


def test_a_gcs_lake_that_stays_unreachable_fails_the_step_once_its_own_retries_run_out(tmp_path):
    """One retry layer: the GCS client retries within retry_timeout_s, then the step fails without a step retry."""
    from taxi_assets.assets.metadata import TargetKinds
    from taxi_assets.assets.trips import build_trip_assets
    from taxi_assets.partitions import Calendar
    from taxi_assets.resources.gcs_lake import GCSClientResource
    from taxi_assets_tests.processes import free_port

    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there: every request is refused
    lake = GCSLake(bucket="taxi-lake", gcs=GCSClientResource(project="p", api_endpoint=closed), retry_timeout_s=1.0)
    _, clean, *_ = build_trip_assets(YELLOW, TargetKinds("gcs", "bigquery"), dg.BackfillPolicy.single_run(), Calendar())

    result = dg.materialize(
        [clean], partition_key="2021-01", resources={"lake": lake}, raise_on_error=False, selection=[clean.key]
    )

    events = [e.event_type for e in result.all_events]
    assert dg.DagsterEventType.STEP_FAILURE in events and dg.DagsterEventType.STEP_UP_FOR_RETRY not in events
    (failure,) = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert "RetryError" in failure.event_specific_data.error.to_string()
