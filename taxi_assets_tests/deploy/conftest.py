"""Fixtures of the deployment tests: the deployment's instance, deploy/vm/dagster.yaml, on the embedded Postgres."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from taxi_assets_tests.deploy.support import ROOT, fresh_database, sqlalchemy_url


@pytest.fixture
def storage_db(postgres_url, request) -> str:
    """libpq URL of a fresh database for Dagster's own storage (separate from the trips' database)."""
    name = "dagster_" + "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:40]
    return fresh_database(postgres_url, name)


@pytest.fixture
def deploy_home(tmp_path, storage_db, monkeypatch) -> Path:
    """DAGSTER_HOME holding deploy/vm/dagster.yaml, unchanged, with DAGSTER_PG_URL on the embedded Postgres: the
    instance of a deployment on one host, as docs/DEPLOYMENT.md sets it up."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "deploy/vm/dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("DAGSTER_PG_URL", sqlalchemy_url(storage_db))
    return home
