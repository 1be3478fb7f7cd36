"""Postgres tables, loaded by binary COPY of Arrow record batches and swapped in atomically.

Each service's table is partitioned by month on ``pickup_datetime``. A month is loaded into a fresh table
(streamed from the parquet file by the ADBC driver's binary COPY, no Python per row), checked against the
month's range (a CHECK constraint, tested per row as COPY writes it), indexed and analyzed, all in the
transaction that creates it, then swapped in by one short transaction: detach and drop the old partition, attach
the new one. Readers see the old month or the new one; a failed load leaves the old partition in place and no
load table.

Indexes are built after the load, never before: the parent declares them (``INDEXED_COLUMNS``) and the load table
gets the matching index once its rows are in, so ATTACH finds it and builds nothing while it holds the lock.

Schema evolution: when the contract has gained optional columns since the parent was created, the parent gains
them by ``ALTER TABLE ... ADD COLUMN`` (nullable, no default: a catalog change, no partition is rewritten; the
months loaded before read null). A clean file without such a column (written before) is copied with it null.

Faults: each attempt at a month holds a per-(table, month) advisory lock for its session, so two loads of one
month take turns, and under it drops the load tables of that month that dead attempts left (a process killed
between load and swap leaves ``_load_<table>_<YYYY_MM>_<id>``). When the embedded server stops mid-load, the
store that started it restarts it and loads the month again (``EMBEDDED_RESTARTS`` times at most); a server
given by URL is never restarted: its failures are ``PostgresError`` (transient, for the step's retry policy)
naming the server, its password masked (``secrets.redact``), and the month. A full disk is ``PostgresDiskFull``
(permanent).

Speed: the embedded server runs with ``wal_level=minimal`` (``EMBEDDED_SETTINGS``): a load table is created in
the transaction of its COPY, so Postgres writes its rows to the table only (synced at commit), not to the WAL as
well. A server given by URL is never reconfigured. Several months of a range load at once (``copy_streams``),
each on its own connection, under its own lock, swapped in by its own transaction.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote

import adbc_driver_postgresql.dbapi as adbc
import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from taxi_assets import secrets
from taxi_assets.months import Month
from taxi_assets.resources.lake import Lake
from taxi_assets.resources.sql import (
    added_columns,
    column_definitions,
    file_columns,
    ident,
    parquet_schema,
    sql_type,
    timestamp_literal,
)
from taxi_assets.resources.stores import LoadResult, TableStore
from taxi_assets.services import ContractError, DataContract, TripService
from taxi_assets.settings import POSTGRES_URL, ConfigurationError

# Rows per record batch read from the parquet file (decoding in larger batches is cheaper).
COPY_BATCH_ROWS = 32_768
# Bytes of COPY data the driver encodes at a time. It encodes a whole batch, then blocks until the server has
# taken all but a socket buffer of it, so with big batches client and server took turns instead of working at
# once: on a 1.37M-row yellow month over a Unix socket (buffer about 208 KiB), COPY took 2.8 s in 32k-row batches
# and 1.7 s in 256-row slices (about 60 KiB). Batches are sent in slices of about this size (views, no copy).
COPY_SLICE_BYTES = 64 * 1024
# Log COPY progress (rows so far, rows per second) at most this often, in seconds.
PROGRESS_SECONDS = 5.0
# Each month's partition carries its exact row count as its comment, written in the swap's transaction.
ROWS_COMMENT = "taxi_assets rows={rows}"
ROWS_PATTERN = r"taxi_assets rows=([0-9]+)"
# Columns indexed in every month's partition (when the table has them): trips by pickup zone.
INDEXED_COLUMNS = ("pu_location_id",)
# Times the store restarts the embedded server it started when it stops mid-load, per month.
EMBEDDED_RESTARTS = 2
# How long a stopping or recovering embedded server is watched before deciding whether it is down (restart it)
# or up again (the failure was one backend's).
SETTLE_SECONDS = 10.0
# A backend whose client died (a killed run) notices within this many ms even while it waits for a lock, and
# ends: its session's locks are released, not held until the lock it waits for comes (Postgres 14+).
CLIENT_CHECK_MS = 1000

# Settings of the embedded server the store starts (never of a server given by URL). wal_level=minimal: rows
# COPYed into a table created in the same transaction (every load table) skip the WAL, the table is synced at
# commit instead (measured on a 1.37M-row yellow month: 240 MB of WAL per month before, under 1 MB after; see
# docs/BENCHMARKS.md). It needs max_wal_senders=0 (no replication from this server). Both take a restart.
EMBEDDED_SETTINGS = {"wal_level": "minimal", "max_wal_senders": "0"}
# Months of a range loaded at once by default: one COPY stream per core of a 2-core machine.
COPY_STREAMS = 2

# A URL whose password holds an unencoded @: user, password (everything to the last @), the rest.
_UNENCODED_AT = re.compile(
    r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/?#@]*:)(?P<password>[^/?#]*@[^/?#]*)@(?P<rest>[^@]*)"
)


def passwords(conninfo: str) -> list[str]:
    """The passwords ``conninfo`` (a URL or libpq's ``key=value`` form) carries, as written and decoded."""
    found = []
    url = _UNENCODED_AT.fullmatch(conninfo) or re.match(
        r"[a-zA-Z][a-zA-Z0-9+.-]*://[^:/?#@]*:(?P<password>[^@/?#]*)@", conninfo
    )
    if url:
        found.append(url["password"])
    if "://" in conninfo and "?" in conninfo:
        found += [v for k, v in parse_qsl(conninfo.split("?", 1)[1], keep_blank_values=True) if k.lower() == "password"]
    else:
        for match in re.finditer(r"\bpassword\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", conninfo, re.IGNORECASE):
            value = match[1]
            found.append(re.sub(r"\\(.)", r"\1", value[1:-1]) if value.startswith("'") else value)
    return sorted({v for p in found for v in (p, unquote(p), quote(unquote(p), safe="")) if v}, key=len, reverse=True)


def driver_url(url: str) -> str:
    """``url`` as libpq must read it: a password with an unencoded ``@`` percent-encoded (libpq splits a URL at
    the first ``@``, so it would connect to a host named after the password's tail, and print it)."""
    match = _UNENCODED_AT.fullmatch(url)
    if not match:
        return url
    return f"{match['head']}{quote(unquote(match['password']), safe='')}@{match['rest']}"


class PostgresError(ConnectionError):
    """Postgres could not be reached, or failed or went away during a load: transient (the step's retry policy
    tries again). The message names the server (password masked) and what was being loaded."""


class PostgresDiskFull(PostgresError):
    """The server's disk (the embedded server's data folder) is full: permanent until space is freed."""


def _lock_key(*parts: str) -> int:
    """A stable signed 64-bit advisory lock key for ``parts`` (the same in every process and version)."""
    digest = hashlib.blake2b("\x1f".join(("taxi_assets", *parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _is_disk_full(text: str) -> bool:
    return "No space left on device" in text or "could not extend file" in text


def _disk_full_line(log: str) -> str:
    """The first line of a server's ``log`` that says its disk is full ("" if none)."""
    return next((line for line in log.splitlines() if _is_disk_full(line)), "")


# One start, restart or reconfiguration of an embedded server at a time in this process (months load in threads;
# pgserver's own lock is between processes only).
_starting = threading.Lock()
# (data folder, postmaster pid) of the servers that have their settings, and of those told to wait for them.
_configured: set[tuple[str, int]] = set()
_waiting: set[tuple[str, int]] = set()


def start_embedded_postgres(data_dir: str | Path, settings: Mapping[str, str] | None = None) -> str:
    """Start (or reuse) the embedded Postgres 16 of the pip package ``pgserver`` in ``data_dir``; its URL.

    The server keeps running after this process ends, so later runs and ``psql`` reuse it. A server that has
    stopped since this process last asked (killed, crashed, its disk full) is started again. ``settings`` (the
    store passes ``EMBEDDED_SETTINGS``) are written by ``ALTER SYSTEM`` when the server's differ, so an existing
    data folder gets them too; those that need a restart get it at once if no other session uses the server,
    else (a warning says so) at a later call that finds it unused: a restart would cut other clients' sessions.
    """
    with _starting:
        url = _start_embedded(data_dir)
        return _configure_embedded(data_dir, url, settings) if settings else url


def _start_embedded(data_dir: str | Path) -> str:
    try:
        import pgserver  # imported lazily: only the embedded default needs it
    except ImportError:
        raise ConfigurationError(
            f"{POSTGRES_URL} is not set and the embedded Postgres (the pip package pgserver, with wheels for "
            "x86_64 Linux and macOS only) is not installed here: set it to a Postgres server's URL"
        ) from None

    Path(data_dir).mkdir(parents=True, exist_ok=True)
    log_file = Path(data_dir) / "log"
    log_size = log_file.stat().st_size if log_file.exists() else 0
    deadline = time.monotonic() + SETTLE_SECONDS  # a server stopping or recovering: wait until it is down or up
    while embedded_postgres_state(data_dir) not in ("down", "ready") and time.monotonic() < deadline:
        time.sleep(0.2)
    try:
        server = pgserver.get_server(str(data_dir), cleanup_mode=None)
        # get_server hands back this process's handle as it was: it does not notice a server stopped since.
        with server._lock:  # pgserver's lock between processes, which ensure_postgres_running expects held
            server.ensure_postgres_running()
    except (OSError, subprocess.SubprocessError, AssertionError) as error:  # pgserver asserts a ready server
        said = _disk_full_line(_log_since(log_file, log_size))
        if said:
            raise PostgresDiskFull(
                f"the embedded Postgres' folder {data_dir} is full, it cannot start: {said}"
            ) from None
        raise PostgresError(
            f"the embedded Postgres in {data_dir} does not start ({type(error).__name__}: {error}); see {log_file}"
        ) from None
    return server.get_uri()


def _configure_embedded(data_dir: str | Path, url: str, settings: Mapping[str, str]) -> str:
    """Give the embedded server of ``data_dir`` (at ``url``) its ``settings``, restarting it if they need it and
    no other session uses it; its URL afterwards."""

    def server_key() -> tuple[str, int] | None:
        with suppress(OSError, IndexError, ValueError):
            return str(Path(data_dir).resolve()), int((Path(data_dir) / "postmaster.pid").read_text().split()[0])
        return None

    if server_key() in _configured:
        return url
    log = dg.get_dagster_logger()
    try:
        with adbc.connect(url, autocommit=True) as conn, conn.cursor() as cursor:  # ALTER SYSTEM: no transaction
            changed, restart = [], False
            for name, value in settings.items():
                cursor.execute(f"SELECT setting, context FROM pg_settings WHERE name = '{name}'")
                current, context = cursor.fetchone()
                if current != value:
                    cursor.execute(f"ALTER SYSTEM SET {name} = '{value}'")
                    changed.append(f"{name}={value} (was {current})")
                    restart = restart or context == "postmaster"
            if changed:
                cursor.execute("SELECT pg_reload_conf()")
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                "AND pid <> pg_backend_pid()"
            )
            others = cursor.fetchone()[0]
    except adbc.Error as error:
        raise PostgresError(f"cannot configure the embedded Postgres in {data_dir}: {str(error).strip()}") from None
    if restart and others:  # not recorded as configured: asked again at the next connection
        if server_key() not in _waiting:
            _waiting.add(server_key())
            log.warning(
                f"the embedded Postgres in {data_dir} needs a restart for {', '.join(changed)}; {others} other "
                "session(s) use it now, which a restart would cut: it is restarted once none does"
            )
        return url
    if restart:
        log.info(f"restarting the embedded Postgres in {data_dir} for {', '.join(changed)}")
        stop_embedded_postgres(data_dir)
        url = _start_embedded(data_dir)
    _configured.add(server_key())
    return url


def _log_since(log_file: Path, offset: int, limit: int = 65_536) -> str:
    """What the server wrote to ``log_file`` after ``offset`` (its last ``limit`` bytes at most)."""
    with suppress(OSError), open(log_file, "rb") as log:
        size = log.seek(0, os.SEEK_END)
        log.seek(max(offset, size - limit) if size >= offset else max(0, size - limit))
        return log.read().decode(errors="replace")
    return ""


def embedded_postgres_state(data_dir: str | Path) -> str:
    """``down``, or the status the embedded server of ``data_dir`` gives in its ``postmaster.pid`` (``ready``,
    ``starting``, ``stopping``)."""
    import psutil  # a dependency of pgserver

    try:
        lines = (Path(data_dir) / "postmaster.pid").read_text().splitlines()
        process = psutil.Process(int(lines[0]))
        if process.status() == psutil.STATUS_ZOMBIE:
            return "down"
    except (FileNotFoundError, IndexError, ValueError, psutil.NoSuchProcess):
        return "down"
    return lines[7].strip() if len(lines) > 7 else "starting"


def stop_embedded_postgres(data_dir: str | Path, timeout_seconds: float = 60) -> bool:
    """Stop the embedded Postgres of ``data_dir``; False if none was running.

    pgserver runs the server as its own user when started by root, so ``pg_ctl stop`` from root fails:
    signal the postmaster instead (SIGINT is Postgres' fast shutdown) and wait for it to exit.
    """
    pid_file = Path(data_dir) / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, signal.SIGINT)
    except (FileNotFoundError, IndexError, ValueError, ProcessLookupError):
        return False
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    raise TimeoutError(f"the embedded Postgres in {data_dir} (pid {pid}) did not stop in {timeout_seconds:.0f}s")


class PostgresStore(TableStore):
    """Tables in Postgres: a server from ``TAXI_POSTGRES_URL``, or an embedded one started from the pip package
    ``pgserver`` (Postgres 16) under ``embedded_dir`` and reused by later runs.

    Example:
        .. code-block:: python

            postgres = PostgresStore(url=dg.EnvVar("TAXI_POSTGRES_URL"))
            postgres = PostgresStore(embedded_dir="data/postgres")  # the embedded default
    """

    # A missing or corrupt parquet file, one or a table that does not fit the contract, rows that break the
    # month's CHECK or a column type, or a full disk.
    permanent_errors = (
        FileNotFoundError,
        pa.ArrowInvalid,
        ContractError,
        adbc.IntegrityError,
        adbc.DataError,
        PostgresDiskFull,
    )

    url: str | None = Field(
        default=None,
        description="libpq URL (postgresql://user:password@host:port/db, or ?host=/socket/dir) or key=value "
        "conninfo; unset: the embedded server. Give it with EnvVar: it may hold a password.",
    )
    embedded_dir: str | None = Field(default=None, description="Data folder of the embedded Postgres.")
    schema_name: str = Field(default="nyc_taxi", description="Schema that holds the tables.")
    copy_streams: int = Field(
        default=COPY_STREAMS,
        ge=1,
        description="Months of a range loaded at once, each by its own COPY on its own connection.",
    )

    @property
    def parallel_loads(self) -> int:
        return self.copy_streams

    def connection_url(self) -> str:
        if self.url:
            return self.url
        if not self.embedded_dir:
            raise ValueError("PostgresStore needs url (TAXI_POSTGRES_URL) or embedded_dir")
        return start_embedded_postgres(self.embedded_dir, EMBEDDED_SETTINGS)

    def server(self) -> str:
        """The server as messages name it: its URL with the password masked, or the embedded server's folder."""
        return f"Postgres at {self.redact(self.url)}" if self.url else f"the embedded Postgres in {self.embedded_dir}"

    def redact(self, text: str) -> str:
        """``text`` without the store's password, in any form the URL gives it (``secrets.redact``)."""
        return secrets.redact(text, values=passwords(self.url) if self.url else ())

    @contextmanager
    def connect(self) -> Iterator[adbc.Connection]:
        """A connection in a transaction: committed by the caller, rolled back on error."""
        url = self.connection_url()
        try:
            conn = adbc.connect(driver_url(url))
        except adbc.Error as error:
            raise PostgresError(f"cannot connect to {self.server()}: {self.redact(str(error).strip())}") from None
        try:
            # A backend whose client died notices it even while it waits for a lock (Postgres 14+), and ends.
            self._scalar(
                conn,
                "SELECT CASE WHEN current_setting('server_version_num')::int >= 140000 "
                f"THEN set_config('client_connection_check_interval', '{CLIENT_CHECK_MS}', false) END",
            )
            conn.commit()
            yield conn
        except BaseException:
            try:
                conn.rollback()
            except adbc.Error as rollback_error:
                # The error raised is the one that matters; a lost connection cannot roll back (the server does).
                dg.get_dagster_logger().warning(
                    f"{self.server()}: the rollback failed too: {self.redact(str(rollback_error).strip())}"
                )
            raise
        finally:
            with suppress(adbc.Error):
                conn.close()

    def _attempts(self, doing: str, load: Callable[[], LoadResult]) -> LoadResult:
        """``load()``, with driver errors turned into ``PostgresError``s that name the server and ``doing``; the
        embedded server restarted and ``load`` tried again when the server stopped meanwhile."""
        log = dg.get_dagster_logger()
        log_file = Path(self.embedded_dir or ".") / "log"
        for restart in range(EMBEDDED_RESTARTS + 1):
            log_size = log_file.stat().st_size if not self.url and log_file.exists() else 0
            try:
                return load()
            except self.permanent_errors:
                raise
            except (adbc.Error, PostgresError) as error:
                text = self.redact(str(error).strip())
                told = "" if self.url else _log_since(log_file, log_size)
                if _is_disk_full(text) or _is_disk_full(told):
                    where = (
                        f"{self.server()}: its disk"
                        if self.url
                        else f"the embedded Postgres' folder {self.embedded_dir}"
                    )
                    said = _disk_full_line(told)
                    said = f"; its log: {said}" if said else ""
                    raise PostgresDiskFull(
                        f"{doing}: {where} is full; free space and run again ({text}{said})"
                    ) from None
                if isinstance(error, PostgresError):
                    raise PostgresError(f"{doing}: {text}") from None
                if self.url or restart == EMBEDDED_RESTARTS or self._embedded_alive():
                    raise PostgresError(f"{doing}: {self.server()} failed: {text}") from None
                log.warning(
                    f"{self.server()} stopped while {doing} ({text}): restarting it and loading again "
                    f"(restart {restart + 1} of {EMBEDDED_RESTARTS})"
                )
                start_embedded_postgres(self.embedded_dir, EMBEDDED_SETTINGS)
                log.info(f"restarted {self.server()}")
        raise AssertionError("unreachable")

    def _embedded_alive(self) -> bool:
        """Whether the embedded server still serves (only a backend failed), once a stop or crash recovery it
        is going through has settled; False when it is down."""
        deadline = time.monotonic() + SETTLE_SECONDS
        while True:
            state = embedded_postgres_state(self.embedded_dir)
            if state == "down":
                return False
            if state == "ready":
                # Straight to its socket: connection_url() would start the server again if it just went down.
                with suppress(OSError, IndexError, adbc.Error):
                    lines = (Path(self.embedded_dir) / "postmaster.pid").read_text().splitlines()
                    url = f"postgresql://postgres:@/postgres?host={lines[4].strip()}&port={lines[3].strip()}"
                    with adbc.connect(url) as conn, conn.cursor() as cursor:
                        cursor.execute("SELECT 1")
                    return True
            if time.monotonic() > deadline:
                return True  # neither down nor serving: left to the step's retry
            time.sleep(0.2)

    def _take_turn(self, conn: adbc.Connection, table: str, month: Month | None = None) -> None:
        """Wait until no other attempt loads ``table`` (its ``month``), then drop the load tables that dead
        attempts left. The advisory lock lasts as long as the session: two attempts take turns, and the lock of
        an attempt that dies goes with its session."""
        what = f"{self.schema_name}.{table}" + (f" {month.key}" if month else "")
        key = _lock_key(self.schema_name, table, month.key if month else "")
        log = dg.get_dagster_logger()
        if not self._scalar(conn, f"SELECT pg_try_advisory_lock({key})"):
            log.info(f"another attempt is loading {what}: waiting for it to end")
            self._execute(conn, f"SELECT pg_advisory_lock({key})")
            log.info(f"the other attempt at {what} ended: loading")
        conn.commit()
        prefix = self._load_prefix(table, month)
        with conn.cursor() as cursor:
            cursor.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = $1 AND tablename LIKE '\\_load\\_%' ORDER BY 1",
                parameters=(self.schema_name,),
            )
            names = [name for (name,) in cursor.fetchall() if re.fullmatch(re.escape(prefix) + "[0-9a-f]{12}", name)]
        if names:
            self._execute(conn, *(f"DROP TABLE IF EXISTS {ident(self.schema_name, name)}" for name in names))
            conn.commit()
            log.warning(f"dropped {', '.join(names)}: left in {self.schema_name} by attempts at {what} that died")

    @staticmethod
    def _load_prefix(table: str, month: Month | None) -> str:
        """The start of the load tables' names of ``table`` (its ``month``): ``_load_yellow_trips_2021_01_``."""
        return f"_load_{table}_" + (f"{month.start:%Y_%m}_" if month else "")

    def _execute(self, conn: adbc.Connection, *statements: str) -> None:
        with conn.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)

    def _scalar(self, conn: adbc.Connection, query: str):
        with conn.cursor() as cursor:
            cursor.execute(query)
            return cursor.fetchone()[0]

    def _table_rows(self, conn: adbc.Connection, table: str) -> int:
        """Rows of the partitioned ``table``: the sum of its partitions' recorded counts (a partition loaded
        before counts were recorded is counted once)."""
        with conn.cursor() as cursor:
            cursor.execute(
                "SELECT c.relname, substring(obj_description(c.oid, 'pg_class') from $1) "
                "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = to_regclass($2)",
                parameters=(ROWS_PATTERN, f"{ident(self.schema_name, table)}"),
            )
            partitions = cursor.fetchall()
        return sum(
            int(recorded) if recorded else self._scalar(conn, f"SELECT count(*) FROM {ident(self.schema_name, name)}")
            for name, recorded in partitions
        )

    def _table_columns(self, conn: adbc.Connection, table: str) -> list[str]:
        """The columns of ``table`` (in the store's schema), in order."""
        with conn.cursor() as cursor:
            cursor.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2 "
                "ORDER BY ordinal_position",
                parameters=(self.schema_name, table),
            )
            return [name for (name,) in cursor.fetchall()]

    def _file_columns(self, contract: DataContract, parquet: Path) -> list[str]:
        """The contract's columns ``parquet`` has (a ``ContractError`` if it does not fit the contract)."""
        return [c.name for c in file_columns(contract, parquet_schema(parquet, str(parquet)), str(parquet))]

    def _copy(
        self, conn: adbc.Connection, table: str, contract: DataContract, parquet: Path, present: list[str]
    ) -> int:
        """Stream the ``present`` columns of ``parquet`` into ``table`` by binary COPY, one record batch at a time."""
        log = dg.get_dagster_logger()
        # pre_buffer=False: with it, the reader keeps every row group it has read buffered until the file is done,
        # so memory grew with the month (7.8M rows: +250 MB by the end); without it, memory is flat.
        parquet_file = pq.ParquetFile(str(parquet), pre_buffer=False)
        total = parquet_file.metadata.num_rows
        schema = contract.schema

        def in_contract_schema(batch: pa.RecordBatch) -> pa.RecordBatch:
            # The contract's columns the file lacks (optional, newer than the file) are sent as nulls.
            return pa.RecordBatch.from_arrays(
                [batch.column(f.name) if f.name in present else pa.nulls(batch.num_rows, f.type) for f in schema],
                schema=schema,
            )

        def slices(batch: pa.RecordBatch) -> Iterator[pa.RecordBatch]:
            # Binary COPY sends each value with a 4-byte length, each row with a 2-byte field count.
            row_bytes = batch.nbytes / max(batch.num_rows, 1) + 4 * batch.num_columns + 2
            rows = max(16, int(COPY_SLICE_BYTES // row_bytes))
            for offset in range(0, batch.num_rows, rows):
                yield batch.slice(offset, rows)

        unreadable: list[BaseException] = []  # what reading the file raised, under the driver's own error

        def read(batches):
            try:
                yield from batches
            except (pa.ArrowException, OSError) as error:
                unreadable.append(error)
                raise

        def batches():
            sent, started = 0, time.monotonic()
            logged = started
            for batch in read(parquet_file.iter_batches(batch_size=COPY_BATCH_ROWS, columns=present)):
                batch = in_contract_schema(batch)
                yield from slices(batch)
                sent += batch.num_rows
                now = time.monotonic()
                if now - logged >= PROGRESS_SECONDS or sent == total:
                    logged = now
                    log.info(
                        f"COPY into {self.schema_name}.{table}: {sent:,} of {total:,} rows "
                        f"({sent / max(now - started, 1e-9):,.0f} rows/s)"
                    )

        reader = pa.RecordBatchReader.from_batches(schema, batches())
        try:
            with conn.cursor() as cursor:
                return cursor.adbc_ingest(table, reader, mode="append", db_schema_name=self.schema_name)
        except adbc.Error:
            if unreadable:  # a data page that cannot be decoded: the file's fault, permanent, named
                raise ContractError(f"{parquet}: the parquet file cannot be read ({unreadable[0]})") from None
            raise
        finally:
            pa.default_memory_pool().release_unused()  # freed batches back to the OS, not kept for reuse

    def _indexed_columns(self, contract: DataContract) -> list[str]:
        return [c for c in INDEXED_COLUMNS if c in contract.schema.names]

    def _create_parent(self, conn: adbc.Connection, service: TripService) -> None:
        parent = ident(self.schema_name, service.table_name)
        self._execute(
            conn,
            # Loads of other months may create or alter the parent at the same time: one at a time.
            f"SELECT pg_advisory_xact_lock({_lock_key(self.schema_name, service.table_name, 'parent')})",
            f"CREATE SCHEMA IF NOT EXISTS {ident(self.schema_name)}",
            f"CREATE TABLE IF NOT EXISTS {parent} "
            f"({column_definitions(service)}) PARTITION BY RANGE ({ident(service.pickup_column)})",
        )
        # Columns the contract gained since the parent was created (loaded months keep theirs and read null).
        added = added_columns(
            service, self._table_columns(conn, service.table_name), f"{self.schema_name}.{service.table_name}"
        )
        # Only the indexes the parent lacks: CREATE INDEX IF NOT EXISTS locks every partition before it finds the
        # index there, so it waited for autovacuum's ANALYZE of the months just loaded (measured: 0.7 s).
        indexes = [(c, f"{service.table_name}_{c}_idx") for c in self._indexed_columns(service)]
        missing = [
            (c, index)
            for c, index in indexes
            if not self._scalar(conn, f"SELECT to_regclass('{ident(self.schema_name, index)}') IS NOT NULL")
        ]
        self._execute(
            conn,
            *(f"ALTER TABLE {parent} ADD COLUMN IF NOT EXISTS {ident(c.name)} {sql_type(c)}" for c in added),
            # The parent alone (not its partitions) in SHARE mode, as CREATE INDEX takes it: a swap under way or
            # waiting for readers goes first.
            f"LOCK TABLE ONLY {parent} IN SHARE MODE",
            # A partitioned index: each partition brings its own, built on the load table before the swap.
            *(f"CREATE INDEX IF NOT EXISTS {ident(index)} ON {parent} ({ident(c)})" for c, index in missing),
        )
        conn.commit()

    @contextmanager
    def _load_table(
        self,
        conn: adbc.Connection,
        contract: DataContract,
        parquet: Path,
        present: list[str],
        month: Month | None,
        check: str | None = None,
    ) -> Iterator[tuple[str, int]]:
        """A new, committed table holding the parquet's rows (its ``present`` columns, the others null), and its
        row count; dropped afterwards unless renamed into place. Its name carries the month, so that the next
        attempt at the month drops it if this one dies before that.

        One transaction creates it (with the ``check`` constraint, tested per row as COPY writes it: no scan
        afterwards), fills it, indexes and analyzes it: with wal_level=minimal its rows and index skip the WAL
        (the files are synced once, at the commit), and a failed attempt leaves no table behind."""
        name = f"{self._load_prefix(contract.table_name, month)}{uuid.uuid4().hex[:12]}"
        table = ident(self.schema_name, name)
        constraint = f", CONSTRAINT {ident(f'{name}_month')} CHECK ({check})" if check else ""
        self._execute(conn, f"CREATE TABLE {table} ({column_definitions(contract)}{constraint})")
        try:
            # COPY is all or nothing and the table is this transaction's own: the rows sent are the rows in it
            # (no count(*) scan of the month afterwards).
            rows = self._copy(conn, name, contract, parquet, present)
            # Indexes built after the rows are in (one sorted build each), so ATTACH adopts them.
            self._execute(
                conn,
                *(
                    f"CREATE INDEX {ident(f'{name}_{c}_idx')} ON {table} ({ident(c)})"
                    for c in self._indexed_columns(contract)
                ),
                f"ANALYZE {table}",  # planner statistics before readers see it
            )
            conn.commit()
            yield name, rows
        finally:
            with suppress(adbc.Error):
                conn.rollback()
                self._execute(conn, f"DROP TABLE IF EXISTS {table}")
                conn.commit()

    def replace_month(self, service: TripService, month: Month, lake: Lake, key: str) -> LoadResult:
        with lake.read(key) as parquet:
            present = self._file_columns(service, parquet)  # checked first: a file that does not fit changes nothing
            return self._attempts(
                f"loading {self.schema_name}.{service.table_name} {month.key}",
                lambda: self._replace_month(service, month, parquet, present),
            )

    def _replace_month(self, service: TripService, month: Month, parquet: Path, present: list[str]) -> LoadResult:
        parent = ident(self.schema_name, service.table_name)
        partition = f"{service.table_name}_{month.start:%Y_%m}"
        pickup, start, end = ident(service.pickup_column), timestamp_literal(month.start), timestamp_literal(month.end)
        # With this constraint ATTACH needs no scan of the month under the parent's lock.
        check = f"{pickup} IS NOT NULL AND {pickup} >= {start} AND {pickup} < {end}"
        with self.connect() as conn:
            self._take_turn(conn, service.table_name, month)
            self._create_parent(conn, service)
            with self._load_table(conn, service, parquet, present, month, check) as (loaded, rows):
                loaded_table = ident(self.schema_name, loaded)
                self._execute(
                    conn,
                    f"LOCK TABLE {parent} IN ACCESS EXCLUSIVE MODE",  # taken first: no lock upgrade, no deadlock
                    # The exact count rides with the partition, so the table's total needs no scan of every month.
                    f"COMMENT ON TABLE {loaded_table} IS '{ROWS_COMMENT.format(rows=rows)}'",
                    f"DROP TABLE IF EXISTS {ident(self.schema_name, partition)}",
                    f"ALTER TABLE {loaded_table} RENAME TO {ident(partition)}",
                    f"ALTER TABLE {ident(self.schema_name, partition)} RENAME CONSTRAINT {ident(f'{loaded}_month')} "
                    f"TO {ident(partition + '_month')}",
                    *(
                        f"ALTER INDEX {ident(self.schema_name, f'{loaded}_{c}_idx')} "
                        f"RENAME TO {ident(f'{partition}_{c}_idx')}"
                        for c in self._indexed_columns(service)
                    ),
                    f"ALTER TABLE {parent} ATTACH PARTITION {ident(self.schema_name, partition)} "
                    f"FOR VALUES FROM ({start}) TO ({end})",
                )
                conn.commit()
            table_rows = self._table_rows(conn, service.table_name)
        return LoadResult(
            table=f"{self.schema_name}.{service.table_name}",
            rows=rows,
            table_rows=table_rows,
            metadata={"partition_table": f"{self.schema_name}.{partition}"},
        )

    def replace_table(self, contract: DataContract, lake: Lake, key: str) -> LoadResult:
        with lake.read(key) as parquet:
            present = self._file_columns(contract, parquet)
            return self._attempts(
                f"loading {self.schema_name}.{contract.table_name}",
                lambda: self._replace_table(contract, parquet, present),
            )

    def _replace_table(self, contract: DataContract, parquet: Path, present: list[str]) -> LoadResult:
        table = ident(self.schema_name, contract.table_name)
        with self.connect() as conn:
            self._take_turn(conn, contract.table_name)
            self._execute(conn, f"CREATE SCHEMA IF NOT EXISTS {ident(self.schema_name)}")
            conn.commit()
            with self._load_table(conn, contract, parquet, present, None) as (loaded, rows):
                self._execute(
                    conn,
                    f"DROP TABLE IF EXISTS {table}",
                    f"ALTER TABLE {ident(self.schema_name, loaded)} RENAME TO {ident(contract.table_name)}",
                )
                conn.commit()
        return LoadResult(table=f"{self.schema_name}.{contract.table_name}", rows=rows)

    def month_row_count(self, service: TripService, month: Month) -> int:
        partition = f"{service.table_name}_{month.start:%Y_%m}"
        with self.connect() as conn:
            exists = self._scalar(conn, f"SELECT to_regclass('{self.schema_name}.{partition}') IS NOT NULL")
            return self._scalar(conn, f"SELECT count(*) FROM {ident(self.schema_name, partition)}") if exists else 0
