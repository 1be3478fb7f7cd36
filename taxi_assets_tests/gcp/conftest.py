"""Local GCS and BigQuery servers for the gcp target's tests, started on free ports and stopped after the session.

- GCS: ``gcp-storage-emulator`` (JSON API, resumable uploads), storing objects as files under
  ``<its cwd>/.cloudstorage/<bucket>/``.
- BigQuery: ``bqemulator`` (REST, DuckDB inside). Two harness adaptations, product code unchanged:
  1. It needs DuckDB's spatial extension and cannot download it here: the pip package
     ``duckdb-extension-spatial`` carries it, and ``_spatial_extension`` copies it where DuckDB looks.
  2. It resolves ``gs://bucket/key`` only from a local folder named by ``BQEMU_GCS_LOCAL_ROOT``: it is started
     with that folder set to the GCS emulator's ``.cloudstorage``, so a load job reads the very object the lake
     uploaded, as BigQuery reads from GCS.
  (It also rejects the client's multipart upload of small files, ``load_table_from_file``; the product never
  uses it: loads go by URI.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from taxi_assets_tests.processes import free_port, running, stop_process_group

PROJECT = "local"
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 15


@dataclass(frozen=True)
class Emulator:
    endpoint: str  # http://127.0.0.1:<port>
    workdir: Path
    log: Path


@dataclass(frozen=True)
class GcpTestEnv:
    """One test's slice of the emulators: its own bucket and dataset, and the settings that point at them."""

    bucket: str
    dataset: str
    gcs_endpoint: str
    bq_endpoint: str


def _executable(name: str) -> str:
    beside_python = Path(sys.executable).parent / name  # the venv's script, even when the venv is not activated
    found = str(beside_python) if beside_python.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed (pip install -e '.[test]')")
    return found


def _wait_until_serving(proc: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{url}: emulator exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return  # an HTTP answer, even 404, means it is serving
        except OSError:
            time.sleep(0.2)
    stop_process_group(proc, timeout=STOP_TIMEOUT_S)
    pytest.fail(f"{url}: emulator not serving after {START_TIMEOUT_S}s:\n{log.read_text()[-3000:]}")


def _start(args: list[str], workdir: Path, endpoint: str, env: dict[str, str] | None = None) -> Iterator[Emulator]:
    log = workdir / "emulator.log"
    with running(args, log, cwd=workdir, env={**os.environ, **(env or {})}) as proc:
        _wait_until_serving(proc, endpoint, log)
        yield Emulator(endpoint=endpoint, workdir=workdir, log=log)


@pytest.fixture(scope="session")
def _spatial_extension() -> None:
    """Put DuckDB's spatial extension where DuckDB loads it from, if absent (the emulator cannot download it)."""
    import duckdb
    import duckdb_extension_spatial

    version = f"v{duckdb.__version__}"
    platform = duckdb.execute("PRAGMA platform").fetchone()[0]
    target = Path.home() / ".duckdb" / "extensions" / version / platform / "spatial.duckdb_extension"
    if not target.exists():
        source = Path(duckdb_extension_spatial.__file__).parent / "extensions" / version / "spatial.duckdb_extension"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory) -> Iterator[Emulator]:
    workdir = tmp_path_factory.mktemp("gcs-emulator")
    port = free_port()
    args = [_executable("gcp-storage-emulator"), "start", "--host", "127.0.0.1", "--port", str(port), "-q"]
    yield from _start(args, workdir, f"http://127.0.0.1:{port}")


@pytest.fixture(scope="session")
def bq_emulator(gcs_emulator, _spatial_extension, tmp_path_factory) -> Iterator[Emulator]:
    workdir = tmp_path_factory.mktemp("bq-emulator")
    rest, grpc = free_port(), free_port()
    args = [
        _executable("bqemulator"),
        "start",
        "--rest-port",
        str(rest),
        "--grpc-port",
        str(grpc),
        "--project",
        PROJECT,
        "--ephemeral",
        "--log-level",
        "warning",
    ]
    # Adaptation 2 (see the module docstring): gs:// URIs resolve to the GCS emulator's files.
    env = {"BQEMU_GCS_LOCAL_ROOT": str(gcs_emulator.workdir / ".cloudstorage")}
    yield from _start(args, workdir, f"http://127.0.0.1:{rest}", env)


def point_at_emulators(mp: pytest.MonkeyPatch, gcs: Emulator, bq: Emulator) -> GcpTestEnv:
    """Set the gcp target's settings to the emulators, with a fresh bucket and dataset."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    suffix = uuid.uuid4().hex[:10]
    env = GcpTestEnv(
        bucket=f"taxi-lake-{suffix}", dataset=f"nyc_taxi_{suffix}", gcs_endpoint=gcs.endpoint, bq_endpoint=bq.endpoint
    )
    client = storage.Client(
        project=PROJECT, credentials=AnonymousCredentials(), client_options={"api_endpoint": env.gcs_endpoint}
    )
    client.create_bucket(env.bucket, timeout=30)  # on real GCP the bucket is made once, by an admin
    for name, value in {
        "TAXI_TARGET": "gcp",
        "TAXI_GCS_BUCKET": env.bucket,
        "TAXI_GCP_PROJECT": PROJECT,
        "TAXI_BQ_DATASET": env.dataset,
        "TAXI_BQ_LOCATION": "US",
        "STORAGE_EMULATOR_HOST": env.gcs_endpoint,
        "TAXI_BQ_API_ENDPOINT": env.bq_endpoint,
        # Required by the target; the end-to-end tests replace it with a real server's URL.
        "TAXI_POSTGRES_URL": "postgresql://unused@127.0.0.1:1/unused",
    }.items():
        mp.setenv(name, value)
    mp.delenv("TAXI_GCP_CREDENTIALS", raising=False)
    mp.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    return env


@pytest.fixture
def gcp_env(monkeypatch, gcs_emulator, bq_emulator) -> GcpTestEnv:
    """The gcp target's settings, pointed at the emulators, with a fresh bucket and dataset for this test."""
    return point_at_emulators(monkeypatch, gcs_emulator, bq_emulator)


@pytest.fixture(scope="session")
def service_account_json() -> str:
    """A well-formed service-account key (a fresh RSA key, valid nowhere): to prove keys never leak."""
    import json

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return json.dumps(
        {
            "type": "service_account",
            "project_id": PROJECT,
            "private_key_id": "0123456789abcdef",
            "private_key": pem.decode(),
            "client_email": f"taxi-assets@{PROJECT}.iam.gserviceaccount.com",
            "client_id": "1",
            "token_uri": "https://oauth2.googleapis.com/token",
        }
    )
