"""Helpers of the deployment tests: a copy of the repository, the environment of a local deployment, processes
(daemon, `dagster dev`) that are always stopped with their children, bounded waits, fresh databases on the embedded
Postgres, and the test-artifacts folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from taxi_assets_tests.processes import running as _running

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "deploy"


# What a clone never has: local environments, data, Dagster's instance folders, caches, test output.
_NOT_IN_A_CLONE = shutil.ignore_patterns(
    *(".git", ".venv", "data", "build", "test-artifacts", ".dagster_home", ".tmp_dagster_home_*", ".env"),
    *("__pycache__", "*.egg-info", ".pytest_cache", ".ruff_cache"),
)


def copy_of_repo(dest: Path) -> Path:
    """The repository as a fresh clone of the working tree would have it, in ``dest``: the files git tracks or
    would track (``git ls-files --cached --others --exclude-standard``), uncommitted changes included, and none
    of the ignored ones (.venv, data/, .dagster_home/). Without git, a copy that leaves out the same folders."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            check=True,
            capture_output=True,
            timeout=60,
        ).stdout.decode()
    except (OSError, subprocess.CalledProcessError):
        shutil.copytree(ROOT, dest, ignore=_NOT_IN_A_CLONE)
        return dest
    for rel in filter(None, listed.split("\0")):
        source = ROOT / rel
        if source.is_file():  # a tracked file deleted in the working tree is not in the clone either
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / rel)
    return dest


def graphql(base: str, query: str, variables: dict | None = None, timeout: float = 30) -> dict:
    """POST ``query`` to the Dagster webserver at ``base``; returns ``data`` (fails on GraphQL errors)."""
    request = urllib.request.Request(
        f"{base}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body = json.load(response)
    assert not body.get("errors"), body["errors"]
    return body["data"]


def server_up(base: str) -> bool:
    """Whether the Dagster webserver at ``base`` answers."""
    try:
        with urllib.request.urlopen(f"{base}/server_info", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


# What a shell may hold that would choose the deployment of a test: Dagster's instance, and any taxi_assets setting.
_SHELL_INSTANCE = ("DAGSTER_HOME", "DAGSTER_PG_URL")


def local_deployment_env(
    data_dir: Path, postgres_url: str, dagster_home: Path | None = None, **settings: str
) -> dict[str, str]:
    """The environment of a local deployment's processes (`dagster dev`, the webserver, the daemon, `dagster asset
    materialize`) on the embedded default: this process's environment without the shell's Dagster instance
    (DAGSTER_HOME, DAGSTER_PG_URL) and TAXI_* settings, then the lake and DuckDB in ``data_dir``
    (TAXI_DATA_DIR), the trips' Postgres at ``postgres_url`` (TAXI_POSTGRES_URL), the instance in ``dagster_home``
    (None: no DAGSTER_HOME, so the dagster.yaml of the folder the command runs in) and ``settings`` (the source's,
    TAXI_TARGET, ...: unset ones keep the code's defaults)."""
    env = {k: v for k, v in os.environ.items() if k not in _SHELL_INSTANCE and not k.startswith("TAXI_")}
    if dagster_home is not None:
        env["DAGSTER_HOME"] = str(dagster_home)
    env.update(TAXI_DATA_DIR=str(data_dir), TAXI_POSTGRES_URL=postgres_url, **settings)
    return env


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
