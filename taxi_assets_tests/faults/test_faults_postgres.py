"""Faults of the Postgres and DuckDB stores, against real servers and processes: a load killed after its COPY,
two loads of one month at once, the embedded server stopped mid-COPY, a backend terminated mid-COPY, an
unreachable server (its password in every form libpq takes), the embedded server's disk full, a killed DuckDB
load."""

import logging
import os
import shutil
import signal
import subprocess
import threading

import duckdb
import pgserver
import psycopg
import pytest

from taxi_assets.months import Month
from taxi_assets.resources.duckdb_warehouse import DuckDBWarehouse
from taxi_assets.resources.lake import LocalLake
from taxi_assets.resources.postgres import (
    PostgresDiskFull,
    PostgresError,
    PostgresStore,
    start_embedded_postgres,
)
from taxi_assets.resources.postgres import stop_embedded_postgres as stop_server
from taxi_assets.secrets import redact
from taxi_assets.services import YELLOW
from taxi_assets_tests.faults.postgres_support import (
    load_tables,
    month_rows,
    sessions,
    start_child,
    wait_for,
    write_month,
)
from taxi_assets_tests.processes import free_port

JAN, FEB = Month.parse("2021-01"), Month.parse("2021-02")
BIG = 300_000  # rows: COPY takes about a second, long enough to strike in the middle
AT_SWAP = "wait_event_type = 'Lock' AND query LIKE 'LOCK TABLE%'"  # a load done with its COPY, waiting to swap
COPYING = "query LIKE 'COPY%' AND state = 'active'"


@pytest.fixture
def lake(tmp_path) -> LocalLake:
    return LocalLake(root=str(tmp_path / "lake"))


class HeldTable:
    """A reader's open transaction on yellow_trips: loads finish their COPY, then wait to swap until released."""

    def __init__(self, url: str):
        self.conn = psycopg.connect(url)
        self.conn.execute("SELECT count(*) FROM nyc_taxi.yellow_trips")

    def release(self) -> None:
        self.conn.rollback()
        self.conn.close()


@pytest.mark.fault_case("Postgres load killed after COPY")
def test_a_load_table_left_by_a_killed_attempt_is_dropped_by_the_next_attempt_at_the_month(
    lake, postgres_db_url, tmp_path, caplog
):
    store = PostgresStore(url=postgres_db_url)
    write_month(lake, "jan.parquet", "2021-01", 3)
    write_month(lake, "feb.parquet", "2021-02", 2)
    store.replace_month(YELLOW, JAN, lake, "jan.parquet")
    store.replace_month(YELLOW, FEB, lake, "feb.parquet")
    write_month(lake, "jan_big.parquet", "2021-01", 20_000, seed=2)
    write_month(lake, "feb_big.parquet", "2021-02", 20_000, seed=3)
    write_month(lake, "jan_new.parquet", "2021-01", 7, seed=4)
    held = HeldTable(postgres_db_url)
    try:
        # January's attempt copies its rows (committed to its load table), then is SIGKILLed before the swap.
        dead = start_child(postgres_db_url, lake, "jan_big.parquet", "2021-01", tmp_path / "dead.log")
        (dead_backend,) = wait_for(lambda: sessions(postgres_db_url, AT_SWAP), "the January load to reach the swap")
        (left,) = load_tables(postgres_db_url)
        assert left.startswith("_load_yellow_trips_2021_01_")
        dead.send_signal(signal.SIGKILL)
        assert dead.wait(timeout=30) == -signal.SIGKILL
        # Its backend notices the dead client within a second, though it waits for a lock, and ends.
        wait_for(lambda: not sessions(postgres_db_url, f"pid = {dead_backend}"), "the dead attempt's backend to end")
        assert load_tables(postgres_db_url) == [left]  # what a killed attempt leaves: a whole month's table

        # February's attempt is alive, between its COPY and its swap.
        live = start_child(postgres_db_url, lake, "feb_big.parquet", "2021-02", tmp_path / "live.log")
        wait_for(lambda: sessions(postgres_db_url, AT_SWAP), "the February load to reach the swap")
        (live_table,) = set(load_tables(postgres_db_url)) - {left}
        assert live_table.startswith("_load_yellow_trips_2021_02_")

        # January again: it drops the dead attempt's table, never February's, then waits for the table too.
        result = {}
        caplog.set_level(logging.INFO)
        again = threading.Thread(
            target=lambda: result.update(jan=store.replace_month(YELLOW, JAN, lake, "jan_new.parquet"))
        )
        again.start()
        waiting = "wait_event_type = 'Lock' AND wait_event = 'relation'"
        wait_for(lambda: len(sessions(postgres_db_url, waiting)) == 2, "the new January load to wait for the table")
        assert load_tables(postgres_db_url) == [live_table]
    finally:
        held.release()
    again.join(timeout=60)
    assert live.wait(timeout=60) == 0
    assert result["jan"].rows == 7
    assert (month_rows(postgres_db_url, "2021-01"), month_rows(postgres_db_url, "2021-02")) == (7, 20_000)
    assert load_tables(postgres_db_url) == []
    assert f"dropped {left}: left in nyc_taxi by attempts at nyc_taxi.yellow_trips 2021-01 that died" in caplog.text


@pytest.mark.fault_case("Two loads of one month at once")
def test_two_processes_loading_the_same_month_take_turns(lake, postgres_db_url, tmp_path):
    store = PostgresStore(url=postgres_db_url)
    write_month(lake, "jan.parquet", "2021-01", 3)
    store.replace_month(YELLOW, JAN, lake, "jan.parquet")
    write_month(lake, "first.parquet", "2021-01", 20_000, seed=5)
    write_month(lake, "second.parquet", "2021-01", 12_345, seed=6)
    held = HeldTable(postgres_db_url)  # the first load waits to swap, so the second surely starts meanwhile
    try:
        first = start_child(postgres_db_url, lake, "first.parquet", "2021-01", tmp_path / "first.log")
        wait_for(lambda: sessions(postgres_db_url, AT_SWAP), "the first load to reach the swap")
        second = start_child(postgres_db_url, lake, "second.parquet", "2021-01", tmp_path / "second.log")
        wait_for(lambda: sessions(postgres_db_url, "wait_event = 'advisory'"), "the second load to wait its turn")
        assert len(load_tables(postgres_db_url)) == 1  # the second has not started its COPY
    finally:
        held.release()
    assert (first.wait(timeout=60), second.wait(timeout=60)) == (0, 0)
    assert "loaded 20000 rows" in (tmp_path / "first.log").read_text()
    second_log = (tmp_path / "second.log").read_text()
    assert "another attempt is loading nyc_taxi.yellow_trips 2021-01: waiting for it to end" in second_log
    assert "loaded 12345 rows" in second_log
    assert month_rows(postgres_db_url, "2021-01") == 12_345  # the last one's rows, exactly: no mix, no duplicate
    assert store.month_row_count(YELLOW, JAN) == 12_345 and load_tables(postgres_db_url) == []


def stop_immediately(data_dir) -> None:
    """``pg_ctl stop -m immediate``: the postmaster and its backends quit at once, as in a crash."""
    user = "pgserver" if os.geteuid() == 0 else None  # pgserver runs the server as its own user under root
    pgserver.pg_ctl(["-m", "immediate", "stop"], pgdata=data_dir, user=user)


@pytest.mark.fault_case("Embedded Postgres stops mid-COPY")
def test_the_store_restarts_its_embedded_server_when_it_stops_mid_copy(lake, tmp_path, caplog):
    data_dir = tmp_path / "postgres"
    store = PostgresStore(embedded_dir=str(data_dir))
    try:
        url = start_embedded_postgres(data_dir)
        write_month(lake, "jan.parquet", "2021-01", 3)
        store.replace_month(YELLOW, JAN, lake, "jan.parquet")
        write_month(lake, "big.parquet", "2021-01", BIG, seed=7)

        def stop_mid_copy():
            wait_for(lambda: sessions(url, COPYING), "the COPY")
            stop_immediately(data_dir)

        stopper = threading.Thread(target=stop_mid_copy)
        stopper.start()
        caplog.set_level(logging.INFO)
        result = store.replace_month(YELLOW, JAN, lake, "big.parquet")
        stopper.join(timeout=60)

        assert result.rows == BIG and store.month_row_count(YELLOW, JAN) == BIG
        assert f"the embedded Postgres in {data_dir} stopped while loading nyc_taxi.yellow_trips 2021-01" in caplog.text
        assert "restarting it and loading again (restart 1 of 2)" in caplog.text
        assert load_tables(url) == []
    finally:
        stop_server(data_dir)


@pytest.mark.fault_case("Postgres backend killed mid-COPY")
def test_a_backend_killed_mid_copy_keeps_the_month_and_names_server_and_month(lake, postgres_db_url, caplog):
    # A password in the URL (the socket trusts, so libpq never sends it): it must show nowhere.
    url = postgres_db_url.replace("postgres:@", "postgres:pl4nted-pw@")
    store = PostgresStore(url=url)
    write_month(lake, "jan.parquet", "2021-01", 3)
    store.replace_month(YELLOW, JAN, lake, "jan.parquet")
    write_month(lake, "big.parquet", "2021-01", BIG, seed=8)

    def terminate_mid_copy():
        (pid,) = wait_for(lambda: sessions(postgres_db_url, COPYING), "the COPY")
        with psycopg.connect(postgres_db_url, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(%s)", [pid])

    killer = threading.Thread(target=terminate_mid_copy)
    killer.start()
    with pytest.raises(PostgresError) as error:
        store.replace_month(YELLOW, JAN, lake, "big.parquet")
    killer.join(timeout=60)

    message = str(error.value)
    # The real error first (not the failed rollback), with the month and the server, password masked.
    assert message.startswith(f"loading nyc_taxi.yellow_trips 2021-01: Postgres at {redact(url)} failed: ")
    assert "server closed the connection unexpectedly" in message and "rollback" not in message
    assert "postgres:***@" in message and "pl4nted" not in message + caplog.text
    assert error.value.__cause__ is None and error.value.__suppress_context__
    assert not isinstance(error.value, store.permanent_errors)  # transient: the step's retry policy tries again
    assert store.month_row_count(YELLOW, JAN) == 3 and load_tables(postgres_db_url) == []

    assert store.replace_month(YELLOW, JAN, lake, "big.parquet").rows == BIG  # a normal run afterwards
    assert month_rows(postgres_db_url, "2021-01") == BIG


PASSWORD_FORMS = {
    "url": "postgresql://taxi:pl4nted-pw@127.0.0.1:{port}/nyc?connect_timeout=2",
    "query": "postgresql://taxi@127.0.0.1:{port}/nyc?password=pl4nted-pw&connect_timeout=2",
    "keywords": "host=127.0.0.1 port={port} user=taxi password=pl4nted-pw dbname=nyc connect_timeout=2",
    "quoted keywords": "host=127.0.0.1 port={port} user=taxi password='pl4nted \\' pw' dbname=nyc connect_timeout=2",
    "unencoded @": "postgresql://taxi:pl4nted@pw@127.0.0.1:{port}/nyc?connect_timeout=2",
}


@pytest.mark.fault_case("Postgres unreachable")
@pytest.mark.parametrize("form", PASSWORD_FORMS)
def test_an_unreachable_server_is_named_with_the_month_and_no_password(lake, form):
    port = free_port()  # nothing listens there
    store = PostgresStore(url=PASSWORD_FORMS[form].format(port=port))
    write_month(lake, "jan.parquet", "2021-01", 3)
    with pytest.raises(PostgresError) as error:
        store.replace_month(YELLOW, JAN, lake, "jan.parquet")
    message = str(error.value)
    assert message.startswith(
        f"loading nyc_taxi.yellow_trips 2021-01: cannot connect to Postgres at {redact(store.url)}"
    )
    assert f'connection to server at "127.0.0.1", port {port} failed: Connection refused' in message  # the right host
    assert "pl4nted" not in message and " pw" not in message and "pw@" not in message
    assert "***" in message


@pytest.mark.fault_case("DuckDB load killed")
def test_a_killed_duckdb_load_leaves_the_previous_month_and_nothing_else(lake, tmp_path):
    database = tmp_path / "warehouse.duckdb"
    write_month(lake, "jan.parquet", "2021-01", 3)
    DuckDBWarehouse(database=str(database)).replace_month(YELLOW, JAN, lake, "jan.parquet")
    write_month(lake, "big.parquet", "2021-01", 1_000_000, seed=9)
    size = database.stat().st_size
    child = start_child(f"duckdb:{database}", lake, "big.parquet", "2021-01", tmp_path / "killed.log")
    wal = tmp_path / "warehouse.duckdb.wal"
    # A big insert writes its row groups to the file as it goes (the WAL gets them at commit).
    wait_for(lambda: database.stat().st_size > size or wal.exists() or child.poll() is not None, "the load to write")
    child.send_signal(signal.SIGKILL)
    assert child.wait(timeout=30) == -signal.SIGKILL  # killed before it finished

    with duckdb.connect(str(database), read_only=True) as conn:
        tables = conn.execute("SELECT table_name, table_type FROM information_schema.tables ORDER BY 1").fetchall()
        (rows,) = conn.execute("SELECT count(*) FROM nyc_taxi.yellow_trips").fetchone()
    assert tables == [("yellow_trips", "VIEW"), ("yellow_trips_2021_01", "BASE TABLE")]
    assert rows == 3


@pytest.fixture
def small_disk(tmp_path):
    """A 300 MB tmpfs (root only): a disk that fills up."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300m", "tmpfs", str(mount)]).returncode:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        yield mount
    finally:
        stop_server(mount / "postgres")
        subprocess.run(["umount", "-l", str(mount)], check=True)


@pytest.mark.fault_case("Embedded Postgres disk full")
def test_a_full_disk_is_a_permanent_error_naming_the_folder_and_the_month_loads_once_space_is_back(lake, small_disk):
    data_dir = small_disk / "postgres"
    store = PostgresStore(embedded_dir=str(data_dir))
    write_month(lake, "jan.parquet", "2021-01", 3)
    store.replace_month(YELLOW, JAN, lake, "jan.parquet")
    write_month(lake, "big.parquet", "2021-01", BIG, seed=10)
    filler = small_disk / "filler"  # all but 20 MB of the disk: the month needs more
    subprocess.run(["fallocate", "-l", f"{shutil.disk_usage(small_disk).free - 20 * 2**20}", str(filler)], check=True)

    with pytest.raises(PostgresDiskFull) as error:
        store.replace_month(YELLOW, JAN, lake, "big.parquet")
    assert isinstance(error.value, store.permanent_errors)  # the step fails at once, no retry
    assert str(error.value).startswith(
        f"loading nyc_taxi.yellow_trips 2021-01: the embedded Postgres' folder {data_dir} is full; free space and run"
    )
    assert "No space left on device" in str(error.value)

    filler.unlink()  # space is back: a normal run (starting the server again if it went down) loads the month
    assert store.replace_month(YELLOW, JAN, lake, "big.parquet").rows == BIG
    assert store.month_row_count(YELLOW, JAN) == BIG
