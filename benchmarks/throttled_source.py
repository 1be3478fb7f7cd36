"""A local file server that sends each connection at a fixed rate, like the TLC's and the mirror's servers.

``python -m benchmarks.throttled_source FOLDER --rate-mb 10`` serves ``FOLDER`` on a free loopback port and prints
its URL. Each response body is paced to ``rate`` bytes per second per connection (connections do not share a
budget, as on a CDN); HEAD, Content-Length and Last-Modified are the standard library's.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path

PACE_CHUNK = 64 * 1024


class ThrottledHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder; every body goes out at ``rate`` bytes per second, in ``PACE_CHUNK`` pieces."""

    rate: float = 10e6

    def copyfile(self, source, outputfile) -> None:
        started, sent = time.monotonic(), 0
        while chunk := source.read(PACE_CHUNK):
            outputfile.write(chunk)
            sent += len(chunk)
            ahead = sent / self.rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)

    def log_message(self, format, *args) -> None:  # a benchmark's output is its report
        pass


@contextlib.contextmanager
def throttled_source(folder: Path, rate_bytes_per_second: float) -> Iterator[str]:
    """Serve ``folder`` on a free loopback port, each connection paced to the rate; yields the base URL."""
    handler = type("Handler", (ThrottledHandler,), {"rate": rate_bytes_per_second})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(folder)))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--rate-mb", type=float, default=10.0, help="megabytes per second per connection")
    args = parser.parse_args()
    with throttled_source(args.folder, args.rate_mb * 1e6) as url:
        print(url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
