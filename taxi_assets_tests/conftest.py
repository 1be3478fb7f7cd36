"""Real local servers for the tests: an HTTP server with generated TLC files, and an embedded Postgres."""

import contextlib
import functools
import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from taxi_assets.definitions import build_defs
from taxi_assets.fake_source import read_manifest, write_fake_source
from taxi_assets.resources.postgres import start_embedded_postgres, stop_embedded_postgres
from taxi_assets.targets import load_target

SERVICES = ("yellow", "green", "fhv")  # the mirror's services
ROWS_PER_MONTH = {"2021-01": 3_000, "2021-02": 2_400}
TLC_SERVICES = ("yellow", "green", "fhv", "fhvhv")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # keep test output readable
        pass


@contextlib.contextmanager
def serve(handler) -> Iterator[str]:
    """Serve ``handler`` (an http.server request handler class) on a free loopback port; yields the base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def serve_folder(folder: Path):
    """Serve the files of ``folder`` over HTTP, as the mirror would; yields the base URL."""
    return serve(functools.partial(_QuietHandler, directory=str(folder)))


@pytest.fixture(scope="session")
def source_dir(tmp_path_factory) -> Path:
    """Generated TLC files in the mirror's layout: every service, two months, and the zone lookup."""
    folder = tmp_path_factory.mktemp("tlc-mirror")
    for month, rows in ROWS_PER_MONTH.items():  # months of different sizes, so a mix-up shows in the counts
        write_fake_source(folder, list(SERVICES), [month], rows=rows, seed=7, layout="mirror")
    return folder


@pytest.fixture(scope="session")
def tlc_source_dir(tmp_path_factory) -> Path:
    """Generated TLC files in the TLC's parquet layout: every service, two months, and the zone lookup."""
    folder = tmp_path_factory.mktemp("tlc")
    for month, rows in ROWS_PER_MONTH.items():
        write_fake_source(folder, list(TLC_SERVICES), [month], rows=rows, seed=11, layout="tlc")
    return folder


@pytest.fixture(scope="session")
def tlc_http_source(tlc_source_dir) -> Iterator[str]:
    with serve_folder(tlc_source_dir) as url:
        yield url


@pytest.fixture(scope="session")
def source_manifest(source_dir) -> dict:
    return read_manifest(source_dir)


@pytest.fixture(scope="session")
def http_source(source_dir) -> Iterator[str]:
    with serve_folder(source_dir) as url:
        yield url


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory) -> Iterator[str]:
    """A real Postgres 16 (pgserver), on a unix socket; stopped after the session."""
    data_dir = tmp_path_factory.mktemp("pg")
    try:
        yield start_embedded_postgres(data_dir)
    finally:
        stop_embedded_postgres(data_dir)


@pytest.fixture
def postgres_db_url(postgres_url, request) -> str:
    """A fresh, empty database on the session's Postgres, so tests never see each other's tables."""
    import psycopg

    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:50]
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return postgres_url.replace("@/postgres?", f"@/{name}?")


@pytest.fixture
def local_env(monkeypatch, tmp_path, http_source, postgres_db_url) -> Path:
    """Environment of the embedded default, pointed at the mirror-layout HTTP source and a fresh data folder."""
    data_dir = tmp_path / "data"
    monkeypatch.setenv("TAXI_TARGET", "local")
    monkeypatch.setenv("TAXI_DATA_DIR", str(data_dir))
    monkeypatch.setenv("TAXI_SOURCE", "mirror")
    monkeypatch.setenv("TAXI_SOURCE_URL", http_source)
    monkeypatch.setenv("TAXI_POSTGRES_URL", postgres_db_url)
    return data_dir


@pytest.fixture
def tlc_env(monkeypatch, tmp_path, tlc_http_source, postgres_db_url) -> Path:
    """Environment of the embedded default, pointed at the TLC-layout HTTP source and a fresh data folder."""
    data_dir = tmp_path / "data"
    monkeypatch.setenv("TAXI_TARGET", "local")
    monkeypatch.setenv("TAXI_DATA_DIR", str(data_dir))
    monkeypatch.delenv("TAXI_SOURCE", raising=False)  # tlc is the default
    monkeypatch.delenv("TAXI_SOURCE_URL", raising=False)
    monkeypatch.setenv("TAXI_TLC_URL", tlc_http_source)
    monkeypatch.setenv("TAXI_POSTGRES_URL", postgres_db_url)
    return data_dir


@pytest.fixture
def mirror_copy(tmp_path, source_dir, monkeypatch, local_env) -> Iterator[Path]:
    """A private copy of the mirror's files, served over HTTP as TAXI_SOURCE_URL, that a test may change."""
    yield from _served_copy(source_dir, tmp_path / "mirror", monkeypatch, "TAXI_SOURCE_URL")


@pytest.fixture
def tlc_copy(tmp_path, tlc_source_dir, monkeypatch, tlc_env) -> Iterator[Path]:
    """A private copy of the TLC files, served over HTTP as TAXI_TLC_URL, that a test may change."""
    yield from _served_copy(tlc_source_dir, tmp_path / "tlc", monkeypatch, "TAXI_TLC_URL")


def _served_copy(source: Path, folder: Path, monkeypatch, setting: str) -> Iterator[Path]:
    shutil.copytree(source, folder)
    with serve_folder(folder) as url:
        monkeypatch.setenv(setting, url)
        yield folder


@pytest.fixture
def local_defs(local_env) -> dg.Definitions:
    return build_defs(load_target())


def run_job(
    defs: dg.Definitions,
    job_name: str,
    partition_key: str | None = None,
    raise_on_error: bool = True,
    instance: dg.DagsterInstance | None = None,
) -> dg.ExecuteInProcessResult:
    job = defs.resolve_job_def(job_name)
    return job.execute_in_process(
        partition_key=partition_key, instance=instance or dg.DagsterInstance.ephemeral(), raise_on_error=raise_on_error
    )
