"""A misbehaving HTTP source for the fault tests: serves given files, but can trickle their bytes, stall or reset
the connection mid-body, send fewer bytes than its Content-Length, or answer 500 a number of times first."""

from __future__ import annotations

import contextlib
import http.server
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from taxi_assets_tests.conftest import serve


@dataclass
class FaultServer:
    """What to serve and how to misbehave; ``gets`` counts the GET requests per path (HEADs are not counted).

    ``trickle=(n, seconds)`` sends ``n`` bytes every ``seconds``; ``stall_after`` sends that many bytes, then
    nothing until the server stops; ``reset_after`` sends that many bytes, then resets the connection (TCP RST);
    ``short_by`` announces that many bytes more than it sends; ``fail_first`` answers 500 to that many GETs of a
    path before misbehaving as told (or serving it right); ``faulty_gets`` misbehaves on that many GETs only, then
    serves the file right (``None``: on every GET).
    """

    files: dict[str, bytes]
    trickle: tuple[int, float] | None = None
    stall_after: int | None = None
    reset_after: int | None = None
    short_by: int = 0
    fail_first: int = 0
    faulty_gets: int | None = None
    url: str = ""
    gets: dict[str, int] = field(default_factory=dict)
    stopped: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, path: str) -> int:
        with self._lock:
            self.gets[path] = self.gets.get(path, 0) + 1
            return self.gets[path]

    def handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_HEAD(self):
                body = server.files.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()

            def do_GET(self):
                body = server.files.get(self.path)
                if body is None:
                    return self._plain(404, b"not found")
                attempt = server.count(self.path) - server.fail_first
                if attempt <= 0:
                    return self._plain(500, b"oops")
                faulty = server.faulty_gets is None or attempt <= server.faulty_gets
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body) + (server.short_by if faulty else 0)))
                self.end_headers()
                self.close_connection = True
                try:
                    self._send(body) if faulty else self.wfile.write(body)
                except OSError:  # the client gave up (its watchdog, or it was stopped)
                    pass

            def _plain(self, status: int, text: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

            def _send(self, body: bytes) -> None:
                cut = min(n for n in (server.stall_after, server.reset_after, len(body)) if n is not None)
                step, pause = server.trickle or (len(body), 0.0)
                for start in range(0, cut, step):
                    self.wfile.write(body[start : min(start + step, cut)])
                    self.wfile.flush()
                    if pause and server.stopped.wait(pause):
                        return
                if cut == server.stall_after:
                    server.stopped.wait()
                elif cut == server.reset_after:
                    # Linger 0: closing sends a TCP RST, as a crashed proxy or a dropped route does.
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    os.close(self.connection.detach())

            def handle(self):
                with contextlib.suppress(OSError):  # after a reset the socket is gone: nothing to report
                    super().handle()

            def finish(self):
                with contextlib.suppress(OSError):
                    super().finish()

            def log_message(self, *args):
                pass

        return Handler

    def wait_for_get(self, path: str, seconds: float) -> None:
        """Block until ``path`` was asked for (raise when it was not within ``seconds``)."""
        deadline = time.monotonic() + seconds
        while not self.gets.get(path):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no GET {path} within {seconds}s")
            time.sleep(0.05)


@contextlib.contextmanager
def fault_server(files: dict[str, bytes], **faults) -> Iterator[FaultServer]:
    """A running ``FaultServer`` for ``files`` (path -> bytes) and ``faults`` (see ``FaultServer``)."""
    server = FaultServer(files, **faults)
    with serve(server.handler()) as url:
        server.url = url
        try:
            yield server
        finally:
            server.stopped.set()  # release the stalled and trickling answers
