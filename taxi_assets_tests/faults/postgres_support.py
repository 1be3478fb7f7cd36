"""What the Postgres fault tests share: months of every column filled, the store run in a child process, and
watching a server's sessions to strike at the right moment."""

import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq

from taxi_assets.months import Month
from taxi_assets.resources.lake import LocalLake
from taxi_assets.services import YELLOW

# The child: python postgres_support.py <url or duckdb:path> <lake root> <key> <month>; prints the rows it loaded.
CHILD = Path(__file__)


def write_month(lake: LocalLake, key: str, month: str, rows: int, seed: int = 1) -> None:
    """A clean yellow file of ``rows`` trips in ``month``, every column filled (so COPY has work to do)."""
    rng = np.random.default_rng(seed)
    start = Month.parse(month).start
    seconds = rng.integers(0, 27 * 86_400, rows)
    pickups = np.datetime64(start, "us") + seconds.astype("timedelta64[s]")
    columns = {}
    for field in YELLOW.schema:
        if pa.types.is_timestamp(field.type):
            columns[field.name] = pa.array(pickups + (field.name != YELLOW.pickup_column) * np.timedelta64(600, "s"))
        elif pa.types.is_integer(field.type):
            columns[field.name] = pa.array(rng.integers(1, 265, rows), pa.int64())
        elif pa.types.is_floating(field.type):
            columns[field.name] = pa.array(rng.random(rows) * 50, pa.float64())
        else:
            columns[field.name] = pa.array(np.where(rng.random(rows) < 0.5, "N", "Y"))
    with lake.write(key) as path:
        pq.write_table(pa.table(columns, schema=YELLOW.schema), path)


def start_child(url: str, lake: LocalLake, key: str, month: str, log: Path) -> subprocess.Popen:
    """A child process that replaces ``month`` of yellow_trips from ``key`` (PostgresStore at ``url``, or
    DuckDBWarehouse at ``duckdb:<path>``)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, str(CHILD), url, lake.root, key, month], stdout=out, stderr=subprocess.STDOUT, env=env
        )


def sessions(url: str, where: str) -> list[int]:
    """Pids of the server's client backends (other than this query's) that match the SQL condition ``where``
    on pg_stat_activity."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' "
            f"AND pid <> pg_backend_pid() AND ({where})"
        ).fetchall()
    return [pid for (pid,) in rows]


def wait_for(condition: Callable[[], object], what: str, timeout: float = 60, every: float = 0.02):
    """Poll ``condition`` until it returns something true; that value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def load_tables(url: str) -> list[str]:
    """The ``_load_`` tables in nyc_taxi, sorted."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'nyc_taxi' AND tablename LIKE '\\_load\\_%' ORDER BY 1"
        ).fetchall()
    return [name for (name,) in rows]


def month_rows(url: str, month: str) -> int:
    m = Month.parse(month)
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT count(*) FROM nyc_taxi.yellow_trips WHERE pickup_datetime >= %s AND pickup_datetime < %s",
            [m.start, m.end],
        ).fetchone()[0]


def pickups(month: str, days: int) -> list[datetime]:
    start = Month.parse(month).start
    return [start.replace(day=d) for d in range(1, days + 1)]


if __name__ == "__main__":
    import logging

    from taxi_assets.resources.duckdb_warehouse import DuckDBWarehouse
    from taxi_assets.resources.postgres import PostgresStore

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    url, root, key, month = sys.argv[1:5]
    store = DuckDBWarehouse(database=url[7:]) if url.startswith("duckdb:") else PostgresStore(url=url)
    result = store.replace_month(YELLOW, Month.parse(month), LocalLake(root=root), key)
    print(f"loaded {result.rows} rows", flush=True)
