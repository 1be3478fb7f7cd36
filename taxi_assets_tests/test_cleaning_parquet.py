"""Cleaning the TLC's parquet files: every drift of the published files, each on its own, lands in the one
canonical schema; bad files fail with an error that names the file and the column."""

from datetime import datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from taxi_assets.cleaning import check_source_file, clean_trips_file, read_header
from taxi_assets.months import Month
from taxi_assets.services import FHV, FHVHV, YELLOW, ContractError

JAN = Month.parse("2021-01")
PICKUPS = [datetime(2021, 1, 5, 8), datetime(2021, 1, 6, 9), datetime(2020, 12, 31, 23)]  # the last: outside
DROPOFFS = [datetime(2021, 1, 5, 8, 30), datetime(3019, 1, 6, 9), datetime(2021, 1, 1, 0, 10)]
US = pa.timestamp("us")


def yellow_columns(**overrides: pa.Array) -> dict[str, pa.Array]:
    """The 18 columns of a yellow TLC parquet file of three trips, in its DOUBLE era; ``overrides`` replace or
    add columns (``None`` removes one)."""
    columns = {
        "VendorID": pa.array([1, 2, 2], pa.int64()),
        "tpep_pickup_datetime": pa.array(PICKUPS, US),
        "tpep_dropoff_datetime": pa.array(DROPOFFS, US),
        "passenger_count": pa.array([1.0, None, 3.0]),
        "trip_distance": pa.array([1.5, 0.0, 2.25]),
        "RatecodeID": pa.array([1.0, 1.0, None]),
        "store_and_fwd_flag": pa.array(["N", None, "Y"]),
        "PULocationID": pa.array([142, 236, 1], pa.int64()),
        "DOLocationID": pa.array([43, 132, 265], pa.int64()),
        "payment_type": pa.array([1, 2, 0], pa.int64()),
        **{name: pa.array([10.0, -5.0, 2.5]) for name in ("fare_amount", "total_amount")},
        **{name: pa.array([0.5, 0.5, 0.0]) for name in ("extra", "mta_tax", "improvement_surcharge")},
        **{name: pa.array([2.0, 0.0, 0.0]) for name in ("tip_amount", "tolls_amount", "congestion_surcharge")},
    }
    columns.update(overrides)
    return {name: values for name, values in columns.items() if values is not None}


def write_parquet(tmp_path, columns: dict[str, pa.Array], name: str = "yellow_tripdata_2021-01.parquet"):
    path = tmp_path / name
    pq.write_table(pa.table(columns), path, row_group_size=2)  # several row groups, as the TLC's files have
    return path


def clean(tmp_path, source, contract=YELLOW) -> tuple[dict, pa.Table]:
    dest = tmp_path / "clean.parquet"
    report = clean_trips_file(source, dest, contract, JAN.start, JAN.end)
    table = pq.read_table(dest)
    assert table.schema.equals(contract.schema)  # the one canonical schema, whatever the file's types
    return {"read": report.rows_read, "kept": report.rows_written, **report.dropped}, table


KEPT_TWO = {"read": 3, "kept": 2, "pickup_outside_month": 1, "dropoff_before_pickup": 0}


@pytest.mark.parametrize(
    "drift",
    [
        {},  # integers as DOUBLE (2018-07 .. 2023-01)
        {"passenger_count": pa.array([1, None, 3], pa.int64()), "RatecodeID": pa.array([1, 1, None], pa.int64())},
        {
            "VendorID": pa.array([1, 2, 2], pa.int32()),
            "PULocationID": pa.array([142, 236, 1], pa.int32()),
            "DOLocationID": pa.array([43, 132, 265], pa.int32()),
            "passenger_count": pa.array([1, None, 3], pa.int64()),
            "RatecodeID": pa.array([1, 1, None], pa.int64()),
        },
    ],
    ids=["double-era", "int64-era", "int32-era"],
)
def test_integer_columns_of_every_era_land_as_int64(tmp_path, drift):
    counts, table = clean(tmp_path, write_parquet(tmp_path, yellow_columns(**drift)))
    assert counts == KEPT_TWO
    rows = table.select(["vendor_id", "passenger_count", "ratecode_id", "pu_location_id", "do_location_id"])
    assert rows.to_pylist() == [
        {"vendor_id": 1, "passenger_count": 1, "ratecode_id": 1, "pu_location_id": 142, "do_location_id": 43},
        {"vendor_id": 2, "passenger_count": None, "ratecode_id": 1, "pu_location_id": 236, "do_location_id": 132},
    ]


def test_a_null_typed_column_lands_as_nulls_of_the_contract_type(tmp_path):
    source = write_parquet(tmp_path, yellow_columns(congestion_surcharge=pa.nulls(3), airport_fee=pa.nulls(3)))
    assert pq.read_schema(source).field("airport_fee").type == pa.null()
    _, table = clean(tmp_path, source)
    assert table.column("congestion_surcharge").to_pylist() == [None, None]
    assert table.column("airport_fee").to_pylist() == [None, None]


@pytest.mark.parametrize("spelling", ["airport_fee", "Airport_fee"])
def test_both_spellings_of_airport_fee_land_in_airport_fee(tmp_path, spelling):
    _, table = clean(tmp_path, write_parquet(tmp_path, yellow_columns(**{spelling: pa.array([1.75, 0.0, 1.75])})))
    assert table.column("airport_fee").to_pylist() == [1.75, 0.0]


def test_a_pandas_index_column_is_ignored(tmp_path):
    source = write_parquet(tmp_path, yellow_columns(__index_level_0__=pa.array([7, 8, 9])))
    assert "__index_level_0__" not in read_header(source)
    counts, _ = clean(tmp_path, source)
    assert counts == KEPT_TWO


def test_timestamps_far_outside_the_pandas_range_are_kept_to_the_microsecond(tmp_path):
    dropoffs = [datetime(2021, 1, 5, 8, 30, 0, 123456), datetime(3019, 1, 6, 9), datetime(2021, 1, 1, 0, 10)]
    source = write_parquet(tmp_path, yellow_columns(tpep_dropoff_datetime=pa.array(dropoffs, US)))
    _, table = clean(tmp_path, source)
    assert table.column("dropoff_datetime").to_pylist() == dropoffs[:2]


def test_cbd_congestion_fee_is_read_when_present_and_null_before_it_existed(tmp_path):
    before = write_parquet(tmp_path, yellow_columns(), "before.parquet")
    _, table = clean(tmp_path, before)
    assert table.column("cbd_congestion_fee").to_pylist() == [None, None]
    with_fee = write_parquet(tmp_path, yellow_columns(cbd_congestion_fee=pa.array([0.75, 0.0, 0.75])), "2025.parquet")
    _, table = clean(tmp_path, with_fee)
    assert table.column("cbd_congestion_fee").to_pylist() == [0.75, 0.0]


def test_a_reissued_month_with_other_physical_types_cleans_to_identical_rows(tmp_path):
    first = write_parquet(tmp_path, yellow_columns(), "first.parquet")
    reissued = write_parquet(
        tmp_path,
        yellow_columns(
            passenger_count=pa.array([1, None, 3], pa.int32()),
            payment_type=pa.array([1.0, 2.0, 0.0]),
            VendorID=pa.array([1.0, 2.0, 2.0]),
        ),
        "reissued.parquet",
    )
    assert clean(tmp_path, first)[1].equals(clean(tmp_path, reissued)[1])


def test_fhv_codes_stored_as_numbers_become_the_same_text_as_the_csv(tmp_path):
    source = write_parquet(
        tmp_path,
        {
            "dispatching_base_num": pa.array(["B00001", "B00002", "B00003"]),
            "pickup_datetime": pa.array(PICKUPS, US),
            "dropOff_datetime": pa.array(DROPOFFS, US),
            "PUlocationID": pa.array([1.0, None, 3.0]),
            "DOlocationID": pa.array([4.0, 5.0, 6.0]),
            "SR_Flag": pa.array([1.0, None, None]),
            "Affiliated_base_number": pa.nulls(3),
        },
    )
    counts, table = clean(tmp_path, source, FHV)
    assert counts == KEPT_TWO
    assert table.select(["pu_location_id", "sr_flag", "affiliated_base_number"]).to_pylist() == [
        {"pu_location_id": 1, "sr_flag": "1", "affiliated_base_number": None},
        {"pu_location_id": None, "sr_flag": None, "affiliated_base_number": None},
    ]


def fhvhv_columns() -> dict[str, pa.Array]:
    texts = {name: pa.array(["N", "N", "Y"]) for name in FHVHV.schema.names if name.endswith("_flag")}
    money = ("base_passenger_fare", "tolls", "bcf", "sales_tax", "congestion_surcharge", "tips", "driver_pay")
    return {
        "hvfhs_license_num": pa.array(["HV0003", "HV0005", "HV0003"]),
        "dispatching_base_num": pa.array(["B03404", "B03406", "B03404"]),
        "originating_base_num": pa.array(["B03404", None, "B03404"]),
        "request_datetime": pa.array(PICKUPS, US),
        "on_scene_datetime": pa.nulls(3, US),
        "pickup_datetime": pa.array(PICKUPS, US),
        "dropoff_datetime": pa.array(DROPOFFS, US),
        "PULocationID": pa.array([132, 138, 1], pa.int64()),
        "DOLocationID": pa.array([48, 50, 265], pa.int64()),
        "trip_miles": pa.array([17.5, 2.0, 0.3]),
        "trip_time": pa.array([1800, 600, 60], pa.int64()),
        **{name: pa.array([30.0, 8.5, 0.0]) for name in money},
        "airport_fee": pa.array([2.5, None, None]),
        **texts,
        "wav_match_flag": pa.nulls(3),
    }


def test_fhvhv_lands_in_its_contract(tmp_path):
    counts, table = clean(tmp_path, write_parquet(tmp_path, fhvhv_columns()), FHVHV)
    assert counts == KEPT_TWO
    assert table.num_columns == 25  # the TLC's 24 columns and cbd_congestion_fee
    first = table.to_pylist()[0]
    assert (first["hvfhs_license_num"], first["trip_time"], first["airport_fee"], first["wav_match_flag"]) == (
        "HV0003",
        1800,
        2.5,
        None,
    )


# -- bad files: an error that names the file (the URL, when checked after a download) and the column ---------


def test_a_fractional_value_in_an_integer_column_is_an_error_naming_the_column(tmp_path):
    source = write_parquet(tmp_path, yellow_columns(passenger_count=pa.array([1.0, 1.5, 2.0])))
    with pytest.raises(ContractError, match=r"^http://tlc/y\.parquet: column 'passenger_count' does not fit int64"):
        check_source_file(source, YELLOW, "http://tlc/y.parquet")
    with pytest.raises(ContractError, match="column 'passenger_count' does not fit int64.*truncated"):
        clean(tmp_path, source)


def test_a_column_the_contract_does_not_know_is_an_error_naming_it(tmp_path):
    source = write_parquet(tmp_path, yellow_columns(mystery_fee=pa.array([1.0, 2.0, 3.0])))
    with pytest.raises(ContractError, match="http://tlc/y.parquet: column 'mystery_fee' is not in the yellow"):
        check_source_file(source, YELLOW, "http://tlc/y.parquet")


@pytest.mark.parametrize(
    "damage",
    [lambda data: data[: len(data) // 2], lambda data: b"PAR1" + b"\0" * 100, lambda data: b"VendorID,x\n1,2\n"],
    ids=["truncated", "garbage-after-magic", "csv-not-parquet"],
)
def test_a_damaged_file_is_an_error_naming_it(tmp_path, damage):
    good = write_parquet(tmp_path, yellow_columns())
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(damage(good.read_bytes()))
    with pytest.raises(ContractError, match=r"^http://tlc/bad\.parquet: "):
        check_source_file(bad, YELLOW, "http://tlc/bad.parquet")
