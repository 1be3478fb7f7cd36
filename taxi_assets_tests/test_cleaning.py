"""Cleaning rules on hand-made rows: every quirk of the real files, with exact expected counts and values."""

import gzip
from datetime import datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from taxi_assets.cleaning import apply_drop_rules, check_source_file, clean_lookup_file, clean_trips_file, read_batches
from taxi_assets.months import Month
from taxi_assets.services import FHV, GREEN, TAXI_ZONES, YELLOW, ContractError

JAN = Month.parse("2021-01")
YELLOW_HEADER = (
    "VendorID,tpep_pickup_datetime,tpep_dropoff_datetime,passenger_count,trip_distance,RatecodeID,"
    "store_and_fwd_flag,PULocationID,DOLocationID,payment_type,fare_amount,extra,mta_tax,tip_amount,tolls_amount,"
    "improvement_surcharge,total_amount,congestion_surcharge"
)


def yellow_row(
    pickup="2021-01-10 10:00:00",
    dropoff="2021-01-10 10:20:00",
    vendor="1.0",
    passengers="1.0",
    distance="2.1",
    fare="8.0",
    total="11.8",
) -> str:
    return (
        f"{vendor},{pickup},{dropoff},{passengers},{distance},1.0,N,142.0,43.0,2.0,{fare},3.0,0.5,0.0,0.0,0.3,"
        f"{total},2.5"
    )


def write_gz(tmp_path, lines: list[str], name="trips.csv.gz"):
    path = tmp_path / name
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    return path


# (row, rule that drops it or None when kept)
YELLOW_CASES = [
    (yellow_row(), None),
    (",2021-01-15 10:00:00,2021-01-15 10:20:00,,5.5,,,100.0,200.0,,20.0,0,0.5,0,0,0.3,23.3,2.5", None),  # blanks
    (yellow_row(passengers="0.0", distance="0.0"), None),  # zero passengers, zero distance
    (yellow_row(fare="-5.0", total="-5.8"), None),  # a refund
    (yellow_row(pickup="2021-01-01 00:00:00", dropoff="2021-01-01 00:10:00"), None),  # first second of the month
    (yellow_row(dropoff="3019-01-10 10:20:00"), None),  # far future dropoff: kept, no overflow
    (yellow_row(dropoff=""), None),  # no dropoff: nothing to compare
    (yellow_row(pickup="2008-12-31 23:59:59", dropoff="2009-01-01 00:05:00"), "pickup_outside_month"),
    (yellow_row(pickup="2088-01-01 00:00:00", dropoff="2088-01-01 00:30:00"), "pickup_outside_month"),
    (yellow_row(pickup="2021-02-01 00:00:00", dropoff="2021-02-01 00:10:00"), "pickup_outside_month"),  # end excluded
    (yellow_row(pickup="", dropoff="2021-01-10 10:20:00"), "pickup_outside_month"),
    (yellow_row(pickup="2020-12-31 23:50:00", dropoff="2020-12-31 23:40:00"), "pickup_outside_month"),  # both: first
    (yellow_row(pickup="2021-01-20 12:00:00", dropoff="2021-01-20 11:00:00"), "dropoff_before_pickup"),
]


def test_yellow_month_keeps_and_drops_exactly_the_rule_breakers(tmp_path):
    source = write_gz(tmp_path, [YELLOW_HEADER, *(row for row, _ in YELLOW_CASES)])
    dest = tmp_path / "clean.parquet"

    report = clean_trips_file(source, dest, YELLOW, JAN.start, JAN.end)

    assert report.rows_read == 13
    assert report.dropped == {"pickup_outside_month": 5, "dropoff_before_pickup": 1}
    assert report.rows_written == 7
    table = pq.read_table(dest)
    assert table.schema.equals(YELLOW.schema, check_metadata=False)
    assert table.num_rows == 7
    rows = table.to_pylist()
    assert rows[0]["vendor_id"] == 1 and rows[0]["passenger_count"] == 1 and rows[0]["pu_location_id"] == 142
    assert rows[0]["pickup_datetime"] == datetime(2021, 1, 10, 10, 0)
    blank = rows[1]
    assert [
        blank[c] for c in ("vendor_id", "passenger_count", "ratecode_id", "store_and_fwd_flag", "payment_type")
    ] == [None] * 5
    assert (rows[2]["passenger_count"], rows[2]["trip_distance"]) == (0, 0.0)
    assert (rows[3]["fare_amount"], rows[3]["total_amount"]) == (-5.0, -5.8)
    assert rows[5]["dropoff_datetime"] == datetime(3019, 1, 10, 10, 20)
    assert rows[6]["dropoff_datetime"] is None
    assert all(r["airport_fee"] is None for r in rows)  # optional column absent from the file: nulls
    assert [r["congestion_surcharge"] for r in rows] == [2.5] * 7


def test_drop_rules_count_each_row_under_its_first_rule():
    pickup = pa.array([datetime(2021, 1, 5), datetime(2020, 12, 5), None, datetime(2021, 1, 6)], pa.timestamp("us"))
    dropoff = pa.array([datetime(2021, 1, 4), datetime(2020, 12, 4), datetime(2021, 1, 1), None], pa.timestamp("us"))
    batch = pa.RecordBatch.from_arrays([pickup, dropoff], names=["pickup_datetime", "dropoff_datetime"])

    kept, dropped = apply_drop_rules(batch, YELLOW, JAN.start, JAN.end)

    assert dropped == {"pickup_outside_month": 2, "dropoff_before_pickup": 1}
    assert kept.column("pickup_datetime").to_pylist() == [datetime(2021, 1, 6)]


def test_the_same_file_always_gives_the_same_schema_whatever_the_month_holds(tmp_path):
    """A month whose optional columns are blank or absent still has the canonical types (never null-typed)."""
    no_congestion = YELLOW_HEADER.rsplit(",", 1)[0]
    source = write_gz(tmp_path, [no_congestion, yellow_row().rsplit(",", 1)[0]])
    batches = list(read_batches(source, YELLOW))
    assert batches[0].schema.equals(YELLOW.schema, check_metadata=False)
    assert batches[0].column("congestion_surcharge").to_pylist() == [None]


def test_green_headers_and_always_blank_ehail_fee(tmp_path):
    header = (
        "VendorID,lpep_pickup_datetime,lpep_dropoff_datetime,store_and_fwd_flag,RatecodeID,PULocationID,"
        "DOLocationID,passenger_count,trip_distance,fare_amount,extra,mta_tax,tip_amount,tolls_amount,ehail_fee,"
        "improvement_surcharge,total_amount,payment_type,trip_type,congestion_surcharge"
    )
    row = "2.0,2021-01-03 08:00:00,2021-01-03 08:15:00,N,1.0,74.0,41.0,1.0,1.2,6.5,0.0,0.5,0.0,0.0,,0.3,7.3,2.0,1.0,0.0"
    source = write_gz(tmp_path, [header, row])
    report = clean_trips_file(source, tmp_path / "g.parquet", GREEN, JAN.start, JAN.end)
    (record,) = pq.read_table(tmp_path / "g.parquet").to_pylist()
    assert report.rows_written == 1
    assert record["ehail_fee"] is None and record["trip_type"] == 1 and record["vendor_id"] == 2
    assert pq.read_schema(tmp_path / "g.parquet").field("ehail_fee").type == pa.float64()


def test_fhv_odd_header_casing_and_float_written_flags(tmp_path):
    header = (
        "dispatching_base_num,pickup_datetime,dropOff_datetime,PUlocationID,DOlocationID,SR_Flag,Affiliated_base_number"
    )
    rows = [
        "B00009,2019-02-01 00:08:44,2019-02-01 00:23:35,264.0,265.0,,B00009",
        "B00013,2019-02-01 00:01:00,3019-02-01 00:30:00,,,1.0,",
        "B00014,2019-02-03 10:00:00,2019-02-03 10:10:00,10,11,1,B00014",
    ]
    source = write_gz(tmp_path, [header, *rows])
    feb = Month.parse("2019-02")
    report = clean_trips_file(source, tmp_path / "f.parquet", FHV, feb.start, feb.end)
    records = pq.read_table(tmp_path / "f.parquet").to_pylist()
    assert report.rows_written == 3 and report.rows_dropped == 0
    assert [r["sr_flag"] for r in records] == [None, "1", "1"]
    assert [r["pu_location_id"] for r in records] == [264, None, 10]
    assert records[1]["dropoff_datetime"] == datetime(3019, 2, 1, 0, 30)
    assert records[1]["affiliated_base_number"] is None


def test_airport_fee_casing_variants_map_to_one_column(tmp_path):
    for spelling in ("airport_fee", "Airport_fee"):
        source = write_gz(tmp_path, [f"{YELLOW_HEADER},{spelling}", f"{yellow_row()},1.25"], name=f"{spelling}.csv.gz")
        (batch,) = read_batches(source, YELLOW)
        assert batch.column("airport_fee").to_pylist() == [1.25]


def test_unknown_column_names_the_file_and_the_column(tmp_path):
    source = write_gz(tmp_path, [f"{YELLOW_HEADER},surprise_fee", f"{yellow_row()},1.0"])
    with pytest.raises(
        ContractError, match=r"trips\.csv\.gz: column 'surprise_fee' is not in the yellow data contract"
    ):
        list(read_batches(source, YELLOW))


def test_missing_required_column_names_the_file_and_the_column(tmp_path):
    header = YELLOW_HEADER.replace("tpep_dropoff_datetime,", "")
    row = yellow_row().replace(",2021-01-10 10:20:00,", ",", 1)
    source = write_gz(tmp_path, [header, row])
    with pytest.raises(ContractError, match=r"trips\.csv\.gz: required column\(s\) 'dropoff_datetime' missing"):
        list(read_batches(source, YELLOW))


def test_fractional_value_in_an_integer_column_is_an_error_naming_the_column(tmp_path):
    source = write_gz(tmp_path, [YELLOW_HEADER, yellow_row(passengers="1.5")])
    with pytest.raises(ContractError, match=r"trips\.csv\.gz: column 'passenger_count'"):
        list(read_batches(source, YELLOW))


def test_text_in_a_timestamp_column_is_an_error_naming_the_file(tmp_path):
    source = write_gz(tmp_path, [YELLOW_HEADER, yellow_row(pickup="yesterday")])
    with pytest.raises(ContractError, match=r"trips\.csv\.gz: .*tpep_pickup_datetime"):
        list(read_batches(source, YELLOW))


def test_empty_file_is_an_error(tmp_path):
    source = write_gz(tmp_path, [""])
    with pytest.raises(ContractError, match="empty"):
        list(read_batches(source, YELLOW))


def test_a_cut_gzip_stream_is_an_error_naming_the_url(tmp_path):
    # raw_trips downloads a CSV.gz without a gzip decoder of its own: this check's decoder must catch a cut file.
    whole = write_gz(tmp_path, [YELLOW_HEADER] + [yellow_row()] * 2000).read_bytes()
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes(whole[: len(whole) - 40])
    with pytest.raises(ContractError, match=r"^http://mirror/y\.csv\.gz: the gzip stream is truncated"):
        check_source_file(cut, YELLOW, "http://mirror/y.csv.gz")


def test_bytes_that_are_not_deflate_data_are_an_error_naming_the_url(tmp_path):
    broken = bytearray(write_gz(tmp_path, [YELLOW_HEADER, yellow_row()]).read_bytes())
    broken[10] = 0xFF  # the first deflate block after the 10-byte gzip header: block type 3 does not exist
    path = tmp_path / "broken.csv.gz"
    path.write_bytes(bytes(broken))
    with pytest.raises(ContractError, match=r"^http://mirror/y\.csv\.gz: not a valid gzip file \(.*inflate failed"):
        check_source_file(path, YELLOW, "http://mirror/y.csv.gz")


def test_zone_lookup_keeps_text_like_n_a(tmp_path):
    source = tmp_path / "taxi_zone_lookup.csv"
    source.write_text(
        '"LocationID","Borough","Zone","service_zone"\n1,"EWR","Newark Airport","EWR"\n'
        '264,"Unknown","NV","N/A"\n265,"Unknown","NA","N/A"\n'
    )
    report = clean_lookup_file(source, tmp_path / "zones.parquet", TAXI_ZONES)
    table = pq.read_table(tmp_path / "zones.parquet")
    assert report.rows_written == 3
    assert table.column("location_id").to_pylist() == [1, 264, 265]
    assert table.column("service_zone").to_pylist() == ["EWR", "N/A", "N/A"]
    assert table.column("zone").to_pylist() == ["Newark Airport", "NV", "NA"]
