"""Helpers of the deployment tests: processes (daemon, `dagster dev`) that are always stopped with their
children, bounded waits, fresh databases on the embedded Postgres, and the test-artifacts folder."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from taxi_assets_tests.processes import running as _running

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "deploy"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def artifact_dir(request) -> Path:
    """test-artifacts/deploy/<test name>/, emptied: logs and screenshots a CI run keeps."""
    name = "".join(c if c.isalnum() or c in "-_" else "_" for c in request.node.name)
    folder = ARTIFACTS / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def running(cmd: list[str], log: Path, cwd: Path = ROOT, env: dict | None = None):
    """``taxi_assets_tests.processes.running``, in the repository root by default."""
    return _running(cmd, log, cwd=cwd, env=env)


def wait_for(
    condition,
    timeout: float,
    what: str,
    interval: float = 0.5,
    process: subprocess.Popen | None = None,
    log: Path | None = None,
):
    """Poll ``condition`` until it returns something truthy; fail with ``what`` (and the log's tail) on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            pytest.fail(f"{what}: the process exited ({process.returncode})\n{tail(log)}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f} s\n{tail(log)}")
        time.sleep(interval)


def tail(log: Path | None, lines: int = 60) -> str:
    if log is None or not log.exists():
        return ""
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def fresh_database(postgres_url: str, name: str) -> str:
    """A new, empty database on the session's Postgres; returns its libpq URL."""
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return postgres_url.replace("@/postgres?", f"@/{name}?")


def sqlalchemy_url(libpq_url: str) -> str:
    """The form DAGSTER_PG_URL takes: the driver named (SQLAlchemy 2.1 would pick psycopg 3 for postgresql://)."""
    assert libpq_url.startswith("postgresql://")
    return "postgresql+psycopg2://" + libpq_url.removeprefix("postgresql://")
