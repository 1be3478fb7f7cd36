"""Helpers of the deployment tests: processes (daemon, `dagster dev`) that are always stopped with their
children, bounded waits, fresh databases on the embedded Postgres, and the test-artifacts folder."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

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


@contextlib.contextmanager
def running(cmd: list[str], log: Path, cwd: Path = ROOT, env: dict | None = None) -> Iterator[subprocess.Popen]:
    """Run ``cmd`` in its own process group (output in ``log``); on exit stop the group: SIGTERM, then SIGKILL.

    The group holds everything the command starts (code servers, run workers), and only that.
    """
    with open(log, "wb") as out:
        process = subprocess.Popen(cmd, cwd=cwd, env=env or dict(os.environ), stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            yield process
        finally:
            for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, sig)
                try:
                    process.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
            # Children that outlived their parent are still in the group.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)


def wait_for(condition, timeout: float, what: str, interval: float = 0.5, process: subprocess.Popen | None = None,
             log: Path | None = None):
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
