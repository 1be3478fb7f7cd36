"""Faults of the source: a misbehaving HTTP server (fault_http.py) or a bad file under the real raw asset.

Each case runs ``yellow/raw_trips`` (or the client itself) with small limits, so a case takes a few seconds, and
checks the lake afterwards: the previous good raw file byte-identical, no temporary file left.
"""

import gzip
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from taxi_assets.assets.trips import build_trip_assets
from taxi_assets.fake_source import write_fake_source
from taxi_assets.services import MIRROR, SERVICES, TLC
from taxi_assets.source import SourceError, TaxiSource
from taxi_assets.targets import load_target
from taxi_assets_tests.conftest import serve_folder
from taxi_assets_tests.faults.fault_http import fault_server

MONTH = "2021-01"
YELLOW = SERVICES["yellow"]
PARQUET_PATH = "/" + YELLOW.source_path(MONTH, TLC)  # /trip-data/yellow_tripdata_2021-01.parquet
CSV_PATH = "/" + YELLOW.source_path(MONTH, MIRROR)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tlc_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("faults-tlc")
    write_fake_source(folder, ["yellow"], [MONTH], rows=2_000, seed=5, layout="tlc")
    return folder


@pytest.fixture(scope="module")
def mirror_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("faults-mirror")
    write_fake_source(folder, ["yellow"], [MONTH], rows=2_000, seed=5, layout="mirror")
    return folder


def quick_source(url: str, **limits) -> TaxiSource:
    """A source with limits in seconds, not minutes: 2 attempts of at most 1 s without 64 KiB arriving."""
    settings = dict(timeout_seconds=1, min_progress_bytes=64 * 1024, attempt_seconds=10, max_retries=1)
    return TaxiSource(base_url=url, backoff_seconds=0.1, retry_seconds=5, **{**settings, **limits})


class RawMonth:
    """``yellow/raw_trips`` of the embedded default (lake under ``data_dir``), run for 2021-01 with a given
    source; each run has a new instance, so the month is always downloaded."""

    def __init__(self, monkeypatch, data_dir: Path, layout: str):
        monkeypatch.setenv("TAXI_TARGET", "local")
        monkeypatch.setenv("TAXI_DATA_DIR", str(data_dir))
        monkeypatch.setenv("TAXI_SOURCE", layout)
        monkeypatch.setenv("TAXI_SOURCE_URL" if layout == "mirror" else "TAXI_TLC_URL", "http://127.0.0.1:9")
        target = load_target("local")
        self.asset = build_trip_assets(YELLOW, target.kinds, target.backfill_policy, target.calendar)[0]
        self.resources = target.resources
        self.lake = data_dir / "lake"
        self.raw_file = self.lake / YELLOW.raw_key(MONTH, MIRROR if layout == "mirror" else TLC)

    def run(self, source: TaxiSource) -> dg.ExecuteInProcessResult:
        return dg.materialize(
            [self.asset], partition_key=MONTH, resources={**self.resources, "source": source}, raise_on_error=False
        )

    def lake_files(self) -> list[str]:
        """Every file under the lake, staging files (``.name.partial``) included."""
        return sorted(p.relative_to(self.lake).as_posix() for p in self.lake.rglob("*") if p.is_file())


def failure(result: dg.ExecuteInProcessResult) -> str:
    """The message of the step's failure, as the UI shows it first (no causes, no stack)."""
    assert not result.success
    (event,) = result.get_step_failure_events()
    return event.step_failure_data.error.message


@pytest.fixture
def tlc_raw(monkeypatch, tmp_path, tlc_folder) -> RawMonth:
    """The TLC-layout raw asset with a good 2021-01 already in the lake."""
    raw = RawMonth(monkeypatch, tmp_path / "data", "tlc")
    with serve_folder(tlc_folder) as url:
        assert raw.run(quick_source(url)).success
    assert raw.raw_file.read_bytes() == (tlc_folder / PARQUET_PATH[1:]).read_bytes()
    return raw


def assert_good_copy_kept(raw: RawMonth, good: bytes) -> None:
    assert raw.raw_file.read_bytes() == good
    assert raw.lake_files() == [raw.raw_file.relative_to(raw.lake).as_posix()]  # no staging file left


@pytest.mark.fault_case("Source trickles bytes")
def test_a_trickling_source_fails_with_a_read_timeout_within_the_bound(tlc_raw, tlc_folder, tmp_path):
    good = tlc_raw.raw_file.read_bytes()
    body = (tlc_folder / PARQUET_PATH[1:]).read_bytes()
    with fault_server({PARQUET_PATH: body}, trickle=(200, 0.25)) as server:  # 800 B/s, never 1 s without data
        started = time.monotonic()
        message = failure(tlc_raw.run(quick_source(server.url)))
        seconds = time.monotonic() - started
        assert f"{server.url}{PARQUET_PATH}: read timeout: " in message
        assert "less than 65,536 bytes per 1s (the source stalls or trickles) (gave up after 2 attempts)" in message
        assert server.gets[PARQUET_PATH] == 2  # the first attempt and one retry, no step retry on top
        # Bound: 2 attempts x (1 s window + 1 s to notice) + 0.1 s backoff, plus the run's own overhead.
        assert seconds < 10
    assert_good_copy_kept(tlc_raw, good)

    with fault_server({PARQUET_PATH: body}, trickle=(200, 0.25)) as server:
        # Fast enough for the window but longer than one attempt may take: stopped by attempt_seconds.
        slow = quick_source(server.url, min_progress_bytes=100, attempt_seconds=1.5, max_retries=0)
        with pytest.raises(SourceError, match=rf"{server.url}{PARQUET_PATH}: read timeout: .* longer than 1.5s"):
            slow.download(PARQUET_PATH[1:], tmp_path / "slow")
        assert server.gets[PARQUET_PATH] == 1

    # Slow, a few bytes at a time, but above the minimum rate: not cut, and the magic bytes are still found.
    small = b"PAR1" + bytes(range(256)) + b"PAR1"
    with fault_server({PARQUET_PATH: small}, trickle=(3, 0.01)) as server:
        quick_source(server.url, min_progress_bytes=100).download(PARQUET_PATH[1:], tmp_path / "small")
        assert (tmp_path / "small").read_bytes() == small and server.gets[PARQUET_PATH] == 1


@pytest.mark.fault_case("Source stalls mid-body")
def test_a_stalled_body_fails_with_a_read_timeout(tlc_raw, tlc_folder):
    good = tlc_raw.raw_file.read_bytes()
    body = (tlc_folder / PARQUET_PATH[1:]).read_bytes()
    with fault_server({PARQUET_PATH: body}, stall_after=5_000) as server:
        started = time.monotonic()
        result = tlc_raw.run(quick_source(server.url))
        assert time.monotonic() - started < 10
        assert (
            f"{server.url}{PARQUET_PATH}: read timeout: no data for 1s (the source stalls) (gave up after 2 attempts)"
            in (failure(result))
        )
        assert server.gets[PARQUET_PATH] == 2
    assert_good_copy_kept(tlc_raw, good)


@pytest.mark.fault_case("Source resets the connection mid-body")
def test_a_reset_connection_is_retried_then_fails_naming_the_url(tlc_raw, tlc_folder, tmp_path):
    good = tlc_raw.raw_file.read_bytes()
    body = (tlc_folder / PARQUET_PATH[1:]).read_bytes()
    with fault_server({PARQUET_PATH: body}, reset_after=5_000) as server:
        message = failure(tlc_raw.run(quick_source(server.url)))
        assert f"{server.url}{PARQUET_PATH}: Connection broken: " in message
        assert "Connection reset by peer" in message and "(gave up after 2 attempts)" in message
        assert server.gets[PARQUET_PATH] == 2
    assert_good_copy_kept(tlc_raw, good)
    # Reset once only: the retry brings the whole file.
    with fault_server({PARQUET_PATH: body}, reset_after=5_000, faulty_gets=1) as server:
        quick_source(server.url).download(PARQUET_PATH[1:], tmp_path / "y.parquet")
        assert (tmp_path / "y.parquet").read_bytes() == body and server.gets[PARQUET_PATH] == 2


@pytest.mark.fault_case("Source sends less than its Content-Length")
def test_a_body_shorter_than_announced_is_retried_then_fails_naming_the_url(tlc_raw, tlc_folder):
    good = tlc_raw.raw_file.read_bytes()
    body = (tlc_folder / PARQUET_PATH[1:]).read_bytes()
    with fault_server({PARQUET_PATH: body}, short_by=1_000) as server:
        message = failure(tlc_raw.run(quick_source(server.url)))
        assert f"{server.url}{PARQUET_PATH}: Connection broken: IncompleteRead(" in message
        assert f"IncompleteRead({len(body)} bytes read, 1000 more expected) (gave up after 2 attempts)" in message
        assert server.gets[PARQUET_PATH] == 2
    assert_good_copy_kept(tlc_raw, good)


@pytest.mark.fault_case("Source answers 500 then 200")
def test_a_500_then_200_brings_the_exact_file(monkeypatch, tmp_path, tlc_folder):
    raw = RawMonth(monkeypatch, tmp_path / "data", "tlc")
    body = (tlc_folder / PARQUET_PATH[1:]).read_bytes()
    with fault_server({PARQUET_PATH: body}, fail_first=1) as server:
        assert raw.run(quick_source(server.url)).success
        assert server.gets[PARQUET_PATH] == 2
    assert raw.raw_file.read_bytes() == body
    assert raw.lake_files() == [raw.raw_file.relative_to(raw.lake).as_posix()]


@pytest.mark.fault_case("Source URL has an unsupported scheme")
def test_an_ftp_base_url_is_an_error_naming_the_setting(monkeypatch, tmp_path):
    source = TaxiSource(base_url="ftp://user:secret@files.example/tlc?token=secret")
    expected = (
        "TaxiSource.base_url 'ftp://files.example/tlc': ftp:// is not supported (http, https, file, or a local folder)"
    )
    for call in (lambda: source.download("trip-data/y.parquet", tmp_path / "y"), lambda: source.is_published("y")):
        with pytest.raises(SourceError) as raised:
            call()
        assert str(raised.value) == expected  # not "no such file": ftp:// is no folder; the login is not shown
    raw = RawMonth(monkeypatch, tmp_path / "data", "tlc")
    message = failure(raw.run(source))
    assert expected in message and "secret" not in message
    assert not raw.lake.exists() or raw.lake_files() == []


def _with_bad_value(folder: Path, tmp_path: Path, layout: str) -> Path:
    """A copy of ``folder`` whose yellow 2021-01 holds one bad value in an integer column."""
    bad = tmp_path / f"bad-{layout}"
    shutil.copytree(folder, bad)
    if layout == "mirror":  # 'abc' as the first row's VendorID
        path = bad / CSV_PATH[1:]
        header, first, rest = gzip.decompress(path.read_bytes()).split(b"\n", 2)
        path.write_bytes(gzip.compress(b"\n".join([header, b"abc" + first[first.index(b",") :], rest])))
    else:  # 1.5 passengers in the first row (the column is DOUBLE in the TLC's 2021 files, as in the real ones)
        path = bad / PARQUET_PATH[1:]
        table = pq.read_table(path)
        index = table.schema.get_field_index("passenger_count")
        values = table.column(index).to_pylist()
        table = table.set_column(index, "passenger_count", pa.array([1.5, *values[1:]], pa.float64()))
        pq.write_table(table, path)
    return bad


@pytest.mark.parametrize(
    ("layout", "column", "value"),
    [
        pytest.param(
            "mirror",
            "VendorID",
            "invalid value 'abc'",
            marks=pytest.mark.fault_case("Source CSV has text in an integer column"),
        ),
        pytest.param(
            "tlc",
            "passenger_count",
            "1.5",
            marks=pytest.mark.fault_case("Source parquet has a fraction in an integer column"),
        ),
    ],
)
def test_a_file_that_cannot_be_cleaned_never_replaces_the_good_raw_file(
    monkeypatch, tmp_path, tlc_folder, mirror_folder, layout, column, value
):
    folder = mirror_folder if layout == "mirror" else tlc_folder
    path = CSV_PATH if layout == "mirror" else PARQUET_PATH
    raw = RawMonth(monkeypatch, tmp_path / "data", layout)
    with serve_folder(folder) as url:
        assert raw.run(quick_source(url)).success
    good = raw.raw_file.read_bytes()
    with serve_folder(_with_bad_value(folder, tmp_path, layout)) as url:
        message = failure(raw.run(quick_source(url)))
    assert f"{url}{path}: column {column!r}" in message and value in message
    assert_good_copy_kept(raw, good)


@pytest.mark.fault_case("Run stopped (SIGTERM) during a download")
def test_sigterm_during_a_download_stops_the_run_without_a_retry(tmp_path, tlc_folder, postgres_db_url):
    body = (tlc_folder / PARQUET_PATH[1:]).read_bytes()
    data_dir, home = tmp_path / "data", tmp_path / "dagster_home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("TAXI_SOURCE", "TAXI_SOURCE_URL")}
    command = [str(Path(sys.executable).parent / "dagster"), "asset", "materialize", "-m", "taxi_assets"]
    command += ["--select", "yellow/raw_trips", "--partition", MONTH]
    # 500 bytes a second: the download would take minutes (the default watchdog allows 64 KiB a minute).
    with fault_server({PARQUET_PATH: body}, trickle=(100, 0.2)) as server:
        env.update(
            TAXI_TARGET="local",
            TAXI_DATA_DIR=str(data_dir),
            TAXI_TLC_URL=server.url,
            TAXI_POSTGRES_URL=postgres_db_url,
            DAGSTER_HOME=str(home),
        )
        run = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            server.wait_for_get(PARQUET_PATH, 120)
            staging = data_dir / "lake" / "raw" / "yellow"
            deadline = time.monotonic() + 30
            while not list(staging.glob(".*.partial")) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert list(staging.glob(".*.partial")), "the download never started writing"
            stopped = time.monotonic()
            run.send_signal(signal.SIGTERM)
            output, _ = run.communicate(timeout=20)
            seconds = time.monotonic() - stopped
        finally:
            if run.poll() is None:
                os.killpg(run.pid, signal.SIGKILL)
                run.wait()
        time.sleep(1)  # a retry would ask again at once (backoff 1 s)
        assert server.gets[PARQUET_PATH] == 1
    assert run.returncode != 0 and seconds < 20, output.decode()[-3000:]
    assert [p for p in (data_dir / "lake").rglob("*") if p.is_file()] == []  # no staging file, no raw file
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        (record,) = instance.get_runs()  # one run: not retried as a new run
        events = [e.dagster_event.event_type for e in instance.all_logs(record.run_id) if e.dagster_event]
    finally:
        instance.dispose()
    assert record.status in (dg.DagsterRunStatus.CANCELED, dg.DagsterRunStatus.FAILURE)
    assert dg.DagsterEventType.STEP_UP_FOR_RETRY not in events and dg.DagsterEventType.STEP_SUCCESS not in events
