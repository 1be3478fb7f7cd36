"""Data versions: re-materializing an unchanged month downloads nothing and leaves every store untouched; a
changed source file is downloaded and flows to every store; a run tagged taxi/refresh does it all again."""

import collections
import functools
import http.server
import os
import shutil
import time

import dagster as dg
import duckdb
import psycopg
import pytest

from taxi_assets.assets.trips import TRIP_ASSETS
from taxi_assets.assets.versions import REFRESH_TAG, UNCHANGED
from taxi_assets.definitions import build_defs
from taxi_assets.fake_source import read_manifest, write_fake_month
from taxi_assets.services import SERVICES, TLC
from taxi_assets.targets import load_target
from taxi_assets_tests.conftest import serve
from taxi_assets_tests.stores import counts_in_every_store
from taxi_assets_tests.test_pipeline import materialization_metadata

MONTH = "2021-01"
SOURCE_PATH = SERVICES["green"].source_path(MONTH, TLC)


class CountingSource:
    """A TLC-layout HTTP server over a folder that counts the requests per method and path."""

    def __init__(self, folder):
        self.requests: collections.Counter = collections.Counter()
        counter = self.requests

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, format, *args):
                pass

            def do_GET(self):
                counter["GET", self.path.lstrip("/")] += 1
                super().do_GET()

            def do_HEAD(self):
                counter["HEAD", self.path.lstrip("/")] += 1
                super().do_HEAD()

        self.handler = functools.partial(Handler, directory=str(folder))


@pytest.fixture
def counting_source(tmp_path, tlc_source_dir, monkeypatch, tlc_env):
    folder = tmp_path / "tlc"
    shutil.copytree(tlc_source_dir, folder)
    source = CountingSource(folder)
    with serve(source.handler) as url:
        monkeypatch.setenv("TAXI_TLC_URL", url)
        source.folder = folder
        yield source


def store_identities(data_dir, postgres_url) -> dict[str, object]:
    """What a reload of the green month would change in each store: the lake files' inode and modification time,
    the DuckDB month table's oid and the oid of the month's Postgres partition."""
    lake = data_dir / "lake"
    identities = {}
    for key in (SERVICES["green"].raw_key(MONTH, TLC), SERVICES["green"].clean_key(MONTH)):
        stat = (lake / key).stat()
        identities[key] = (stat.st_ino, stat.st_mtime_ns)
    with duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True) as conn:
        identities["duckdb"] = conn.execute(
            "SELECT table_oid FROM duckdb_tables() WHERE schema_name = 'nyc_taxi' AND table_name = ?",
            ["green_trips_2021_01"],
        ).fetchone()
    with psycopg.connect(postgres_url) as conn:
        identities["postgres"] = conn.execute(
            "SELECT array_agg(inhrelid ORDER BY inhrelid) FROM pg_inherits "
            "WHERE inhparent = 'nyc_taxi.green_trips'::regclass"
        ).fetchone()
    return identities


def unchanged_flags(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {name: bool(materialization_metadata(result, f"green/{name}").get(UNCHANGED, False)) for name in TRIP_ASSETS}


def data_versions(instance: dg.DagsterInstance) -> dict[str, str]:
    versions = {}
    for name in TRIP_ASSETS:
        record = instance.get_latest_data_version_record(dg.AssetKey(["green", name]), partition_key=MONTH)
        versions[name] = record.asset_materialization.tags["dagster/data_version"]
    return versions


def test_an_unchanged_month_is_not_downloaded_again_and_a_changed_one_flows_to_every_store(tlc_env, counting_source):
    defs, url, instance = build_defs(load_target()), os.environ["TAXI_POSTGRES_URL"], dg.DagsterInstance.ephemeral()
    job = defs.resolve_job_def("green_trips_job")
    selection = [dg.AssetKey(["green", name]) for name in TRIP_ASSETS]

    def run(**tags) -> dg.ExecuteInProcessResult:
        return job.execute_in_process(partition_key=MONTH, instance=instance, asset_selection=selection, tags=tags)

    first = run()
    kept = read_manifest(counting_source.folder)["files"][SOURCE_PATH]["kept"]
    assert counts_in_every_store(tlc_env, url, "green", MONTH) == {"lake": kept, "duckdb": kept, "postgres": kept}
    assert counting_source.requests["GET", SOURCE_PATH] == 1
    assert unchanged_flags(first) == dict.fromkeys(TRIP_ASSETS, False)
    before, versions = store_identities(tlc_env, url), data_versions(instance)

    # The same file at the source: one HEAD, no download, every store untouched, the same data versions.
    time.sleep(0.01)
    again = run()
    assert counting_source.requests["GET", SOURCE_PATH] == 1 and counting_source.requests["HEAD", SOURCE_PATH] == 1
    assert unchanged_flags(again) == dict.fromkeys(TRIP_ASSETS, True)
    assert store_identities(tlc_env, url) == before
    assert data_versions(instance) == versions
    assert materialization_metadata(again, "green/warehouse_trips")["dagster/partition_row_count"] == kept
    # The month's checks still run and pass (months_on_time judges the calendar, not this month).
    checks = {(c.asset_key.to_user_string(), c.check_name): c.passed for c in again.get_asset_check_evaluations()}
    assert {k: v for k, v in checks.items() if k[1] != "months_on_time"} == {
        ("green/clean_trips", "dropped_rows_below_1_percent"): True,
        ("green/warehouse_trips", "rows_match_clean_trips"): True,
        ("green/postgres_trips", "rows_match_clean_trips"): True,
    }

    # The TLC re-issues the month with other trips: downloaded, and every store holds the new month.
    reissued = write_fake_month(counting_source.folder, "green", MONTH, rows=2_345, seed=5)
    changed = run()
    assert counting_source.requests["GET", SOURCE_PATH] == 2
    assert unchanged_flags(changed) == dict.fromkeys(TRIP_ASSETS, False)
    expected = dict.fromkeys(("lake", "duckdb", "postgres"), reissued["kept"])
    assert reissued["kept"] != kept and counts_in_every_store(tlc_env, url, "green", MONTH) == expected
    assert all(data_versions(instance)[name] != versions[name] for name in TRIP_ASSETS)

    # Asked to refresh, the unchanged month is done again.
    refreshed = run(**{REFRESH_TAG: "true"})
    assert counting_source.requests["GET", SOURCE_PATH] == 3
    assert unchanged_flags(refreshed) == dict.fromkeys(TRIP_ASSETS, False)
    assert counts_in_every_store(tlc_env, url, "green", MONTH) == expected


def test_a_month_removed_from_a_store_is_loaded_again(tlc_env, counting_source):
    defs, url, instance = build_defs(load_target()), os.environ["TAXI_POSTGRES_URL"], dg.DagsterInstance.ephemeral()
    job = defs.resolve_job_def("green_trips_job")
    selection = [dg.AssetKey(["green", name]) for name in TRIP_ASSETS]
    job.execute_in_process(partition_key=MONTH, instance=instance, asset_selection=selection)
    kept = read_manifest(counting_source.folder)["files"][SOURCE_PATH]["kept"]
    with psycopg.connect(url) as conn:
        conn.execute("DELETE FROM nyc_taxi.green_trips")

    result = job.execute_in_process(partition_key=MONTH, instance=instance, asset_selection=selection)

    assert counting_source.requests["GET", SOURCE_PATH] == 1  # the lake still had it
    assert unchanged_flags(result) == {
        "raw_trips": True,
        "clean_trips": True,
        "warehouse_trips": True,
        "postgres_trips": False,
    }
    assert counts_in_every_store(tlc_env, url, "green", MONTH) == {"lake": kept, "duckdb": kept, "postgres": kept}


def test_raw_files_put_into_the_lake_by_another_system_are_cleaned_every_time(tlc_env, counting_source):
    """The lake sensor reports each new raw file with a new data version, so clean never takes it for the last."""
    from taxi_assets.automation.lake_sensor import build_lake_sensor
    from taxi_assets.partitions import Calendar
    from taxi_assets.resources.lake import LocalLake

    defs, url, instance = build_defs(load_target()), os.environ["TAXI_POSTGRES_URL"], dg.DagsterInstance.ephemeral()
    job = defs.resolve_job_def("green_trips_job")
    downstream = [dg.AssetKey(["green", name]) for name in TRIP_ASSETS[1:]]
    job.execute_in_process(partition_key=MONTH, instance=instance)
    lake, sensor, cursor = LocalLake(root=str(tlc_env / "lake")), build_lake_sensor(Calendar(TLC)), None

    for rows in (2_100, 1_700):  # twice: two reports in a row must not look alike
        dropped = write_fake_month(counting_source.folder / "upload", "green", MONTH, rows=rows, seed=rows)
        with lake.write(SERVICES["green"].raw_key(MONTH, TLC)) as path:
            shutil.copyfile(counting_source.folder / "upload" / SOURCE_PATH, path)
        tick = sensor(dg.build_sensor_context(instance=instance, cursor=cursor, resources={"lake": lake}))
        (event,) = tick.asset_events
        instance.report_runless_asset_event(event)
        cursor = tick.cursor

        result = job.execute_in_process(partition_key=MONTH, instance=instance, asset_selection=downstream)

        expected = dict.fromkeys(("lake", "duckdb", "postgres"), dropped["kept"])
        assert counts_in_every_store(tlc_env, url, "green", MONTH) == expected
        assert not any(materialization_metadata(result, f"green/{name}").get(UNCHANGED) for name in TRIP_ASSETS[1:])
    assert counting_source.requests["GET", SOURCE_PATH] == 1  # nothing downloaded for them


def test_a_source_that_refuses_head_is_downloaded_again_instead(tlc_env, tmp_path, tlc_source_dir, monkeypatch):
    """The identity is asked by HEAD only to save a download: a server answering HEAD with 405 gets a GET."""
    folder = tmp_path / "no-head"
    shutil.copytree(tlc_source_dir, folder)
    gets: collections.Counter = collections.Counter()

    class NoHead(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format, *args):
            pass

        def do_HEAD(self):
            self.send_error(405)

        def do_GET(self):
            gets[self.path.lstrip("/")] += 1
            super().do_GET()

    with serve(functools.partial(NoHead, directory=str(folder))) as url:
        monkeypatch.setenv("TAXI_TLC_URL", url)
        defs, instance = build_defs(load_target()), dg.DagsterInstance.ephemeral()
        job = defs.resolve_job_def("green_trips_job")
        selection = [dg.AssetKey(["green", name]) for name in TRIP_ASSETS]
        job.execute_in_process(partition_key=MONTH, instance=instance, asset_selection=selection)
        again = job.execute_in_process(partition_key=MONTH, instance=instance, asset_selection=selection)

    assert gets[SOURCE_PATH] == 2 and again.success
    # The same file downloaded again has the same identity: the months below are still not done again.
    assert unchanged_flags(again) == {
        "raw_trips": False,
        "clean_trips": True,
        "warehouse_trips": True,
        "postgres_trips": True,
    }
