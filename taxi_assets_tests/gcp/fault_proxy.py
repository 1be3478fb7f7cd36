"""A fault-injecting HTTP proxy in front of an emulator: what real GCP does and the emulators cannot show.

Every request is forwarded to the emulator unchanged (the Host header too, so the URLs the emulator hands out,
such as a resumable upload's session URL, point back at the proxy) and recorded. A test installs a ``fault``: a
function that sees each request and either returns ``None`` (forward it), a changed body (forward that), or a
``Reply`` (answer with it instead of the emulator). The clients under test are the real ones; only the wire
between them and the emulator is tampered with, the way a real server or network would behave.
"""

from __future__ import annotations

import http.client
import http.server
import json
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from taxi_assets_tests.conftest import serve

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection", "upgrade"}


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # without the query string
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body or b"{}")

    def header(self, name: str, default: str = "") -> str:
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), default)


@dataclass(frozen=True)
class Reply:
    status: int
    body: dict | bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


Fault = Callable[[Request], "Reply | bytes | None"]


class Proxy:
    """The proxy's state: the recorded requests and the fault in force (``None``: forward everything)."""

    def __init__(self, upstream: str):
        self.upstream = urllib.parse.urlsplit(upstream)
        self.fault: Fault | None = None
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self.url = ""

    def handler(self):
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args):
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path, _, query = self.path.partition("?")
                request = Request(self.command, path, urllib.parse.parse_qs(query), dict(self.headers), body)
                with proxy.lock:
                    proxy.requests.append(request)
                    fault = proxy.fault
                outcome = fault(request) if fault else None
                if isinstance(outcome, Reply):
                    payload = outcome.body if isinstance(outcome.body, bytes) else json.dumps(outcome.body).encode()
                    headers = {"Content-Type": "application/json", **outcome.headers}
                    return self._send(outcome.status, headers, payload)
                if isinstance(outcome, bytes):
                    body = outcome
                status, headers, payload = proxy.forward(self.command, self.path, dict(self.headers), body)
                self._send(status, headers, payload)

            def _send(self, status: int, headers: dict[str, str], payload: bytes):
                self.send_response(status)
                for name, value in headers.items():
                    if name.lower() not in _HOP_BY_HOP:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        return Handler

    def forward(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict, bytes]:
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=120)
        try:
            sent = {k: v for k, v in headers.items() if k.lower() not in _HOP_BY_HOP}
            conn.request(method, path, body=body if body or method in ("POST", "PUT", "PATCH") else None, headers=sent)
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def matching(self, method: str, path_part: str) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.method == method and path_part in r.path]


@contextmanager
def fault_proxy(upstream: str) -> Iterator[Proxy]:
    """A proxy to ``upstream`` (an emulator's base URL) on a free loopback port; ``proxy.url`` is its base URL."""
    proxy = Proxy(upstream)
    with serve(proxy.handler()) as url:
        proxy.url = url
        yield proxy
