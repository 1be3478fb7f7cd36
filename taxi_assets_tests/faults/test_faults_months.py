"""Faults that would silently replace a good month with a bad one: a source file with no trips (only its header,
or every pickup outside the month), one far smaller than the month it replaces, and a clean parquet file in the
lake cut short or with a garbage footer. Each fails its step at once naming the file, and every store keeps the
good month; a run tagged ``taxi/allow_shrink=true`` lands a shrink that is real."""

import datetime
import gzip
import os

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from taxi_assets.assets.guards import ALLOW_SHRINK_TAG
from taxi_assets.definitions import build_defs
from taxi_assets.fake_source import read_manifest, source_header, tlc_schema, write_fake_month
from taxi_assets.services import MIRROR, SERVICES, TLC
from taxi_assets.targets import load_target
from taxi_assets_tests.conftest import run_job
from taxi_assets_tests.stores import counts_in_every_store, duckdb_rows, postgres_rows

SERVICE, MONTH, JOB = "green", "2021-01", "green_trips_job"
EVERY_STORE = ("lake", "duckdb", "postgres")
FORCED = {ALLOW_SHRINK_TAG: "true"}


def run(defs: dg.Definitions, tags: dict | None = None, assets: list[str] | None = None) -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def(JOB).execute_in_process(
        partition_key=MONTH,
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
        tags=tags,
        asset_selection=[dg.AssetKey.from_user_string(a) for a in assets] if assets else None,
    )


def failures(result: dg.ExecuteInProcessResult) -> dict[str, str]:
    """The failed steps and their messages; asserts that no step was retried (a permanent error)."""
    events = result.all_events
    assert [e.step_key for e in events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY] == []
    return {
        e.step_key: e.step_failure_data.error.to_string()
        for e in events
        if e.event_type == dg.DagsterEventType.STEP_FAILURE
    }


def lake_path(data_dir, *, raw: bool = False):
    service = SERVICES[SERVICE]
    layout = MIRROR if os.environ.get("TAXI_SOURCE") == "mirror" else TLC
    return data_dir / "lake" / (service.raw_key(MONTH, layout) if raw else service.clean_key(MONTH))


def kept_of(folder, layout) -> int:
    return read_manifest(folder)["files"][SERVICES[SERVICE].source_path(MONTH, layout)]["kept"]


def assert_refused(result, data_dir, kept: int, previous: int | None, good_file: bytes | None) -> None:
    """The month's cleaning failed at once naming the raw file and both counts; no clean file changed."""
    assert not result.success
    (message,) = failures(result).values()
    assert list(failures(result)) == ["green__clean_trips"]
    held = "is not in the lake yet" if previous is None else f"holds {previous:,} rows"
    assert f"{lake_path(data_dir, raw=True)}: cleaning kept {kept:,} rows for {MONTH}" in message
    assert f"and {lake_path(data_dir)} {held}" in message
    assert f"run tag {ALLOW_SHRINK_TAG}=true" in message
    clean = lake_path(data_dir)
    assert (clean.read_bytes() if clean.exists() else None) == good_file
    assert [p.name for p in clean.parent.iterdir() if p.name.startswith(".")] == []  # no staging file left
    assert [e.asset_key.to_user_string() for e in result.get_asset_materialization_events()] == ["green/raw_trips"]


def write_header_only_csv(path) -> None:
    with gzip.open(path, "wt", newline="") as out:
        out.write(",".join(source_header(SERVICE)) + "\n")


def write_header_only_parquet(path) -> None:
    pq.write_table(tlc_schema(SERVICE, MONTH).empty_table(), path)


@pytest.mark.fault_case("Header-only CSV.gz replaces a good month")
def test_a_header_only_mirror_file_never_replaces_a_good_month(local_env, mirror_copy):
    defs, url, kept = build_defs(load_target()), os.environ["TAXI_POSTGRES_URL"], kept_of(mirror_copy, MIRROR)
    run_job(defs, JOB, MONTH)
    good_file = lake_path(local_env).read_bytes()

    write_header_only_csv(mirror_copy / SERVICES[SERVICE].source_path(MONTH, MIRROR))
    result = run(defs)

    assert_refused(result, local_env, 0, kept, good_file)
    assert "(of 0 read)" in failures(result)["green__clean_trips"]
    assert counts_in_every_store(local_env, url, SERVICE, MONTH) == dict.fromkeys(EVERY_STORE, kept)
    assert run(defs, tags=FORCED).success
    assert counts_in_every_store(local_env, url, SERVICE, MONTH) == dict.fromkeys(EVERY_STORE, 0)


@pytest.mark.fault_case("Header-only parquet replaces a good month")
def test_a_parquet_file_with_no_rows_never_replaces_a_good_month(tlc_env, tlc_copy):
    defs, url, kept = build_defs(load_target()), os.environ["TAXI_POSTGRES_URL"], kept_of(tlc_copy, TLC)
    run_job(defs, JOB, MONTH)
    good_file = lake_path(tlc_env).read_bytes()

    write_header_only_parquet(tlc_copy / SERVICES[SERVICE].source_path(MONTH, TLC))
    result = run(defs)

    assert_refused(result, tlc_env, 0, kept, good_file)
    assert counts_in_every_store(tlc_env, url, SERVICE, MONTH) == dict.fromkeys(EVERY_STORE, kept)


@pytest.mark.fault_case("Every pickup outside the month")
def test_a_file_whose_every_pickup_is_outside_the_month_never_replaces_it(tlc_env, tlc_copy):
    defs, url, kept = build_defs(load_target()), os.environ["TAXI_POSTGRES_URL"], kept_of(tlc_copy, TLC)
    run_job(defs, JOB, MONTH)
    good_file = lake_path(tlc_env).read_bytes()
    path = tlc_copy / SERVICES[SERVICE].source_path(MONTH, TLC)
    table = pq.read_table(path)
    a_year = pa.scalar(datetime.timedelta(days=366), pa.duration("us"))
    for name in ("lpep_pickup_datetime", "lpep_dropoff_datetime"):  # a year later, as the next year's file would be
        index = table.schema.get_field_index(name)
        table = table.set_column(index, name, pc.add(table.column(name), a_year))
    pq.write_table(table, path)

    result = run(defs)

    assert_refused(result, tlc_env, 0, kept, good_file)
    assert f"(of {table.num_rows:,} read)" in failures(result)["green__clean_trips"]
    assert counts_in_every_store(tlc_env, url, SERVICE, MONTH) == dict.fromkeys(EVERY_STORE, kept)


@pytest.mark.fault_case("Month far below the month it replaces")
def test_a_month_far_smaller_than_the_one_it_replaces_needs_the_tag(tlc_env, tlc_copy):
    defs, url, kept = build_defs(load_target()), os.environ["TAXI_POSTGRES_URL"], kept_of(tlc_copy, TLC)
    run_job(defs, JOB, MONTH)
    good_file = lake_path(tlc_env).read_bytes()
    smaller = write_fake_month(tlc_copy, SERVICE, MONTH, rows=1_000, seed=5)  # a third of the month
    assert 0 < smaller["kept"] < kept / 2

    result = run(defs)

    assert_refused(result, tlc_env, smaller["kept"], kept, good_file)
    assert counts_in_every_store(tlc_env, url, SERVICE, MONTH) == dict.fromkeys(EVERY_STORE, kept)
    assert run(defs, tags=FORCED).success
    assert counts_in_every_store(tlc_env, url, SERVICE, MONTH) == dict.fromkeys(EVERY_STORE, smaller["kept"])


@pytest.mark.fault_case("First load of an empty month")
def test_a_first_load_of_an_empty_month_is_refused_unless_tagged(tlc_env, tlc_copy):
    url = os.environ["TAXI_POSTGRES_URL"]
    write_header_only_parquet(tlc_copy / SERVICES[SERVICE].source_path(MONTH, TLC))
    defs = build_defs(load_target())

    result = run(defs)

    assert_refused(result, tlc_env, 0, None, None)
    assert run(defs, tags=FORCED).success
    assert counts_in_every_store(tlc_env, url, SERVICE, MONTH) == dict.fromkeys(EVERY_STORE, 0)


def _cut_in_half(path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garbage_data_page(path) -> None:
    """The header of the first column's first data page overwritten: the footer is sound, the data is not."""
    offset = pq.ParquetFile(path).metadata.row_group(0).column(0).data_page_offset
    data = bytearray(path.read_bytes())
    data[offset : offset + 16] = b"\xff" * 16
    path.write_bytes(bytes(data))


def _garbage_footer(path) -> None:
    """The footer's bytes overwritten, its length and magic bytes left: a file that still looks like parquet."""
    data = path.read_bytes()
    length = int.from_bytes(data[-8:-4], "little")
    path.write_bytes(data[: -8 - length] + b"\x8f" * length + data[-8:])


@pytest.mark.parametrize(
    "corrupt, error",
    [
        (_cut_in_half, "Parquet magic bytes not found"),
        (_garbage_footer, "not a readable parquet file"),
        (_garbage_data_page, "the parquet file cannot be read"),
    ],
    ids=["cut-in-half", "garbage-footer", "garbage-data-page"],
)
@pytest.mark.fault_case("Corrupt clean parquet in the lake")
def test_a_corrupt_clean_file_fails_each_load_at_once_and_keeps_the_tables_month(tlc_env, corrupt, error):
    defs, url = build_defs(load_target()), os.environ["TAXI_POSTGRES_URL"]
    run_job(defs, JOB, MONTH)
    kept = counts_in_every_store(tlc_env, url, SERVICE, MONTH)["lake"]
    corrupt(lake_path(tlc_env))

    result = run(defs, assets=["green/warehouse_trips", "green/postgres_trips"])

    assert not result.success
    messages = failures(result)
    assert sorted(messages) == ["green__postgres_trips", "green__warehouse_trips"]
    for message in messages.values():
        assert f"{lake_path(tlc_env)}: " in message
        assert error in message
    table = SERVICES[SERVICE].table_name
    assert (duckdb_rows(tlc_env, table, MONTH), postgres_rows(url, table, MONTH)) == (kept, kept)
    # Cleaning the month again replaces the corrupt file (nothing to compare it with), then every store loads it.
    assert run(defs).success
    assert counts_in_every_store(tlc_env, url, SERVICE, MONTH) == dict.fromkeys(EVERY_STORE, kept)
