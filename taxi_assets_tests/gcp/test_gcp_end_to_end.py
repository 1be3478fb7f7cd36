"""The real assets with ``TAXI_TARGET=gcp``: HTTP source -> GCS lake -> BigQuery -> Postgres, on local servers.

One module-scoped pipeline materializes the zones, January (every service), January again and February, and
records the counts each store holds after each step, read back with each store's own client (not through the
product's resources). The tests then check those records; the failure test runs after, on the same stores.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import dagster as dg
import psycopg
import pyarrow.parquet as pq
import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery, storage

from taxi_assets.assets.trips import TRIP_ASSETS
from taxi_assets.assets.versions import REFRESH_TAG, UNCHANGED
from taxi_assets.definitions import build_defs
from taxi_assets.fake_source import read_manifest
from taxi_assets.months import Month
from taxi_assets.services import MIRROR, TAXI_ZONES, TLC, ZONES_CLEAN_KEY
from taxi_assets.services import SERVICES as ALL_SERVICES
from taxi_assets.settings import ConfigurationError
from taxi_assets.targets import load_target
from taxi_assets_tests.gcp.conftest import PROJECT, GcpTestEnv, point_at_emulators

JAN, FEB = "2021-01", "2021-02"
SERVICES = {name: s for name, s in ALL_SERVICES.items() if MIRROR.has(s)}  # the module's pipeline reads the mirror


@dataclass
class Pipeline:
    env: GcpTestEnv
    defs: dg.Definitions
    postgres_url: str
    instance: dg.DagsterInstance
    results: dict[str, dg.ExecuteInProcessResult] = field(default_factory=dict)
    counts: dict[str, dict] = field(default_factory=dict)  # step -> {(store, service, month): rows}

    def gcs(self) -> storage.Client:
        return storage.Client(
            project=PROJECT, credentials=AnonymousCredentials(), client_options={"api_endpoint": self.env.gcs_endpoint}
        )

    def bigquery(self) -> bigquery.Client:
        return bigquery.Client(
            project=PROJECT, credentials=AnonymousCredentials(), client_options={"api_endpoint": self.env.bq_endpoint}
        )

    def lake_rows(self, key: str) -> int:
        blob = self.gcs().bucket(self.env.bucket).blob(key)
        with blob.open("rb") as f:
            return pq.ParquetFile(f).metadata.num_rows

    def bigquery_rows(self, table: str, month: str | None = None) -> int:
        sql = f"SELECT COUNT(*) AS n FROM `{PROJECT}.{self.env.dataset}.{table}`"
        params = []
        if month:
            m = Month.parse(month)
            sql += " WHERE pickup_datetime >= @start AND pickup_datetime < @end"
            params = [
                bigquery.ScalarQueryParameter("start", "DATETIME", m.start),
                bigquery.ScalarQueryParameter("end", "DATETIME", m.end),
            ]
        job = self.bigquery().query(sql, job_config=bigquery.QueryJobConfig(query_parameters=params))
        return next(iter(job.result(timeout=60))).n

    def postgres_rows(self, table: str, month: str | None = None) -> int:
        sql, params = f"SELECT count(*) FROM nyc_taxi.{table}", []
        if month:
            m = Month.parse(month)
            sql, params = sql + " WHERE pickup_datetime >= %s AND pickup_datetime < %s", [m.start, m.end]
        with psycopg.connect(self.postgres_url, connect_timeout=10) as conn:
            return conn.execute(sql, params).fetchone()[0]

    def counts_now(self, months: tuple[str, ...], services=tuple(SERVICES)) -> dict:
        counts = {}
        for name in services:
            service = ALL_SERVICES[name]
            for month in months:
                counts["lake", name, month] = self.lake_rows(service.clean_key(month))
                counts["bigquery", name, month] = self.bigquery_rows(service.table_name, month)
                counts["postgres", name, month] = self.postgres_rows(service.table_name, month)
        return counts

    def materialize_month(
        self, month: str, selection=None, services=tuple(SERVICES), tags=None
    ) -> dg.ExecuteInProcessResult:
        """The four trip assets of ``services`` (the summaries have their own test: test_gcp_summary.py)."""
        trips = [
            a
            for a in self.defs.assets
            if a.partitions_def is not None and a.key.path[0] in services and a.key.path[1] in TRIP_ASSETS
        ]
        return dg.materialize(
            trips,
            selection=selection,
            resources=self.defs.resources,
            partition_key=month,
            instance=self.instance,
            raise_on_error=selection is None,
            tags=tags,
        )


def _fresh_database(postgres_url: str, name: str) -> str:
    with psycopg.connect(postgres_url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return postgres_url.replace("@/postgres?", f"@/{name}?")


@pytest.fixture(scope="module")
def pipeline(gcs_emulator, bq_emulator, http_source, postgres_url, service_account_json) -> Iterator[Pipeline]:
    with pytest.MonkeyPatch.context() as mp:
        env = point_at_emulators(mp, gcs_emulator, bq_emulator)
        db_url = _fresh_database(postgres_url, "gcp_end_to_end")
        mp.setenv("TAXI_SOURCE", "mirror")
        mp.setenv("TAXI_SOURCE_URL", http_source)
        mp.setenv("TAXI_POSTGRES_URL", db_url)
        # A well-formed key: the emulators get anonymous credentials, but the key still goes through the
        # target's checks and the resources' config, where it must never show.
        mp.setenv("TAXI_GCP_CREDENTIALS", service_account_json)

        p = Pipeline(env, build_defs(load_target()), db_url, dg.DagsterInstance.ephemeral())
        p.results["zones"] = dg.materialize(
            [a for a in p.defs.assets if a.partitions_def is None], resources=p.defs.resources, instance=p.instance
        )
        p.results["jan"] = p.materialize_month(JAN)
        p.counts["jan"] = p.counts_now((JAN,))
        p.results["jan_again"] = p.materialize_month(JAN)  # unchanged at the source: nothing done again
        p.counts["jan_again"] = p.counts_now((JAN,))
        p.results["jan_refresh"] = p.materialize_month(JAN, tags={REFRESH_TAG: "true"})  # done again anyway
        p.counts["jan_refresh"] = p.counts_now((JAN,))
        p.results["feb"] = p.materialize_month(FEB)
        p.counts["feb"] = p.counts_now((JAN, FEB))
        yield p


def kept(manifest: dict, service: str, month: str, layout=MIRROR) -> int:
    return manifest["files"][ALL_SERVICES[service].source_path(month, layout)]["kept"]


def test_the_tlc_parquet_source_reaches_gcs_bigquery_and_postgres(
    gcs_emulator, bq_emulator, tlc_http_source, tlc_source_dir, postgres_url
):
    """The default source (the TLC's parquet files) on the GCP target: a month of yellow and of fhvhv."""
    manifest = read_manifest(tlc_source_dir)
    services = ("yellow", "fhvhv")
    with pytest.MonkeyPatch.context() as mp:
        env = point_at_emulators(mp, gcs_emulator, bq_emulator)
        db_url = _fresh_database(postgres_url, "gcp_tlc_source")
        mp.delenv("TAXI_SOURCE", raising=False)
        mp.delenv("TAXI_SOURCE_URL", raising=False)
        mp.setenv("TAXI_TLC_URL", tlc_http_source)
        mp.setenv("TAXI_POSTGRES_URL", db_url)
        p = Pipeline(env, build_defs(load_target()), db_url, dg.DagsterInstance.ephemeral())
        # One run per service: fhvhv's partitions begin at 2019-02, yellow's at 2019-01.
        results = {s: p.materialize_month(JAN, services=(s,)) for s in services}
        counts = p.counts_now((JAN,), services)
    assert counts == {
        (store, s, JAN): kept(manifest, s, JAN, TLC) for s in services for store in ("lake", "bigquery", "postgres")
    }
    raw = metadata(results["fhvhv"], "fhvhv/raw_trips", JAN)
    assert raw["source_url"] == f"{tlc_http_source}/trip-data/fhvhv_tripdata_2021-01.parquet"
    assert raw["dagster/uri"] == f"gs://{env.bucket}/raw/fhvhv/fhvhv_tripdata_2021-01.parquet"


def metadata(result: dg.ExecuteInProcessResult, asset: str, month: str | None = None) -> dict:
    events = [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key.to_user_string() == asset and e.partition == month
    ]
    assert len(events) == 1, f"{asset} {month}: {len(events)} materializations"
    return {k: v.value for k, v in events[0].event_specific_data.materialization.metadata.items()}


def test_a_month_of_every_service_reaches_gcs_bigquery_and_postgres(pipeline, source_manifest):
    stores = ("lake", "bigquery", "postgres")
    expected = {(store, s, JAN): kept(source_manifest, s, JAN) for s in SERVICES for store in stores}
    assert pipeline.counts["jan"] == expected
    assert all(c.passed for c in pipeline.results["jan"].get_asset_check_evaluations())

    bucket, result = pipeline.env.bucket, pipeline.results["jan"]
    for name, service in SERVICES.items():
        raw = metadata(result, f"{name}/raw_trips", JAN)
        assert raw["dagster/uri"] == f"gs://{bucket}/{service.raw_key(JAN, MIRROR)}"
        assert raw["bytes"] == source_manifest["files"][service.source_path(JAN, MIRROR)]["bytes"]
        clean = metadata(result, f"{name}/clean_trips", JAN)
        assert clean["dagster/uri"] == f"gs://{bucket}/{service.clean_key(JAN)}"
        assert clean["bytes"] == pipeline.gcs().bucket(bucket).get_blob(service.clean_key(JAN)).size
        loaded = metadata(result, f"{name}/warehouse_trips", JAN)
        assert loaded["dagster/table_name"] == f"{PROJECT}.{pipeline.env.dataset}.{service.table_name}"
        # The month's rows in the table, read back from BigQuery after the load (not the load job's claim).
        assert loaded["dagster/partition_row_count"] == loaded["dagster/row_count"] == kept(source_manifest, name, JAN)
        assert loaded["rows_loaded"] == kept(source_manifest, name, JAN)
        assert loaded["source_uri"] == f"gs://{bucket}/{service.clean_key(JAN)}"
        assert loaded["bigquery_load_job_id"].startswith("taxi_load_")
        assert loaded["bigquery_transaction_job_id"].startswith("taxi_query_")


def test_the_zone_lookup_reaches_bigquery_and_postgres(pipeline):
    assert pipeline.lake_rows(ZONES_CLEAN_KEY) == 265
    assert pipeline.bigquery_rows(TAXI_ZONES.table_name) == 265
    assert pipeline.postgres_rows(TAXI_ZONES.table_name) == 265
    table = pipeline.bigquery().get_table(f"{PROJECT}.{pipeline.env.dataset}.taxi_zones")
    assert [f.name for f in table.schema] == TAXI_ZONES.schema.names


def test_rematerializing_a_month_leaves_the_counts_unchanged(pipeline):
    assert pipeline.counts["jan_again"] == pipeline.counts["jan_refresh"] == pipeline.counts["jan"]
    job_ids = {
        run: metadata(pipeline.results[run], "yellow/warehouse_trips", JAN)["bigquery_load_job_id"]
        for run in ("jan", "jan_again", "jan_refresh")
    }
    # The same source file: not loaded again (the month's previous load is reported); refreshed: loaded again.
    assert job_ids["jan_again"] == job_ids["jan"] != job_ids["jan_refresh"]
    assert metadata(pipeline.results["jan_again"], "yellow/warehouse_trips", JAN)[UNCHANGED] is True
    assert UNCHANGED not in metadata(pipeline.results["jan_refresh"], "yellow/warehouse_trips", JAN)


def test_a_second_month_leaves_the_first_intact(pipeline, source_manifest):
    counts = pipeline.counts["feb"]
    for name in SERVICES:
        for store in ("lake", "bigquery", "postgres"):
            assert counts[store, name, JAN] == pipeline.counts["jan"][store, name, JAN]
            assert counts[store, name, FEB] == kept(source_manifest, name, FEB)
        loaded = metadata(pipeline.results["feb"], f"{name}/warehouse_trips", FEB)
        table_rows = kept(source_manifest, name, JAN) + kept(source_manifest, name, FEB)
        month_rows = counts["bigquery", name, FEB]
        assert (loaded["dagster/partition_row_count"], loaded["dagster/row_count"]) == (month_rows, table_rows)


def test_tables_have_the_contract_partitioning_and_clustering(pipeline):
    client = pipeline.bigquery()
    for service in SERVICES.values():
        table = client.get_table(f"{PROJECT}.{pipeline.env.dataset}.{service.table_name}")
        assert [f.name for f in table.schema] == service.schema.names
        assert (table.time_partitioning.type_, table.time_partitioning.field) == ("MONTH", "pickup_datetime")
        assert table.clustering_fields == ["pu_location_id"]
    names = {t.table_id for t in client.list_tables(f"{PROJECT}.{pipeline.env.dataset}")}
    assert names == {"taxi_zones"} | {f"{s.table_name}{x}" for s in SERVICES.values() for x in ("", "_external")}


def test_the_key_never_reaches_the_event_log_or_run_config(pipeline, service_account_json):
    key = json.loads(service_account_json)
    secrets = [key["private_key"].splitlines()[1], key["private_key_id"]]
    for result in pipeline.results.values():
        run = pipeline.instance.get_run_by_id(result.run_id)
        logs = pipeline.instance.all_logs(result.run_id)
        text = repr(run.run_config) + "".join(repr(record) for record in logs)
        assert not [s for s in secrets if s in text]


def test_a_failed_bigquery_load_leaves_the_previous_month(pipeline):
    """Runs last: it corrupts January's yellow parquet in the lake, then reloads the warehouse from it."""
    before = pipeline.bigquery_rows("yellow_trips", JAN)
    blob = pipeline.gcs().bucket(pipeline.env.bucket).blob(SERVICES["yellow"].clean_key(JAN))
    blob.upload_from_string(b"PAR1 not a parquet file PAR1")

    # Refreshed: the month is up to date as far as Dagster knows (the object changed behind its back).
    warehouse = [dg.AssetKey(["yellow", "warehouse_trips"])]
    result = pipeline.materialize_month(JAN, selection=warehouse, tags={REFRESH_TAG: "true"})

    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    # The object's footer is read before any job runs: the error names it, and no load job was started.
    assert SERVICES["yellow"].clean_key(JAN) in failure.event_specific_data.error.to_string()
    assert not [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    assert pipeline.bigquery_rows("yellow_trips", JAN) == before
    names = {t.table_id for t in pipeline.bigquery().list_tables(f"{PROJECT}.{pipeline.env.dataset}")}
    assert not [n for n in names if n.startswith("_staging")]


@pytest.mark.parametrize("setting", ["TAXI_GCS_BUCKET", "TAXI_GCP_PROJECT", "TAXI_POSTGRES_URL"])
def test_the_code_location_does_not_load_without_a_setting(monkeypatch, setting):
    monkeypatch.setenv("TAXI_TARGET", "gcp")
    for name in ("TAXI_GCS_BUCKET", "TAXI_GCP_PROJECT", "TAXI_POSTGRES_URL"):
        monkeypatch.setenv(name, "postgresql://db" if name == "TAXI_POSTGRES_URL" else "taxi-lake")
    monkeypatch.delenv("TAXI_GCP_CREDENTIALS", raising=False)
    monkeypatch.delenv(setting)
    with pytest.raises(ConfigurationError, match=setting):
        build_defs(load_target())
