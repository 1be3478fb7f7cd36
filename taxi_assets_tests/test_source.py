"""The source client against a real local HTTP server that misbehaves on purpose."""

import gzip
import http.server
import threading
from pathlib import Path

import pytest

from taxi_assets.source import NotPublishedError, SourceError, TaxiSource

GOOD = gzip.compress(b"a,b\n1,2\n" * 1000)


class FlakyServer:
    """Serves fixed answers per path; ``fail_first`` answers 500 that many times before the real answer."""

    def __init__(self):
        self.routes: dict[str, tuple[int, str, bytes]] = {}
        self.fail_first: dict[str, int] = {}
        self.hits: dict[str, int] = {}
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self, with_body: bool):
                owner.hits[self.path] = owner.hits.get(self.path, 0) + 1
                if owner.fail_first.get(self.path, 0) >= owner.hits[self.path]:
                    status, ctype, body = 500, "text/plain", b"oops"
                else:
                    status, ctype, body = owner.routes.get(self.path, (404, "text/html", b"<html>Not Found</html>"))
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if with_body:
                    self.wfile.write(body)

            def do_GET(self):
                self._answer(True)

            def do_HEAD(self):
                self._answer(False)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def server():
    s = FlakyServer()
    yield s
    s.close()


def source(url: str) -> TaxiSource:
    return TaxiSource(base_url=url, max_retries=2, backoff_seconds=0.01, timeout_seconds=5)


def test_download_streams_a_verified_gzip_to_disk(server, tmp_path):
    server.routes["/yellow/f.csv.gz"] = (200, "application/gzip", GOOD)
    download = source(server.url).download("yellow/f.csv.gz", tmp_path / "f.csv.gz")
    assert (tmp_path / "f.csv.gz").read_bytes() == GOOD
    assert download.bytes == len(GOOD) and download.url == f"{server.url}/yellow/f.csv.gz"


def test_404_is_not_published_and_names_the_url(server, tmp_path):
    with pytest.raises(NotPublishedError, match=rf"{server.url}/yellow/missing.csv.gz: HTTP 404"):
        source(server.url).download("yellow/missing.csv.gz", tmp_path / "x")
    assert server.hits["/yellow/missing.csv.gz"] == 1  # a 404 is final: never retried


def test_html_page_instead_of_gzip_is_an_error_naming_the_url(server, tmp_path):
    server.routes["/yellow/f.csv.gz"] = (200, "text/html; charset=utf-8", b"\n\n<!DOCTYPE html><html></html>")
    with pytest.raises(SourceError, match=rf"{server.url}/yellow/f.csv.gz: the server sent an HTML page"):
        source(server.url).download("yellow/f.csv.gz", tmp_path / "x")


def test_html_body_with_a_binary_content_type_is_caught_too(server, tmp_path):
    server.routes["/yellow/f.csv.gz"] = (200, "application/octet-stream", b"<html>moved</html>")
    with pytest.raises(SourceError, match="HTML page"):
        source(server.url).download("yellow/f.csv.gz", tmp_path / "x")


def test_non_gzip_bytes_are_an_error(server, tmp_path):
    server.routes["/yellow/f.csv.gz"] = (200, "application/gzip", b"VendorID,tpep_pickup_datetime\n")
    with pytest.raises(SourceError, match=r"f\.csv\.gz: not a gzip file"):
        source(server.url).download("yellow/f.csv.gz", tmp_path / "x")


def test_truncated_gzip_is_an_error_naming_the_url(server, tmp_path):
    server.routes["/yellow/f.csv.gz"] = (200, "application/gzip", GOOD[: len(GOOD) // 2])
    with pytest.raises(SourceError, match=rf"{server.url}/yellow/f.csv.gz: the gzip stream is truncated"):
        source(server.url).download("yellow/f.csv.gz", tmp_path / "x")


def test_transient_500_is_retried_then_succeeds(server, tmp_path):
    server.routes["/yellow/f.csv.gz"] = (200, "application/gzip", GOOD)
    server.fail_first["/yellow/f.csv.gz"] = 2
    source(server.url).download("yellow/f.csv.gz", tmp_path / "f")
    assert server.hits["/yellow/f.csv.gz"] == 3
    assert (tmp_path / "f").read_bytes() == GOOD


def test_persistent_500_fails_after_the_retries_with_the_url(server, tmp_path):
    server.routes["/yellow/f.csv.gz"] = (200, "application/gzip", GOOD)
    server.fail_first["/yellow/f.csv.gz"] = 99
    with pytest.raises(SourceError, match=rf"{server.url}/yellow/f.csv.gz: HTTP 500"):
        source(server.url).download("yellow/f.csv.gz", tmp_path / "x")
    assert server.hits["/yellow/f.csv.gz"] == 3  # the first try and two retries


def test_retries_stop_at_the_time_budget(server, tmp_path):
    server.routes["/yellow/f.csv.gz"] = (200, "application/gzip", GOOD)
    server.fail_first["/yellow/f.csv.gz"] = 99
    # Delays 0.2 s, then 0.4 s: the second would end past the 0.5 s budget, so two attempts in all.
    budgeted = TaxiSource(base_url=server.url, max_retries=10, backoff_seconds=0.2, retry_seconds=0.5)
    with pytest.raises(SourceError, match=r"HTTP 500 .*\(gave up after 2 attempts\)"):
        budgeted.download("yellow/f.csv.gz", tmp_path / "x")
    assert server.hits["/yellow/f.csv.gz"] == 2


def test_a_failing_source_is_asked_once_per_attempt_and_the_step_does_not_retry(server, tmp_path):
    """One retry layer: the client's attempts, and no step retry on top (measured before: 3 x 25 connections)."""
    import dagster as dg

    from taxi_assets.assets.trips import build_trip_assets
    from taxi_assets.services import SERVICES
    from taxi_assets.targets import load_target

    path = "/trip-data/green_tripdata_2021-01.parquet"
    server.fail_first[path] = 99
    with pytest.MonkeyPatch.context() as env:
        env.setenv("TAXI_DATA_DIR", str(tmp_path / "data"))
        env.setenv("TAXI_TLC_URL", server.url)
        env.delenv("TAXI_SOURCE", raising=False)
        env.delenv("TAXI_SOURCE_URL", raising=False)
        target = load_target("local")
    raw, *_ = build_trip_assets(SERVICES["green"], target.kinds, target.backfill_policy, target.calendar)
    result = dg.materialize(
        [raw],
        partition_key="2021-01",
        resources={**target.resources, "source": source(server.url)},
        raise_on_error=False,
    )
    assert not result.success and server.hits[path] == 3  # the first try and the client's two retries
    events = {e.event_type for e in result.all_events}
    assert dg.DagsterEventType.STEP_UP_FOR_RETRY not in events and dg.DagsterEventType.STEP_FAILURE in events


def test_is_published_uses_head(server):
    server.routes["/yellow/f.csv.gz"] = (200, "application/gzip", GOOD)
    assert source(server.url).is_published("yellow/f.csv.gz") is True
    assert source(server.url).is_published("yellow/none.csv.gz") is False
    server.fail_first["/yellow/bad.csv.gz"] = 99
    with pytest.raises(SourceError, match="bad.csv.gz: HTTP 500"):
        source(server.url).is_published("yellow/bad.csv.gz")


@pytest.mark.parametrize("as_url", [True, False], ids=["file-url", "plain-folder"])
def test_local_folder_sources(tmp_path, as_url):
    folder = tmp_path / "mirror"
    (folder / "yellow").mkdir(parents=True)
    (folder / "yellow" / "f.csv.gz").write_bytes(GOOD)
    (folder / "yellow" / "cut.csv.gz").write_bytes(GOOD[:40])
    base = folder.as_uri() if as_url else str(folder)
    src = source(base)
    src.download("yellow/f.csv.gz", tmp_path / "f")
    assert (tmp_path / "f").read_bytes() == GOOD
    assert src.is_published("yellow/f.csv.gz") and not src.is_published("yellow/none.csv.gz")
    with pytest.raises(NotPublishedError, match=r"mirror/yellow/none\.csv\.gz: no such file"):
        src.download("yellow/none.csv.gz", tmp_path / "x")
    with pytest.raises(SourceError, match=r"mirror/yellow/cut\.csv\.gz: the gzip stream is truncated"):
        src.download("yellow/cut.csv.gz", tmp_path / "x")


def test_plain_csv_is_not_checked_for_gzip(server, tmp_path):
    server.routes["/misc/zones.csv"] = (200, "text/csv", b'"LocationID","Borough"\n1,"EWR"\n')
    source(server.url).download("misc/zones.csv", tmp_path / "z.csv")
    assert Path(tmp_path / "z.csv").read_bytes().startswith(b'"LocationID"')


PARQUET = b"PAR1" + b"\0" * 2000 + b"PAR1"  # the download checks the magic; cleaning checks the footer


def test_a_parquet_file_is_checked_for_its_magic_bytes(server, tmp_path):
    server.routes["/trip-data/y.parquet"] = (200, "binary/octet-stream", PARQUET)
    download = source(server.url).download("trip-data/y.parquet", tmp_path / "y.parquet")
    assert (tmp_path / "y.parquet").read_bytes() == PARQUET and download.bytes == len(PARQUET)
    server.routes["/trip-data/csv.parquet"] = (200, "binary/octet-stream", b"VendorID,tpep_pickup_datetime\n")
    with pytest.raises(SourceError, match=rf"{server.url}/trip-data/csv\.parquet: not a parquet file"):
        source(server.url).download("trip-data/csv.parquet", tmp_path / "x")


def test_a_body_shorter_than_announced_is_an_incomplete_download_naming_the_url(tmp_path):
    class ShortBody(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(PARQUET) + 5000))
            self.end_headers()
            self.wfile.write(PARQUET)  # then the connection closes, 5000 bytes short

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ShortBody)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with pytest.raises(SourceError, match=rf"{url}/trip-data/y\.parquet: ") as raised:
            source(url).download("trip-data/y.parquet", tmp_path / "y")
    finally:
        server.shutdown()
        server.server_close()
    # A cut connection may work next time: the client tried again (the one retry layer), then gave up for good.
    assert "IncompleteRead" in str(raised.value) and "(gave up after 3 attempts)" in str(raised.value)
    assert not raised.value.transient  # final: the asset does not retry it again
