"""Range runs (one run for several months): raw_trips downloads its months at the same time, clean_trips cleans
them in worker processes, and a month that fails neither loses nor hides the others."""

import collections
import functools
import shutil
import threading
import time

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from benchmarks.throttled_source import ThrottledHandler
from taxi_assets.assets.versions import UNCHANGED
from taxi_assets.definitions import build_defs
from taxi_assets.fake_source import write_fake_month
from taxi_assets.services import SERVICES, TLC
from taxi_assets.settings import ConfigurationError
from taxi_assets.targets import load_target
from taxi_assets_tests.conftest import serve

GREEN = SERVICES["green"]
PIECE = 8 * 1024  # bytes a paced server sends at a time (a month's file is about 50 KB)
ROWS = {"2021-01": 1_500, "2021-02": 1_300, "2021-03": 1_100, "2021-04": 900}  # a mix-up shows in the counts


class PacedSource:
    """A TLC-layout server over a folder that paces every body (benchmarks' ThrottledHandler), counts the GETs
    and HEADs per path and the most GETs it served at the same time."""

    def __init__(self, folder, rate: float):
        self.requests: collections.Counter = collections.Counter()
        self.in_flight = self.most_in_flight = 0
        lock, source = threading.Lock(), self

        class Handler(ThrottledHandler):
            def do_GET(self):
                with lock:
                    source.requests["GET", self.path.lstrip("/")] += 1
                    source.in_flight += 1
                    source.most_in_flight = max(source.most_in_flight, source.in_flight)
                try:
                    super().do_GET()
                finally:
                    with lock:
                        source.in_flight -= 1

            def copyfile(self, source_file, outputfile) -> None:
                # Paced before each piece, so the handler ends as the last byte goes out (ThrottledHandler sleeps
                # after it, which would overlap with the client's next connection).
                started, sent = time.monotonic(), 0
                while chunk := source_file.read(PIECE):
                    ahead = sent / self.rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
                    outputfile.write(chunk)
                    sent += len(chunk)

            def do_HEAD(self):
                with lock:
                    source.requests["HEAD", self.path.lstrip("/")] += 1
                super().do_HEAD()

        self.handler = functools.partial(type("Paced", (Handler,), {"rate": rate}), directory=str(folder))

    def gets(self) -> dict[str, int]:
        return {path.split("_")[-1][:7]: n for (method, path), n in self.requests.items() if method == "GET"}


@pytest.fixture
def months(tmp_path):
    """The green months of ROWS in the TLC layout; returns the folder."""
    folder = tmp_path / "tlc"
    for month, rows in ROWS.items():
        write_fake_month(folder, "green", month, rows=rows, seed=3)
    return folder


@pytest.fixture
def env(monkeypatch, tmp_path):
    """The embedded default's settings with a fresh data folder (no Postgres: only the lake is used here)."""
    monkeypatch.setenv("TAXI_TARGET", "local")
    monkeypatch.setenv("TAXI_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TAXI_FIRST_MONTH", "2021-01")
    for name in ("TAXI_SOURCE", "TAXI_SOURCE_URL", "TAXI_POSTGRES_URL", "TAXI_DOWNLOAD_CONCURRENCY"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def run_range(first: str, last: str, assets=("raw_trips",), instance=None) -> dg.ExecuteInProcessResult:
    defs = build_defs(load_target())
    selection = {dg.AssetKey(["green", name]) for name in assets}
    job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection=selection)
    return job.execute_in_process(
        instance=instance or dg.DagsterInstance.ephemeral(),
        tags={"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last},
        raise_on_error=False,
    )


def step_failure(result: dg.ExecuteInProcessResult) -> str:
    (failure,) = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    return failure.step_failure_data.user_failure_data.description  # a dg.Failure's own message


def recorded_months(instance: dg.DagsterInstance, asset: str) -> dict[str, dict]:
    """The metadata of each month's latest materialization of ``green/<asset>`` in ``instance``."""
    key, found = dg.AssetKey(["green", asset]), {}
    for month in ROWS:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=[month]), limit=1
        ).records
        if records:
            found[month] = {k: v.value for k, v in records[0].asset_materialization.metadata.items()}
    return found


def unchanged_months(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, bool]:
    """Which months the run did not do again (``UNCHANGED`` in their metadata)."""
    events = result.asset_materializations_for_node(f"green__{asset}")
    return {e.partition: UNCHANGED in e.metadata and e.metadata[UNCHANGED].value is True for e in events}


def lake_file(env_data, zone: str, month: str):
    key = GREEN.raw_key(month, TLC) if zone == "raw" else GREEN.clean_key(month)
    return env_data / "lake" / key


@pytest.mark.parametrize("concurrency", [4, 1])
def test_a_range_downloads_its_months_at_once_up_to_the_setting(env, tmp_path, months, concurrency):
    env.setenv("TAXI_DOWNLOAD_CONCURRENCY", str(concurrency))
    largest = max(f.stat().st_size for f in (months / "trip-data").iterdir())
    source = PacedSource(months, rate=largest / 0.4)  # each file takes about 0.4 s on its connection
    with serve(source.handler) as url:
        env.setenv("TAXI_TLC_URL", url)
        result = run_range("2021-01", "2021-04")

    assert result.success
    assert source.most_in_flight == concurrency
    assert source.gets() == dict.fromkeys(ROWS, 1)
    for month in ROWS:  # each month verified and published whole
        published = lake_file(tmp_path / "data", "raw", month).read_bytes()
        assert published == (months / GREEN.source_path(month, TLC)).read_bytes()


def test_a_month_missing_at_the_source_fails_the_range_and_keeps_the_others(env, tmp_path, months):
    missing = GREEN.source_path("2021-02", TLC)
    shutil.move(months / missing, tmp_path / "held-back.parquet")
    source, instance = PacedSource(months, rate=50e6), dg.DagsterInstance.ephemeral()
    with serve(source.handler) as url:
        env.setenv("TAXI_TLC_URL", url)
        failed = run_range("2021-01", "2021-03", instance=instance)

        assert not failed.success
        message = step_failure(failed)
        assert message == (
            "Downloading failed for 1 of 3 months (2021-02); 2021-01, 2021-03 done and recorded: "
            f"2021-02: {url}/{missing}: HTTP 404, not published at the source"
        )
        data = tmp_path / "data"
        assert [lake_file(data, "raw", m).exists() for m in ("2021-01", "2021-02", "2021-03")] == [True, False, True]
        recorded = recorded_months(instance, "raw_trips")
        assert sorted(recorded) == ["2021-01", "2021-03"]
        assert recorded["2021-03"]["bytes"] == lake_file(data, "raw", "2021-03").stat().st_size

        shutil.move(tmp_path / "held-back.parquet", months / missing)  # the source publishes the month
        again = run_range("2021-01", "2021-03", instance=instance)

    assert again.success
    assert source.gets() == {"2021-01": 1, "2021-02": 2, "2021-03": 1}  # only the missing month downloaded again
    assert unchanged_months(again, "raw_trips") == {"2021-01": True, "2021-02": False, "2021-03": True}


def clean_range(env, processes: int, months, instance=None) -> tuple[dg.ExecuteInProcessResult, dict]:
    env.setenv("TAXI_CLEAN_PROCESSES", str(processes))
    result = run_range("2021-01", "2021-03", assets=("clean_trips",), instance=instance)
    return result, recorded_months(instance, "clean_trips") if instance else {}


@pytest.fixture
def raw_lake(env, tmp_path, months):
    """Three months downloaded (from the folder) into a fresh lake, on one instance."""
    env.setenv("TAXI_TLC_URL", str(months))
    instance = dg.DagsterInstance.ephemeral()
    assert run_range("2021-01", "2021-03", instance=instance).success
    return instance


def test_cleaning_in_two_processes_gives_the_same_months_as_one_at_a_time(env, tmp_path, months):
    results = {}
    for processes in (1, 2):
        env.setenv("TAXI_DATA_DIR", str(tmp_path / f"data-{processes}"))
        env.setenv("TAXI_TLC_URL", str(months))
        instance = dg.DagsterInstance.ephemeral()
        assert run_range("2021-01", "2021-03", instance=instance).success
        result, recorded = clean_range(env, processes, months, instance)
        assert result.success
        logs = [e.message for e in instance.all_logs(result.run_id) if e.user_message]
        assert any("cleaning 3 months in 2 processes" in m for m in logs) == (processes == 2)
        results[processes] = recorded

    one, two = results[1], results[2]
    assert sorted(one) == sorted(two) == ["2021-01", "2021-02", "2021-03"]
    for month in one:
        for name in ("dagster/partition_row_count", "rows_read", "rows_dropped"):
            assert one[month].get(name) == two[month].get(name), (month, name)
        first = pq.read_table(lake_file(tmp_path / "data-1", "clean", month))
        second = pq.read_table(lake_file(tmp_path / "data-2", "clean", month))
        assert first.num_rows == one[month]["dagster/partition_row_count"] and first.equals(second)
        assert lake_file(tmp_path / "data-1", "clean", month).read_bytes() == (
            lake_file(tmp_path / "data-2", "clean", month).read_bytes()
        )


def test_a_month_that_breaks_the_contract_fails_the_range_and_the_others_are_recorded(env, tmp_path, raw_lake):
    data = tmp_path / "data"
    bad = lake_file(data, "raw", "2021-02")
    good = bad.read_bytes()
    pq.write_table(pa.table({"not_a_trip_column": [1, 2, 3]}), bad)

    failed, recorded = clean_range(env, 2, None, raw_lake)

    assert not failed.success
    message = step_failure(failed)
    assert message.startswith(
        f"Cleaning failed for 1 of 3 months (2021-02); 2021-01, 2021-03 done and recorded: 2021-02: {bad}"
    )
    assert sorted(recorded) == ["2021-01", "2021-03"]
    assert [lake_file(data, "clean", m).exists() for m in ("2021-01", "2021-02", "2021-03")] == [True, False, True]
    for month in ("2021-01", "2021-03"):
        assert (
            pq.read_metadata(lake_file(data, "clean", month)).num_rows == recorded[month]["dagster/partition_row_count"]
        )

    bad.write_bytes(good)  # the raw file repaired: only that month is cleaned again
    again, _ = clean_range(env, 2, None, raw_lake)
    assert again.success
    assert unchanged_months(again, "clean_trips") == {"2021-01": True, "2021-02": False, "2021-03": True}


@pytest.mark.parametrize(
    ("name", "text"),
    [("TAXI_DOWNLOAD_CONCURRENCY", "0"), ("TAXI_DOWNLOAD_CONCURRENCY", "four"), ("TAXI_CLEAN_PROCESSES", "-1")],
)
def test_a_wrong_concurrency_setting_fails_the_load_naming_it(env, months, name, text):
    env.setenv("TAXI_TLC_URL", str(months))
    env.setenv(name, text)
    with pytest.raises(ConfigurationError, match=f"^{name}='{text}' is not a whole number"):
        load_target()


def test_the_download_concurrency_setting_reaches_the_source(env, months):
    env.setenv("TAXI_TLC_URL", str(months))
    assert load_target().resources["source"].download_concurrency == 4
    env.setenv("TAXI_DOWNLOAD_CONCURRENCY", "2")
    assert load_target().resources["source"].download_concurrency == 2
