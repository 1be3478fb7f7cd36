"""``taxi-assets gcp-smoke`` end to end against the emulators, as a user runs it (a subprocess, settings from the
environment). Every check runs; the emulators cannot prove two of them (see docs/GCP.md): the external table
(the emulator keeps it as an empty table, so that check fails here, which shows it can fail) and the DATETIME
check's real subject (BigQuery's parquet reader; the emulator's passes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery, storage

from taxi_assets_tests.gcp.conftest import PROJECT


def run_smoke(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).parent / "taxi-assets"), "gcp-smoke", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def test_gcp_smoke_against_the_emulators(gcp_env, service_account_json, tmp_path):
    # No Postgres setting: the smoke needs only the lake's and the warehouse's.
    env = {**os.environ, "TAXI_GCP_CREDENTIALS": service_account_json}
    env.pop("TAXI_POSTGRES_URL", None)
    done = run_smoke(env, "--month", "2021-01", "--rows", "2000")

    lines = [line for line in done.stdout.splitlines() if line.startswith(("PASS", "FAIL"))]
    verdicts = [line.split(":")[0] for line in lines]
    assert verdicts == [
        "PASS  pipeline",
        "PASS  counts read back",
        "PASS  DATETIME unshifted",
        "PASS  forced count mismatch rolls back",
        "FAIL  external table",  # the emulator's external table is an empty plain table
        "PASS  no key material in the logs",
    ], done.stdout + done.stderr[-3000:]
    assert lines[1] == "PASS  counts read back: cleaned 1,993, lake 1,993, BigQuery 1,993 rows in 2021-01"
    assert "pickup_datetime is DATETIME" in lines[2]
    assert lines[3].endswith("1,993 rows after, staging tables left: none")
    assert lines[4] == "FAIL  external table: 0 rows in 2021-01, native 1,993"
    assert done.returncode == 1
    assert done.stdout.splitlines()[-1].endswith("failed: external table")

    # The key's lines were among the patterns; none of them is in anything the command printed.
    key = json.loads(service_account_json)
    assert all(line not in done.stdout + done.stderr for line in key["private_key"].splitlines()[1:-1])
    assert key["private_key_id"] not in done.stdout + done.stderr

    # Its own folder and dataset, both deleted: the deployment's bucket root and dataset were never touched.
    gcs = storage.Client(
        project=PROJECT, credentials=AnonymousCredentials(), client_options={"api_endpoint": gcp_env.gcs_endpoint}
    )
    assert [b.name for b in gcs.list_blobs(gcp_env.bucket)] == []
    client = bigquery.Client(
        project=PROJECT, credentials=AnonymousCredentials(), client_options={"api_endpoint": gcp_env.bq_endpoint}
    )
    assert [d.dataset_id for d in client.list_datasets() if d.dataset_id.startswith(gcp_env.dataset)] == []


def test_key_material_check_names_what_it_found_never_the_value(monkeypatch, service_account_json):
    from taxi_assets.cli import _smoke_no_key_material

    monkeypatch.setenv("TAXI_GCP_CREDENTIALS", service_account_json)
    key = json.loads(service_account_json)
    line = key["private_key"].splitlines()[3]

    name, ok, detail = _smoke_no_key_material(f"INFO something\n{line}\nmore")
    assert (name, ok) == ("no key material in the logs", False)
    assert detail == "found line 3 of the key's private_key" and line not in detail
    assert _smoke_no_key_material("Authorization: Bearer ya29.a0AfB_xyz")[1:] == (False, "found an OAuth access token")
    assert _smoke_no_key_material("nothing secret here")[1] is True
