"""Local stand-ins for the outside world of the automation tests: a source that answers what a test tells it to
(files, 404, 500, slowly), a webhook receiver and a small SMTP server; plus helpers that put facts into a
Dagster instance (materialized months, runs in flight)."""

import base64
import contextlib
import http.server
import json
import queue
import socketserver
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

import dagster as dg
import pytest

from taxi_assets import partitions
from taxi_assets.assets.trips import TRIP_ASSETS
from taxi_assets_tests.conftest import serve

# The source settings targets.py reads: a developer's shell must not choose the layout of a test.
SOURCE_SETTINGS = ("TAXI_SOURCE", "TAXI_SOURCE_URL", "TAXI_TLC_URL", "TAXI_FIRST_MONTH")


@pytest.fixture(autouse=True)
def no_source_settings(monkeypatch) -> None:
    """Every automation test starts without source settings; a test that wants one sets it (``TAXI_SOURCE``
    unset means the TLC layout, and ``TAXI_SOURCE_URL`` without it is a ConfigurationError)."""
    for name in SOURCE_SETTINGS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def clock(monkeypatch):
    """``clock(when)`` makes ``when`` (aware) the current time of the calendar (``Calendar`` methods called without
    ``now``, as the source and lake sensors call them); nothing else of the process is touched."""
    utc = partitions._utc

    def set_now(when: datetime) -> None:
        monkeypatch.setattr(partitions, "_utc", lambda now: utc(when if now is None else now))

    return set_now


# --------------------------------------------------------------------------------------------------------------
# A scripted HTTP source


@dataclass
class ScriptedSource:
    """What the fake source answers, by path: bytes (200), an int status, or ("slow", seconds). Default 404."""

    routes: dict = field(default_factory=dict)
    requests: list = field(default_factory=list)  # (method, path) in arrival order
    url: str = ""

    def heads(self, path: str) -> int:
        return sum(1 for method, p in self.requests if method == "HEAD" and p == path)


def _source_handler(state: ScriptedSource):
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format, *args):
            pass

        def _answer(self, with_body: bool) -> None:
            path = self.path.lstrip("/")
            state.requests.append((self.command, path))
            route = state.routes.get(path, 404)
            if isinstance(route, tuple) and route[0] == "slow":
                time.sleep(route[1])
                route = route[2] if len(route) > 2 else b"\x1f\x8b"
            if isinstance(route, int):
                self.send_response(route)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/gzip")
            self.send_header("Content-Length", str(len(route)))
            self.end_headers()
            if with_body:
                self.wfile.write(route)

        def do_HEAD(self):
            self._answer(with_body=False)

        def do_GET(self):
            self._answer(with_body=True)

    return Handler


@pytest.fixture
def scripted_source() -> Iterator[ScriptedSource]:
    state = ScriptedSource()
    with serve(_source_handler(state)) as url:
        state.url = url
        yield state


# --------------------------------------------------------------------------------------------------------------
# A webhook receiver


@dataclass
class WebhookReceiver:
    """Records every POST (path, parsed JSON); answers with ``statuses`` in turn, then 200."""

    url: str = ""
    posts: "queue.Queue[tuple[str, dict]]" = field(default_factory=queue.Queue)
    statuses: list = field(default_factory=list)

    def wait_for_post(self, timeout: float) -> tuple[str, dict]:
        return self.posts.get(timeout=timeout)


@contextlib.contextmanager
def webhook_receiver() -> Iterator[WebhookReceiver]:
    state = WebhookReceiver()
    attempts: list = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format, *args):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            attempts.append(self.path)
            status = state.statuses.pop(0) if state.statuses else 200
            if status == 200:
                state.posts.put((self.path, json.loads(body)))
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

    with serve(Handler) as url:
        state.url = f"{url}/hooks/T000/B000/secret-token"
        state.attempts = attempts
        yield state


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as receiver:
        yield receiver


# --------------------------------------------------------------------------------------------------------------
# A small SMTP server (enough of RFC 5321 for smtplib: EHLO, AUTH PLAIN, MAIL, RCPT, DATA, QUIT)


@dataclass
class SmtpServer:
    host: str = "127.0.0.1"
    port: int = 0
    messages: list = field(default_factory=list)  # dicts: mail_from, rcpt_to, data (str), auth (user or None)
    busy: int = 0  # connections still to turn away with "421" (a server that is down for a while)


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    state = SmtpServer()

    class Handler(socketserver.StreamRequestHandler):
        def reply(self, line: str) -> None:
            self.wfile.write((line + "\r\n").encode())

        def handle(self):
            message = {"mail_from": None, "rcpt_to": [], "data": "", "auth": None}
            if state.busy:
                state.busy -= 1
                self.reply("421 test busy, try again later")
                return
            self.reply("220 test ESMTP")
            while True:
                raw = self.rfile.readline()
                if not raw:
                    return
                line = raw.decode().rstrip("\r\n")
                verb = line.split(" ", 1)[0].upper()
                if verb in ("EHLO", "HELO"):
                    self.reply("250-test")
                    self.reply("250 AUTH PLAIN")
                elif verb == "AUTH":
                    parts = line.split()
                    decoded = base64.b64decode(parts[2]).split(b"\0") if len(parts) > 2 else []
                    message["auth"] = decoded[1].decode() if len(decoded) > 1 else None
                    self.reply("235 ok" if len(decoded) > 2 and decoded[2] == b"right" else "535 no")
                elif verb == "MAIL":
                    message["mail_from"] = line.split(":", 1)[1].strip()
                    self.reply("250 ok")
                elif verb == "RCPT":
                    message["rcpt_to"].append(line.split(":", 1)[1].strip())
                    self.reply("250 ok")
                elif verb == "DATA":
                    self.reply("354 go on")
                    lines = []
                    while (data := self.rfile.readline().decode()) not in (".\r\n", ""):
                        lines.append(data)
                    message["data"] = "".join(lines)
                    state.messages.append(dict(message))
                    self.reply("250 queued")
                elif verb == "QUIT":
                    self.reply("221 bye")
                    return
                else:
                    self.reply("250 ok")

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


# --------------------------------------------------------------------------------------------------------------
# Facts in an instance


@pytest.fixture
def instance() -> dg.DagsterInstance:
    """An in-memory instance: runs, events and asset status without a file (fast)."""
    return dg.DagsterInstance.ephemeral()


@pytest.fixture
def stored_instance() -> Iterator[dg.DagsterInstance]:
    """An instance in a temporary folder: schedule contexts open the instance from its reference."""
    with dg.instance_for_test() as test_instance:
        yield test_instance


def mark_loaded(instance: dg.DagsterInstance, service: str, month: str, assets=TRIP_ASSETS, **metadata) -> None:
    """Record ``month`` as materialized for ``assets`` of ``service`` (as a run would)."""
    for name in assets:
        instance.report_runless_asset_event(
            dg.AssetMaterialization(asset_key=dg.AssetKey([service, name]), partition=month, metadata=metadata)
        )


def add_run(
    instance: dg.DagsterInstance, job_name: str, status: dg.DagsterRunStatus, tags: dict, asset_selection=None
) -> dg.DagsterRun:
    """A run record in ``status`` (queued, started, ...), as the run coordinator would have stored it."""
    from dagster._core.test_utils import create_run_for_test

    return create_run_for_test(
        instance,
        job_name=job_name,
        status=status,
        tags=tags,
        asset_selection=frozenset(asset_selection) if asset_selection else None,
    )
