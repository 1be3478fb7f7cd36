"""The source client: the TLC's file server or the course mirror (or any folder laid out like one), downloaded
with verification.

The root (``TAXI_TLC_URL`` or ``TAXI_SOURCE_URL``, chosen by ``TAXI_SOURCE``, see settings.py) may be an
``http(s)://`` URL, a ``file://`` URL or a plain local folder. A download streams to disk in chunks. A CSV.gz goes
through a gzip decoder that checks every byte; a parquet file must start with its magic bytes and arrive at its
announced length (its footer and columns are checked by ``cleaning.check_source_file``). A caller that reads the
CSV.gz whole anyway (``raw_trips``, through ``check_source_file``, whose gzip decoder fails on a cut stream too)
asks for no decoder here (``verify_gzip=False``): the file is decompressed once, not twice. So a 404, an HTML page
served instead of the file, or a truncated file is an error that names the URL. Any other scheme (``ftp://``) is an
error naming ``base_url``, never taken for a folder. Transient failures (connection errors and timeouts, a body cut
off, a stalled or trickling body, 429 and 5xx answers) are retried with exponential backoff within a time budget,
here and nowhere else (the assets do not retry a source error again); nothing else is retried.

A download cannot hang. requests' read timeout applies to each socket read, which a trickle of a few bytes a second
never trips, so a watchdog also fails an attempt (a "read timeout", transient) that receives less than
``min_progress_bytes`` in any ``timeout_seconds``, or that lasts longer than ``attempt_seconds``; it notices within
one more ``timeout_seconds``. No retry starts past ``retry_seconds`` after the first attempt began, so one download
takes at most about ``retry_seconds + attempt_seconds + timeout_seconds`` (defaults: 120 + 3600 + 60 s),
and never more than ``(max_retries + 1) x (attempt_seconds + timeout_seconds)`` plus the backoff delays. A signal
(Ctrl-C, SIGTERM) is never retried: it ends the download at once.
"""

from __future__ import annotations

import hashlib
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote, urlparse

import dagster as dg
import requests
import urllib3.exceptions
from pydantic import Field

from taxi_assets.secrets import redact
from taxi_assets.settings import DEFAULT_DOWNLOAD_CONCURRENCY, DEFAULT_TLC_URL, SOURCE_SCHEMES

CHUNK_BYTES = 1 << 20
TRANSIENT_STATUSES = (429, 500, 502, 503, 504)
T = TypeVar("T")
GZIP_MAGIC = b"\x1f\x8b"
PARQUET_MAGIC = b"PAR1"


class SourceError(RuntimeError):
    """The source answered with something other than the file asked for.

    ``transient`` says whether trying again later may help (server errors, broken connections); a 404, an HTML
    page or a corrupt file will not change by retrying.
    """

    def __init__(self, message: str, transient: bool = False):
        super().__init__(redact(message))  # the URL may carry a login: never in a message, log or alert
        self.transient = transient


class NotPublishedError(SourceError):
    """The file does not exist at the source (HTTP 404 or a missing local file): not published yet."""


@dataclass(frozen=True)
class SourceIdentity:
    """What identifies one version of a file at the source: the server's ETag and Last-Modified and the size
    (over HTTP), or the size and modification time (a local file). A re-issued file changes at least one."""

    size: int | None
    etag: str | None = None
    last_modified: str | None = None
    sha256: str | None = None  # of the content, when the server gives neither ETag nor Last-Modified

    @property
    def known(self) -> bool:
        """Whether the source names the version without the content (a size alone does not tell files apart)."""
        return bool(self.etag or self.last_modified)

    @property
    def version(self) -> str:
        """A short, stable fingerprint of the identity: the raw asset's data version."""
        text = f"etag={self.etag or ''};last-modified={self.last_modified or ''};size={self.size}"
        if not self.known:
            text += f";sha256={self.sha256}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @classmethod
    def from_headers(cls, headers) -> SourceIdentity:
        size = None if headers.get("Content-Encoding", "identity") != "identity" else headers.get("Content-Length")
        return cls(
            size=int(size) if size else None, etag=headers.get("ETag"), last_modified=headers.get("Last-Modified")
        )

    @classmethod
    def of_file(cls, path: Path) -> SourceIdentity:
        stat = path.stat()
        return cls(size=stat.st_size, last_modified=str(stat.st_mtime_ns))


@dataclass(frozen=True)
class Download:
    url: str
    bytes: int
    seconds: float
    identity: SourceIdentity


class _GzipVerifier:
    """Feeds downloaded bytes through a gzip decoder: proves the file is gzip and arrived whole."""

    def __init__(self, url: str):
        self.url = url
        self._decoder = zlib.decompressobj(wbits=31)

    def feed(self, chunk: bytes) -> None:
        # Small slices of input: the decoder copies its unconsumed input on every call, so 1 MiB chunks fed whole
        # spent much of the time copying (measured on a 48 MB yellow month: 0.62-1.4 s, sliced 0.48 s).
        view = memoryview(chunk)
        for start in range(0, len(view), 1 << 16):
            self._feed(view[start : start + (1 << 16)])

    def _feed(self, data) -> None:
        while data:
            try:
                self._decoder.decompress(data, 1 << 20)  # output bounded: a gzip bomb cannot fill the memory
            except zlib.error as error:
                raise SourceError(f"{self.url}: not a valid gzip file ({error})") from error
            if not self._decoder.eof:
                data = self._decoder.unconsumed_tail
            elif data := self._decoder.unused_data:  # a concatenated gzip member follows
                self._decoder = zlib.decompressobj(wbits=31)

    def finish(self) -> None:
        if not self._decoder.eof:
            raise SourceError(f"{self.url}: the gzip stream is truncated (download incomplete)")


def _magic(path: str) -> tuple[bytes, str] | None:
    """The first bytes a file named ``path`` must start with, and what that format is called."""
    if path.endswith(".gz"):
        return GZIP_MAGIC, "gzip"
    if path.endswith(".parquet"):
        return PARQUET_MAGIC, "parquet"
    return None


def _check_start(url: str, first_chunk: bytes, content_type: str, path: str) -> None:
    if "text/html" in content_type or first_chunk.lstrip()[:1] == b"<":
        raise SourceError(f"{url}: the server sent an HTML page, not the data file (wrong URL?)")
    expected = _magic(path)
    if first_chunk and expected and not first_chunk.startswith(expected[0]):
        raise SourceError(f"{url}: not a {expected[1]} file (starts with {first_chunk[:8]!r})")
    if not first_chunk:
        raise SourceError(f"{url}: the file is empty")


def _raise_for_status(url: str, response: requests.Response) -> None:
    if response.status_code >= 400:
        transient = response.status_code in TRANSIENT_STATUSES  # worth another attempt
        raise SourceError(f"{url}: HTTP {response.status_code} {response.reason}", transient=transient)


class TaxiSource(dg.ConfigurableResource):
    """Where the TLC files come from: the TLC's server, the DataTalksClub mirror, or a folder laid out like one.

    Paths are relative to ``base_url``; the layout (``services.TLC`` or ``services.MIRROR``) names them.

    Example:
        .. code-block:: python

            source = TaxiSource(base_url="file:///data/tlc")
            source.download("trip-data/yellow_tripdata_2021-01.parquet", Path("/tmp/yellow.parquet"))
    """

    base_url: str = Field(
        default=DEFAULT_TLC_URL,
        description="Download root: an http(s) URL, a file:// URL or a local folder in the source's layout.",
    )
    timeout_seconds: float = Field(default=60.0, description="Connect and read timeout of each HTTP request.")
    max_retries: int = Field(default=4, description="Retries of a transient failure (connection, 429, 5xx, cut body).")
    backoff_seconds: float = Field(default=1.0, description="First retry delay; doubles on each retry.")
    retry_seconds: float = Field(
        default=120.0,
        description="Time budget of the retries of one request: no retry starts whose delay would pass it.",
    )
    min_progress_bytes: int = Field(
        default=64 * 1024,
        description="Least bytes a download must receive in every `timeout_seconds`, else the attempt fails with a "
        "read timeout (a stalled or trickling source).",
    )
    attempt_seconds: float = Field(
        default=3600.0, description="Longest time one download attempt may take, whatever its rate."
    )
    download_concurrency: int = Field(
        default=DEFAULT_DOWNLOAD_CONCURRENCY,
        ge=1,
        description="Months a range run downloads at the same time (1: one after another).",
    )

    def url(self, path: str) -> str:
        return f"{self.base_url.rstrip('/')}/{path}"

    def _local_root(self) -> Path | None:
        """The local folder of a ``file://`` URL or a plain path; ``None`` for http(s); any other scheme is an error
        (``ftp://host/tlc`` is no folder named ``ftp:``)."""
        parsed = urlparse(self.base_url)
        if parsed.scheme == "file":
            return Path(unquote(parsed.path))
        if parsed.scheme in ("http", "https"):
            return None
        if "://" in self.base_url:
            # Named without a login or query, which may hold secrets.
            shown = parsed._replace(netloc=parsed.hostname or "", query="", fragment="").geturl()
            raise SourceError(
                f"TaxiSource.base_url {shown!r}: {parsed.scheme}:// is not supported "
                f"({', '.join(SOURCE_SCHEMES)}, or a local folder)"
            )
        return Path(self.base_url)

    def _retrying(self, url: str, request: Callable[[], T]) -> T:
        """``request()``, retried on a transient failure with exponential backoff, within ``max_retries`` and
        ``retry_seconds``. The one retry layer of a source request: requests' own retries are off, and the assets
        do not retry a ``SourceError`` again (the error says how many attempts were made)."""
        deadline, log = time.monotonic() + self.retry_seconds, dg.get_dagster_logger()
        for attempt in range(1, self.max_retries + 2):
            try:
                return request()
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as error:
                failure = SourceError(f"{url}: {type(error).__name__}: {error}", transient=True)
            except SourceError as error:
                if not error.transient:
                    raise
                failure = error
            delay = self.backoff_seconds * 2 ** (attempt - 1)
            if attempt > self.max_retries or time.monotonic() + delay > deadline:
                raise SourceError(f"{failure} (gave up after {attempt} attempt{'s' * (attempt > 1)})") from failure
            log.warning(f"{failure}; retrying in {delay:g}s")
            time.sleep(delay)
        raise AssertionError("unreachable")

    def is_published(self, path: str) -> bool:
        """Whether ``path`` exists at the source, asked cheaply (HTTP HEAD, or a file check)."""
        return self.identity(path) is not None

    def identity(self, path: str) -> SourceIdentity | None:
        """The identity of the file the source serves at ``path`` now (HTTP HEAD, or a file's stat), without
        downloading it; ``None`` when it is not published."""
        root = self._local_root()
        if root is not None:
            return SourceIdentity.of_file(root / path) if (root / path).is_file() else None
        url = self.url(path)
        return self._retrying(url, lambda: self._head_once(url))

    def _head_once(self, url: str) -> SourceIdentity | None:
        with requests.Session() as session:
            response = session.head(url, allow_redirects=True, timeout=self.timeout_seconds)
        if response.status_code == 404:
            return None
        _raise_for_status(url, response)
        return SourceIdentity.from_headers(response.headers)

    def download(self, path: str, dest: Path, verify_gzip: bool = True) -> Download:
        """Download ``path`` to the local file ``dest``, verified; raise ``SourceError`` naming the URL.

        ``verify_gzip=False`` skips the gzip decoder of a CSV.gz, for a caller that decompresses the whole file
        next and fails on a corrupt or cut stream itself (``cleaning.check_source_file``)."""
        root = self._local_root()
        started = time.monotonic()
        if root is not None:
            url = str(root / path)
            identity = self._copy_local(root / path, dest, path, verify_gzip)
        else:
            url = self.url(path)
            identity = self._download_http(url, dest, path, verify_gzip)
        size = dest.stat().st_size
        return Download(url=url, bytes=size, seconds=time.monotonic() - started, identity=identity)

    def _copy_local(self, source: Path, dest: Path, path: str, verify_gzip: bool) -> SourceIdentity:
        if not source.is_file():
            raise NotPublishedError(f"{source}: no such file at the source")
        identity = SourceIdentity.of_file(source)  # before reading: a file replaced meanwhile is taken as new
        verifier = _GzipVerifier(str(source)) if verify_gzip and path.endswith(".gz") else None
        with source.open("rb") as reader, dest.open("wb") as writer:
            first = reader.read(CHUNK_BYTES)
            _check_start(str(source), first, "", path)
            chunk = first
            while chunk:
                if verifier:
                    verifier.feed(chunk)
                writer.write(chunk)
                chunk = reader.read(CHUNK_BYTES)
        if verifier:
            verifier.finish()
        return identity

    def _download_http(self, url: str, dest: Path, path: str, verify_gzip: bool) -> SourceIdentity:
        return self._retrying(url, lambda: self._stream_once(url, dest, path, verify_gzip))

    def _stream_once(self, url: str, dest: Path, path: str, verify_gzip: bool) -> SourceIdentity:
        log = dg.get_dagster_logger()
        watchdog = _Watchdog(url, self.min_progress_bytes, self.timeout_seconds, self.attempt_seconds)
        with requests.Session() as session, session.get(url, stream=True, timeout=self.timeout_seconds) as response:
            if response.status_code == 404:
                raise NotPublishedError(f"{url}: HTTP 404, not published at the source")
            _raise_for_status(url, response)
            verifier = _GzipVerifier(url) if verify_gzip and path.endswith(".gz") else None
            identity = SourceIdentity.from_headers(response.headers)
            # Without ETag or Last-Modified the content itself is the file's identity.
            digest = None if identity.known else hashlib.sha256()
            # requests undoes a Content-Encoding, so the announced length is only the file's when there is none.
            encoded = response.headers.get("Content-Encoding", "identity") != "identity"
            total = 0 if encoded else int(response.headers.get("Content-Length") or 0)
            written, next_report = 0, 32 << 20
            with dest.open("wb") as writer:
                for chunk in _with_whole_start(_body(url, response, watchdog)):
                    if written == 0:
                        _check_start(url, chunk, response.headers.get("Content-Type", ""), path)
                    if verifier:
                        verifier.feed(chunk)
                    if digest:
                        digest.update(chunk)
                    writer.write(chunk)
                    written += len(chunk)
                    if written >= next_report:
                        log.info(f"{redact(url)}: {written >> 20} MiB" + (f" of {total >> 20} MiB" if total else ""))
                        next_report += 32 << 20
            if written == 0:
                raise SourceError(f"{url}: the file is empty")
            if total and written != total:
                message = f"{url}: {written:,} of {total:,} bytes arrived (download incomplete)"
                raise SourceError(message, transient=True)
            if verifier:
                verifier.finish()
            return identity if digest is None else replace(identity, sha256=digest.hexdigest())


class _Watchdog:
    """Fails a download attempt that receives less than ``min_bytes`` in a ``window`` of seconds, or that lasts
    longer than ``limit`` seconds: a transient "read timeout" naming the URL."""

    def __init__(self, url: str, min_bytes: int, window: float, limit: float):
        self.url, self.min_bytes, self.window, self.limit = url, min_bytes, window, limit
        self.started = self.window_start = time.monotonic()
        self.window_bytes = 0

    def progress(self, received: int) -> None:
        now = time.monotonic()
        self.window_bytes += received
        if now - self.window_start >= self.window:
            if self.window_bytes < self.min_bytes:
                raise SourceError(
                    f"{self.url}: read timeout: {self.window_bytes:,} bytes in {now - self.window_start:.1f}s, "
                    f"less than {self.min_bytes:,} bytes per {self.window:g}s (the source stalls or trickles)",
                    transient=True,
                )
            self.window_start, self.window_bytes = now, 0
        if now - self.started > self.limit:
            raise SourceError(
                f"{self.url}: read timeout: the download took longer than {self.limit:g}s (attempt_seconds)",
                transient=True,
            )


def _body(url: str, response: requests.Response, watchdog: _Watchdog) -> Iterator[bytes]:
    """The response's body as it arrives, each read reported to ``watchdog``. ``read1`` returns whatever bytes
    have come (``iter_content`` waits for a whole chunk, so a trickle would never reach the watchdog)."""
    while True:
        try:
            chunk = response.raw.read1(CHUNK_BYTES, decode_content=True)
        except urllib3.exceptions.ReadTimeoutError as error:
            message = f"{url}: read timeout: no data for {watchdog.window:g}s (the source stalls)"
            raise SourceError(message, transient=True) from error
        except (urllib3.exceptions.ProtocolError, urllib3.exceptions.SSLError) as error:  # reset, cut short
            reason = error.args[0] if error.args and isinstance(error.args[0], str) else error
            raise SourceError(f"{url}: {reason}", transient=True) from error
        except urllib3.exceptions.DecodeError as error:
            raise SourceError(f"{url}: the body cannot be decoded ({error})") from error
        if not chunk:  # the whole body: however slow its end, it is complete
            return
        watchdog.progress(len(chunk))
        yield chunk


def _with_whole_start(chunks: Iterator[bytes], size: int = 64) -> Iterator[bytes]:
    """``chunks`` with the first one at least ``size`` bytes long (or the whole body): the start checks see the
    magic bytes even from a server that sends them a few at a time."""
    head = b""
    for chunk in chunks:
        if head is None:
            yield chunk
            continue
        head += chunk
        if len(head) >= size:
            yield head
            head = None
    if head:
        yield head
