"""The Dagster UI in a real browser: `dagster dev` as the docs tell a new user to start it, driven by headless
Chromium through Playwright. Open the asset graph, a trips asset's partitions, materialize one month from the
UI, wait until the UI shows it materialized, then find the month in the lake, DuckDB and Postgres.

Screenshots go to test-artifacts/deploy/<test>/. Needs Debian's `chromium` (Playwright drives the system browser;
no browser download); skipped, with the reason, only where it is not installed.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from taxi_assets.assets.summary import SUMMARY
from taxi_assets.assets.trips import TRIP_ASSETS
from taxi_assets_tests.deploy.support import (
    artifact_dir,
    copy_of_repo,
    fresh_database,
    local_deployment_env,
    running,
    server_up,
    tail,
    wait_for,
)
from taxi_assets_tests.processes import free_port
from taxi_assets_tests.stores import counts_in_every_store

MONTH = "2021-01"
SERVICE = "yellow"
CHROMIUM = os.getenv("CHROMIUM_PATH") or shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-dev-shm-usage",
]

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium; .ci/run installs it)"
)


@pytest.fixture
def dagster_dev(tmp_path, http_source, postgres_url, request):
    """`dagster dev` in the root of a fresh copy of the repository, without DAGSTER_HOME, as the README says: the
    instance is the top-level dagster.yaml (SQLite in the copy's .dagster_home/), the source the generated files,
    the trips' Postgres a fresh database; stopped, with its webserver, daemon, code server and run workers, when
    the test ends."""
    artifacts = artifact_dir(request)
    repo = copy_of_repo(tmp_path / "repo")
    data_dir = tmp_path / "data"
    trips_db = fresh_database(postgres_url, "ui_trips")
    env = local_deployment_env(
        data_dir, trips_db, TAXI_TARGET="local", TAXI_SOURCE="mirror", TAXI_SOURCE_URL=http_source
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = artifacts / "dagster-dev.log"
    dagster = str(Path(sys.executable).parent / "dagster")
    with running([dagster, "dev", "--host", "127.0.0.1", "--port", str(port)], log, cwd=repo, env=env) as process:
        wait_for(lambda: server_up(base), 120, "dagster dev serves the UI", process=process, log=log)
        yield {"base": base, "data_dir": data_dir, "trips_db": trips_db, "artifacts": artifacts, "log": log}


def test_materialize_a_month_from_the_ui(dagster_dev, source_manifest):
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        pytest.fail("playwright is a test requirement: pip install playwright==1.65.2 (no `playwright install`)")

    base, artifacts = dagster_dev["base"], dagster_dev["artifacts"]
    kept = source_manifest["files"][f"{SERVICE}/{SERVICE}_tripdata_{MONTH}.csv.gz"]["kept"]
    group = f"{base}/locations/taxi_assets/asset-groups/{SERVICE}"
    partitions = f"/assets/{SERVICE}/postgres_trips?view=partitions"

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(30_000)
        # The first visit shows a "join the community" dialog over whatever page is open: skip it when it comes.
        page.add_locator_handler(page.get_by_role("button", name="Skip"), lambda skip: skip.click())

        def shot(name: str) -> None:
            page.screenshot(path=str(artifacts / f"{name}.png"), full_page=False)

        try:
            # The asset graph: every group of the code location, once it has loaded.
            page.goto(f"{base}/asset-groups")
            expect(page.get_by_text(SERVICE, exact=True).first).to_be_visible(timeout=120_000)
            for name in ("fhv", "green", "taxi_zones", "yellow"):
                expect(page.get_by_text(name, exact=True).first).to_be_visible()
            expect(page.get_by_text("fetching statuses")).to_have_count(0)
            shot("01-asset-graph")

            # One group's graph: the four trips assets of the service and its two summaries.
            page.goto(group)
            for asset in (*TRIP_ASSETS, f"warehouse_{SUMMARY}", f"postgres_{SUMMARY}"):
                expect(page.get_by_text(asset, exact=True).first).to_be_visible()
            shot("02-yellow-asset-graph")

            # A trips asset's partitions, from its node in the graph: nothing materialized yet.
            page.locator(f'a[href="{partitions}"]').first.click()
            expect(page).to_have_url(re.compile(re.escape(partitions)))
            expect(page.get_by_text("Materialized (0)")).to_be_visible()
            page.get_by_placeholder("Filter by name").fill(MONTH)  # the list is long and virtualised
            expect(page.get_by_text(MONTH, exact=True).first).to_be_visible()
            shot("03-postgres-trips-partitions-before")

            # Materialize the month of the service's job (raw -> clean -> warehouse and Postgres) from the UI. (The
            # group also holds the summaries, which need the zone lookup first: the UI would ask "Are you sure?".)
            page.goto(f"{base}/locations/taxi_assets/jobs/{SERVICE}_trips_job")
            page.get_by_role("button", name="Materialize all").click()
            dialog = page.get_by_role("dialog")
            field = dialog.get_by_placeholder("ex: 2019-01", exact=False)
            field.fill(MONTH)
            field.press("Enter")
            expect(dialog.get_by_text("1 partition", exact=True)).to_be_visible()
            shot("04-launch-dialog")
            dialog.get_by_role("button", name="Launch 1 run").click()
            expect(page.get_by_text(re.compile(r"Launched run"))).to_be_visible()
            shot("05-launched")

            # Wait until the UI shows the month materialized (the run is queued, launched by the daemon, run).
            page.goto(f"{base}{partitions}")

            def materialized() -> bool:
                if page.get_by_text("Materialized (1)").is_visible():
                    return True
                page.reload()
                page.get_by_text("Materialized (").first.wait_for(timeout=30_000)
                return page.get_by_text("Materialized (1)").is_visible()

            wait_for(
                materialized,
                180,
                f"the UI shows {SERVICE}/postgres_trips {MONTH} materialized",
                interval=3,
                log=dagster_dev["log"],
            )
            page.get_by_placeholder("Filter by name").fill(MONTH)
            page.get_by_text(MONTH, exact=True).first.click()
            expect(page.get_by_text("Latest materialization")).to_be_visible()
            expect(page.get_by_text("dagster/row_count").first).to_be_visible()
            expect(page.get_by_text(str(kept), exact=True).first).to_be_visible()  # the rows cleaning kept
            shot("06-postgres-trips-2021-01-materialized")

            page.goto(f"{base}/runs")
            expect(page.get_by_text("Success").first).to_be_visible()
            shot("07-runs")

            # The pools of dagster.yaml, live: one slot each for the steps that write DuckDB and Postgres.
            page.goto(f"{base}/deployment/concurrency")
            for pool in ("postgres", "warehouse"):
                expect(page.get_by_role("link", name=pool, exact=True)).to_be_visible()
                expect(page.locator("body")).to_contain_text(re.compile(rf"{pool}\s*1(?!\d)"))  # its limit, loaded
            shot("08-concurrency-pools")
        except Exception:
            shot("failure")
            raise
        finally:
            browser.close()

    counts = counts_in_every_store(dagster_dev["data_dir"], dagster_dev["trips_db"], SERVICE, MONTH)
    assert counts == dict.fromkeys(["lake", "duckdb", "postgres"], kept), tail(dagster_dev["log"])
