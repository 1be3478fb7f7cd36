"""The summaries with ``TAXI_TARGET=gcp``: computed in BigQuery (the emulator), stored by the BigQuery IO manager
and, through it, by the Postgres IO manager; exact values from the hand-made months of test_summary.py, each month
replaced without duplicates."""

import dagster as dg
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery

from taxi_assets.assets.summary import table_name
from taxi_assets.definitions import build_defs
from taxi_assets.services import SERVICES
from taxi_assets.targets import load_target
from taxi_assets_tests.gcp.conftest import PROJECT
from taxi_assets_tests.test_summary import (
    EXPECTED,
    FEB,
    JAN,
    SUMMARY_COLUMNS,
    TRIPS_CHECK,
    as_tuples,
    load_month,
    load_zones,
    materialize,
    postgres_summary,
    same,
    summary_keys,
)


def bigquery_summary(env, service: str) -> list[tuple]:
    client = bigquery.Client(
        project=PROJECT, credentials=AnonymousCredentials(), client_options={"api_endpoint": env.bq_endpoint}
    )
    table = f"`{PROJECT}.{env.dataset}.{table_name(SERVICES[service])}`"
    rows = client.query(f"SELECT {SUMMARY_COLUMNS} FROM {table}").result()
    return as_tuples(tuple(row.values()) for row in rows)


def test_summaries_on_bigquery_and_postgres_are_exact_and_months_are_replaced(gcp_env, monkeypatch, postgres_db_url):
    monkeypatch.setenv("TAXI_POSTGRES_URL", postgres_db_url)
    target = load_target("gcp")
    # The stores with their EnvVar settings resolved, to load the hand-made months as the trips assets would.
    with dg.build_resources({name: target.resources[name] for name in ("lake", "warehouse")}) as built:
        lake, warehouse = built.lake, built.warehouse
        load_zones(lake, warehouse)
        defs = build_defs(target)
        instance = dg.DagsterInstance.ephemeral()

        for service in ("yellow", "fhvhv", "fhv"):
            load_month(lake, warehouse, service, JAN)
            result = materialize(defs, service, JAN, instance)
            expected = EXPECTED[(service, JAN)]
            assert same(bigquery_summary(gcp_env, service), expected), service
            assert same(postgres_summary(postgres_db_url, service), expected), service
            warehouse_key, _ = summary_keys(service)
            (materialization,) = result.asset_materializations_for_node("__".join(warehouse_key.path))
            assert materialization.metadata["dagster/partition_row_count"].value == len(expected)
            assert materialization.metadata["dagster/storage_kind"].value == "bigquery"
            (check,) = result.get_asset_check_evaluations()
            assert check.check_name == TRIPS_CHECK and check.passed, check.metadata

        materialize(defs, "yellow", JAN, instance)  # again: replaced, not appended
        assert same(bigquery_summary(gcp_env, "yellow"), EXPECTED[("yellow", JAN)])

        load_month(lake, warehouse, "yellow", FEB)
        materialize(defs, "yellow", FEB, instance)
        both = EXPECTED[("yellow", JAN)] + EXPECTED[("yellow", FEB)]
        assert same(bigquery_summary(gcp_env, "yellow"), both)
        assert same(postgres_summary(postgres_db_url, "yellow"), both)
