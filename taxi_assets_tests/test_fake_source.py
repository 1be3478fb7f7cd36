"""The offline fake TLC source: real headers, the real files' quirks and drifts, determinism, an honest manifest,
the CLI.

Every count in the manifest is checked against a recount made here from the written file (the csv module for
the mirror's CSV.gz, pyarrow for the TLC's parquet), independently of the generator's numpy arrays.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import math
import os
import re
import shutil
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from taxi_assets import fake_source
from taxi_assets.cli import main
from taxi_assets.fake_source import (
    INDEX_COLUMN,
    MIN_ROWS,
    read_manifest,
    realistic_rows,
    source_header,
    tlc_schema,
    write_fake_month,
    write_fake_source,
)
from taxi_assets.services import MIRROR, SERVICES, TLC

REPO_ROOT = Path(__file__).resolve().parents[1]

REAL_HEADERS = {
    "yellow": "VendorID,tpep_pickup_datetime,tpep_dropoff_datetime,passenger_count,trip_distance,RatecodeID,"
    "store_and_fwd_flag,PULocationID,DOLocationID,payment_type,fare_amount,extra,mta_tax,tip_amount,tolls_amount,"
    "improvement_surcharge,total_amount,congestion_surcharge",
    "green": "VendorID,lpep_pickup_datetime,lpep_dropoff_datetime,store_and_fwd_flag,RatecodeID,PULocationID,"
    "DOLocationID,passenger_count,trip_distance,fare_amount,extra,mta_tax,tip_amount,tolls_amount,ehail_fee,"
    "improvement_surcharge,total_amount,payment_type,trip_type,congestion_surcharge",
    "fhv": "dispatching_base_num,pickup_datetime,dropOff_datetime,PUlocationID,DOlocationID,SR_Flag,"
    "Affiliated_base_number",
}
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
FLOAT_CODE = re.compile(r"^\d+\.0$")
EPOCH = datetime(1970, 1, 1)


def _read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with gzip.open(path, "rt", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        return header, [dict(zip(header, row, strict=True)) for row in reader]


def _recount(path: Path, service: str, month: str) -> dict:
    """The manifest's counts, recomputed from the CSV text alone."""
    header, rows = _read(path)
    pickup_col, dropoff_col = header[1], header[2]
    start = datetime.strptime(month, "%Y-%m")
    end = start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
    counts = dict.fromkeys(
        ["pickup_outside_month", "dropoff_before_pickup", "kept", "dropoff_year_3019", "null_passenger_count",
         "zero_passenger_count", "zero_trip_distance", "negative_fare_amount", "negative_total_amount",
         "blank_vendor_rows", "congestion_surcharge_blank", "ehail_fee_blank", "null_pu_location_id", "sr_flag_set"],
        0,
    )  # fmt: skip
    years: dict[str, int] = {}
    for row in rows:
        assert TIMESTAMP.match(row[pickup_col]) and TIMESTAMP.match(row[dropoff_col]), row
        pickup = datetime.strptime(row[pickup_col], "%Y-%m-%d %H:%M:%S")
        dropoff = datetime.strptime(row[dropoff_col], "%Y-%m-%d %H:%M:%S")
        if not start <= pickup < end:
            counts["pickup_outside_month"] += 1
            years[str(pickup.year)] = years.get(str(pickup.year), 0) + 1
        elif dropoff < pickup:
            counts["dropoff_before_pickup"] += 1
        else:
            counts["kept"] += 1
        counts["dropoff_year_3019"] += dropoff.year == 3019
        if service == "fhv":
            counts["null_pu_location_id"] += row["PUlocationID"] == ""
            counts["sr_flag_set"] += row["SR_Flag"] == "1"
            continue
        counts["null_passenger_count"] += row["passenger_count"] == ""
        counts["zero_passenger_count"] += row["passenger_count"] == "0.0"
        counts["zero_trip_distance"] += float(row["trip_distance"]) == 0
        counts["negative_fare_amount"] += float(row["fare_amount"]) < 0
        counts["negative_total_amount"] += float(row["total_amount"]) < 0
        codes = ("VendorID", "passenger_count", "RatecodeID", "store_and_fwd_flag", "payment_type")
        counts["blank_vendor_rows"] += all(row[c] == "" for c in codes)
        counts["congestion_surcharge_blank"] += row["congestion_surcharge"] == ""
        counts["ehail_fee_blank"] += row.get("ehail_fee") == ""
    return {"rows": len(rows), **counts, "pickup_outside_month_years": dict(sorted(years.items()))}


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fake-tlc")
    write_fake_source(folder, ["yellow", "green", "fhv"], ["2019-02", "2021-01"], rows=3_000, seed=11, layout="mirror")
    return folder


def test_headers_are_the_real_files_headers(source):
    for service, header in REAL_HEADERS.items():
        for month in ("2019-02", "2021-01"):
            with gzip.open(source / SERVICES[service].source_path(month, MIRROR), "rt") as f:
                assert f.readline() == header + "\n"
        assert source_header(service) == header.split(",")


def test_zone_lookup_is_quoted_like_the_real_file(source):
    lines = (source / "misc" / "taxi_zone_lookup.csv").read_text().splitlines()
    assert lines[0] == '"LocationID","Borough","Zone","service_zone"'
    rows = list(csv.reader(lines[1:]))
    assert [int(r[0]) for r in rows] == list(range(1, 266))
    assert rows[0] == ["1", "EWR", "Newark Airport", "EWR"]
    assert [r[1] for r in rows[263:]] == ["Unknown", "Unknown"] and {r[2] for r in rows[263:]} == {"N/A", ""}
    assert {r[1] for r in rows} == {"EWR", "Manhattan", "Queens", "Brooklyn", "Bronx", "Staten Island", "Unknown"}
    assert len({r[2] for r in rows[:263]}) == 263  # zone names are distinct
    assert lines[2].startswith('2,"') and lines[2].endswith('"')


@pytest.mark.parametrize("service", ["yellow", "green", "fhv"])
@pytest.mark.parametrize("month", ["2019-02", "2021-01"])
def test_manifest_counts_what_the_file_holds(source, service, month):
    relative = SERVICES[service].source_path(month, MIRROR)
    entry = read_manifest(source)["files"][relative]
    recount = _recount(source / relative, service, month)

    assert {key: entry[key] for key in recount} == recount
    assert entry["rows"] == 3_000 and entry["service"] == service and entry["month"] == month
    assert entry["kept"] == entry["rows"] - entry["pickup_outside_month"] - entry["dropoff_before_pickup"]
    assert entry["bytes"] == (source / relative).stat().st_size
    # the quirks every month has
    assert entry["pickup_outside_month"] >= 5 and entry["dropoff_before_pickup"] >= 2
    previous = str(int(month[:4]) - (month[5:] == "01"))  # the year of the month before
    assert {"2008", "2009", "2088", previous} <= set(entry["pickup_outside_month_years"])
    if service == "fhv":
        assert entry["dropoff_year_3019"] == 1  # kept: its pickup is in the month, its dropoff after it
        assert 0 < entry["sr_flag_set"] < entry["rows"] // 10 and entry["null_pu_location_id"] > 0
    else:
        assert entry["dropoff_year_3019"] == 0
        for key in ("null_passenger_count", "zero_passenger_count", "zero_trip_distance", "negative_total_amount"):
            assert entry[key] > 0, key
        assert entry["blank_vendor_rows"] == entry["null_passenger_count"]
        assert entry["congestion_surcharge_blank"] == (entry["rows"] if month < "2019-04" else 0)
        assert entry["ehail_fee_blank"] == (entry["rows"] if service == "green" else 0)


def test_quirk_rows_look_like_the_real_ones(source):
    _, yellow = _read(source / "yellow/yellow_tripdata_2021-01.csv.gz")
    int_columns = ("VendorID", "passenger_count", "RatecodeID", "PULocationID", "DOLocationID", "payment_type")
    for column in int_columns:
        assert all(FLOAT_CODE.match(r[column]) for r in yellow if r[column]), column
    assert any(r["fare_amount"].endswith(".0") for r in yellow)  # whole amounts printed like pandas: 8.0
    assert any(r["fare_amount"].startswith("-") and r["total_amount"].startswith("-") for r in yellow)
    _, green = _read(source / "green/green_tripdata_2021-01.csv.gz")
    assert all(r["ehail_fee"] == "" for r in green)
    assert all(FLOAT_CODE.match(r["trip_type"]) for r in green if r["trip_type"])
    _, fhv = _read(source / "fhv/fhv_tripdata_2019-02.csv.gz")
    assert {r["SR_Flag"] for r in fhv} == {"", "1"}
    (late,) = [r for r in fhv if r["dropOff_datetime"].startswith("3019-")]
    assert late["pickup_datetime"].startswith("2019-02-")
    assert all(FLOAT_CODE.match(r["PUlocationID"]) for r in fhv if r["PUlocationID"])


def test_same_seed_writes_the_same_bytes_and_another_seed_does_not(tmp_path):
    def files(folder: Path, seed: int) -> dict[str, bytes]:
        write_fake_source(folder, ["yellow", "green", "fhv"], ["2021-01"], rows=500, seed=seed, layout="mirror")
        return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}

    first, again, other = files(tmp_path / "a", 3), files(tmp_path / "b", 3), files(tmp_path / "c", 4)
    assert first == again
    assert first.keys() == other.keys()
    assert first["yellow/yellow_tripdata_2021-01.csv.gz"] != other["yellow/yellow_tripdata_2021-01.csv.gz"]
    assert first["misc/taxi_zone_lookup.csv"] == other["misc/taxi_zone_lookup.csv"]  # zones do not depend on seed


def test_chunks_keep_every_quirk_and_every_count(tmp_path, monkeypatch):
    monkeypatch.setattr(fake_source, "CHUNK_ROWS", 700)  # five chunks, quirk rows spread over them
    for service in ("yellow", "fhv"):
        entry = write_fake_month(tmp_path, service, "2021-03", rows=3_333, seed=5, layout="mirror")
        recount = _recount(tmp_path / entry["path"], service, "2021-03")
        assert {key: entry[key] for key in recount} == recount
        assert recount["rows"] == 3_333
    assert set(read_manifest(tmp_path)["files"]) == {
        "yellow/yellow_tripdata_2021-03.csv.gz",
        "fhv/fhv_tripdata_2021-03.csv.gz",
    }


def test_manifest_keeps_months_written_earlier(tmp_path):
    write_fake_source(tmp_path, ["green"], ["2021-01"], rows=100, layout="mirror")
    manifest = write_fake_source(tmp_path, ["green", "fhv"], ["2021-02"], rows=200, layout="mirror")
    assert manifest == read_manifest(tmp_path)
    assert {path: e["rows"] for path, e in manifest["files"].items()} == {
        "green/green_tripdata_2021-01.csv.gz": 100,
        "green/green_tripdata_2021-02.csv.gz": 200,
        "fhv/fhv_tripdata_2021-02.csv.gz": 200,
    }
    assert manifest["zones"] == {"path": "misc/taxi_zone_lookup.csv", "rows": 265, "bytes": manifest["zones"]["bytes"]}
    assert read_manifest(tmp_path / "nothing-here") == {"files": {}}


def test_default_and_realistic_row_counts(tmp_path):
    entry = write_fake_month(tmp_path, "green", "2021-01")
    assert entry["rows"] == fake_source.DEFAULT_ROWS == 10_000
    assert entry["path"] == "trip-data/green_tripdata_2021-01.parquet"  # the tlc layout is the default
    assert realistic_rows("yellow", "2021-01") == 1_369_765
    assert realistic_rows("yellow", "2019-03") == 7_832_545
    assert realistic_rows("green", "2021-01") == 76_518
    assert realistic_rows("fhv", "2021-01") == 1_154_112
    assert 6_000_000 < realistic_rows("yellow", "2019-07") < 9_000_000
    assert realistic_rows("green", "2030-05") == realistic_rows("green", "2021-05")  # nearest known year
    assert 10_000_000 < realistic_rows("fhvhv", "2021-06") < 25_000_000


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"service": "purple"}, "unknown service 'purple'"),
        ({"month": "2021-1"}, "malformed month '2021-1'"),
        ({"month": "2021-13"}, "malformed month"),
        ({"rows": MIN_ROWS - 1}, f"at least {MIN_ROWS}"),
        ({"rows": 100, "realistic": True}, "either rows or realistic"),
        ({"seed": -1}, "seed"),
        ({"layout": "csv"}, "unknown layout 'csv'"),
        ({"service": "fhvhv", "layout": "mirror"}, MIRROR.missing_reason),
        ({"layout": "mirror", "reissue": True}, "reissue=True needs the tlc layout"),
    ],
)
def test_bad_arguments_are_value_errors(tmp_path, kwargs, message):
    arguments = {"service": "yellow", "month": "2021-01", "rows": 100, **kwargs}
    with pytest.raises(ValueError, match=re.escape(message)):
        write_fake_month(tmp_path, **arguments)
    assert not any(tmp_path.iterdir())


def test_the_mirror_has_no_fhvhv(tmp_path):
    with pytest.raises(ValueError, match=re.escape(MIRROR.missing_reason)):
        write_fake_source(tmp_path, ["yellow", "fhvhv"], ["2021-01"], rows=50, layout="mirror")
    assert not any(tmp_path.iterdir())  # checked before anything is written
    with pytest.raises(ValueError, match=re.escape(MIRROR.missing_reason)):
        source_header("fhvhv")


# --------------------------------------------------------------------------------------------------------------
# The TLC layout: parquet files with each era's drifts

TLC_MONTHS = {
    "yellow": ["2018-06", "2019-02", "2021-01", "2022-05", "2023-02", "2024-01", "2025-01"],
    "green": ["2019-02", "2023-12", "2024-01", "2025-01"],
    "fhv": ["2019-02", "2020-03", "2022-05", "2023-01"],
    "fhvhv": ["2019-02", "2020-01", "2021-01", "2025-01"],
}
TLC_FILES = [(service, month) for service, months in TLC_MONTHS.items() for month in months]
I32, I64, F64, STR, NULL = pa.int32(), pa.int64(), pa.float64(), pa.string(), pa.null()
TLC_ROWS = 2_000

# The physical types the drift table of the module docstring promises, written out month by month.
EXPECTED_TYPES = {
    ("yellow", "2018-06"): {"VendorID": I64, "PULocationID": I64, "passenger_count": I64, "RatecodeID": I64,
                            "payment_type": I64, "airport_fee": NULL},
    ("yellow", "2019-02"): {"VendorID": I64, "passenger_count": F64, "RatecodeID": F64, "payment_type": F64,
                            "airport_fee": NULL},
    ("yellow", "2021-01"): {"VendorID": I64, "passenger_count": F64, "airport_fee": F64},
    ("yellow", "2022-05"): {"passenger_count": F64, "DOLocationID": I64, "airport_fee": F64, INDEX_COLUMN: I64},
    ("yellow", "2023-02"): {"VendorID": I32, "PULocationID": I32, "DOLocationID": I32, "passenger_count": I64,
                            "RatecodeID": I64, "payment_type": I64, "airport_fee": F64},
    ("yellow", "2024-01"): {"VendorID": I32, "passenger_count": I64, "Airport_fee": F64},
    ("yellow", "2025-01"): {"VendorID": I32, "Airport_fee": F64, "cbd_congestion_fee": F64},
    ("green", "2019-02"): {"VendorID": I64, "passenger_count": F64, "RatecodeID": F64, "payment_type": F64,
                           "trip_type": F64, "ehail_fee": NULL},
    ("green", "2023-12"): {"passenger_count": F64, "trip_type": F64, "ehail_fee": NULL},
    ("green", "2024-01"): {"VendorID": I64, "passenger_count": I64, "RatecodeID": I64, "payment_type": I64,
                           "trip_type": I64, "ehail_fee": NULL},
    ("green", "2025-01"): {"passenger_count": I64, "ehail_fee": NULL, "cbd_congestion_fee": F64},
    ("fhv", "2019-02"): {"PUlocationID": F64, "DOlocationID": F64, "SR_Flag": F64},
    ("fhv", "2020-03"): {"PUlocationID": F64, "SR_Flag": NULL},
    ("fhv", "2022-05"): {"PUlocationID": F64, "SR_Flag": NULL, INDEX_COLUMN: I64},
    ("fhv", "2023-01"): {"PUlocationID": I64, "DOlocationID": I64, "SR_Flag": NULL},
    ("fhvhv", "2019-02"): {"PULocationID": I64, "trip_time": I64, "airport_fee": NULL, "wav_match_flag": NULL},
    ("fhvhv", "2020-01"): {"airport_fee": NULL, "wav_match_flag": STR},
    ("fhvhv", "2021-01"): {"airport_fee": F64, "wav_match_flag": STR, "trip_miles": F64},
    ("fhvhv", "2025-01"): {"airport_fee": F64, "cbd_congestion_fee": F64},
}  # fmt: skip
FHVHV_COLUMNS = [
    "hvfhs_license_num", "dispatching_base_num", "originating_base_num", "request_datetime", "on_scene_datetime",
    "pickup_datetime", "dropoff_datetime", "PULocationID", "DOLocationID", "trip_miles", "trip_time",
    "base_passenger_fare", "tolls", "bcf", "sales_tax", "congestion_surcharge", "airport_fee", "tips", "driver_pay",
    "shared_request_flag", "shared_match_flag", "access_a_ride_flag", "wav_request_flag", "wav_match_flag",
]  # fmt: skip
# The integer columns whose type a reissue swaps.
DRIFTING = {
    "yellow": {"VendorID", "passenger_count", "RatecodeID", "PULocationID", "DOLocationID", "payment_type"},
    "green": {"passenger_count", "RatecodeID", "payment_type", "trip_type"},
    "fhv": {"PUlocationID", "DOlocationID"},
    "fhvhv": {"PULocationID", "DOLocationID"},
}


@pytest.fixture(scope="module")
def tlc(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fake-tlc-parquet")
    for service, months in TLC_MONTHS.items():
        write_fake_source(folder, [service], months, rows=TLC_ROWS, seed=11)
    return folder


def _tlc_path(folder: Path, service: str, month: str) -> Path:
    return folder / SERVICES[service].source_path(month, TLC)


def _contract_names(path: Path, service: str) -> dict[str, str]:
    """Contract column name -> the file's spelling of it."""
    names = [n for n in pq.read_schema(path).names if n != INDEX_COLUMN]
    return {column.name: name for name, column in SERVICES[service].match_header(names, str(path)).items()}


def _recount_parquet(path: Path, service: str, month: str) -> dict:
    """The manifest's counts, recomputed from the parquet file alone."""
    table = pq.read_table(path)
    spelled = _contract_names(path, service)
    pickup, dropoff = (
        pc.cast(table[spelled[f"{end}_datetime"]], pa.int64()).to_numpy() for end in ("pickup", "dropoff")
    )
    start = datetime.strptime(month, "%Y-%m")
    end = start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
    inside = (pickup >= _micros(start)) & (pickup < _micros(end))
    first = inside & (dropoff < pickup)
    years: dict[str, int] = {}
    for value in pickup[~inside]:
        year = str((EPOCH + timedelta(microseconds=int(value))).year)
        years[year] = years.get(year, 0) + 1

    def nulls(name: str) -> int:
        return table[spelled[name]].null_count

    def where(name: str, compare, value: float) -> int:
        return int(pc.sum(compare(table[name], value)).as_py() or 0)

    counts = {
        "rows": table.num_rows,
        "pickup_outside_month": int((~inside).sum()),
        "dropoff_before_pickup": int(first.sum()),
        "kept": int((inside & ~first).sum()),
        "dropoff_year_3019": int((dropoff >= _micros(datetime(3000, 1, 1))).sum()),
        "pickup_outside_month_years": dict(sorted(years.items())),
        "bytes": path.stat().st_size,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }
    if service in ("yellow", "green"):
        counts["null_passenger_count"] = nulls("passenger_count")
        counts["zero_trip_distance"] = where("trip_distance", pc.equal, 0)
        counts["negative_total_amount"] = where("total_amount", pc.less, 0)
        counts["congestion_surcharge_blank"] = nulls("congestion_surcharge")
        counts["ehail_fee_blank"] = nulls("ehail_fee") if service == "green" else 0
    elif service == "fhv":
        counts["null_pu_location_id"] = nulls("pu_location_id")
        counts["sr_flag_set"] = table.num_rows - nulls("sr_flag")
    else:
        counts["zero_trip_distance"] = where("trip_miles", pc.equal, 0)
        counts["negative_fare_amount"] = where("base_passenger_fare", pc.less, 0)
    return counts


def _micros(when: datetime) -> int:
    return (when - EPOCH) // timedelta(microseconds=1)


def test_tlc_files_have_the_era_types(tlc):
    for (service, month), expected in EXPECTED_TYPES.items():
        schema = pq.read_schema(_tlc_path(tlc, service, month))
        assert {name: schema.field(name).type for name in expected} == expected, (service, month)
        # every timestamp is INT64 microseconds, every other column has one of the TLC's types
        for field in schema:
            if "datetime" in field.name:
                assert field.type == pa.timestamp("us"), (service, month, field.name)
            else:
                assert field.type in (I32, I64, F64, STR, NULL), (service, month, field.name)


def test_tlc_files_have_the_schema_tlc_schema_describes(tlc):
    assert {(s, m) for s, m in EXPECTED_TYPES} == set(TLC_FILES)
    for service, month in TLC_FILES:
        written = pq.read_schema(_tlc_path(tlc, service, month))
        assert written.equals(tlc_schema(service, month), check_metadata=False), (service, month)


def test_optional_columns_appear_in_their_months_only(tlc):
    for service, month in TLC_FILES:
        names = pq.read_schema(_tlc_path(tlc, service, month)).names
        assert ("cbd_congestion_fee" in names) == (service != "fhv" and month >= "2025-01"), (service, month)
        if "cbd_congestion_fee" in names:
            assert [n for n in names if n != INDEX_COLUMN][-1] == "cbd_congestion_fee"  # the newest column goes last
        assert (INDEX_COLUMN in names) == (service in ("yellow", "fhv") and month.startswith("2022"))
        assert INDEX_COLUMN not in names[:-1]  # pandas writes its index last
        if service == "yellow":
            spelling = "Airport_fee" if month >= "2024-01" else "airport_fee"
            assert [n for n in names if n.lower() == "airport_fee"] == [spelling], month


def test_the_index_column_numbers_the_rows(tlc):
    for service in ("yellow", "fhv"):
        index = pq.read_table(_tlc_path(tlc, service, "2022-05"), columns=[INDEX_COLUMN])[INDEX_COLUMN]
        assert index.to_pylist() == list(range(TLC_ROWS))


def test_every_tlc_column_is_in_the_contract(tlc):
    for service, month in TLC_FILES:
        names = [n for n in pq.read_schema(_tlc_path(tlc, service, month)).names if n != INDEX_COLUMN]
        SERVICES[service].match_header(names, f"{service} {month}")  # raises ContractError on any stranger
    # and every month of every era, reissued or not, down to the schemas
    for service in SERVICES:
        for year in range(2011, 2027):
            for number in range(1, 13):
                for reissue in (False, True):
                    names = tlc_schema(service, f"{year}-{number:02d}", reissue=reissue).names
                    SERVICES[service].match_header([n for n in names if n != INDEX_COLUMN], f"{service} {year}")


def test_fhvhv_has_its_24_columns_and_cbd_from_2025(tlc):
    for month in TLC_MONTHS["fhvhv"]:
        names = pq.read_schema(_tlc_path(tlc, "fhvhv", month)).names
        assert names == FHVHV_COLUMNS + (["cbd_congestion_fee"] if month >= "2025-01" else []), month
    table = pq.read_table(_tlc_path(tlc, "fhvhv", "2021-01"))
    licenses = table["hvfhs_license_num"].to_pylist()
    assert set(licenses) == {"HV0002", "HV0003", "HV0004", "HV0005"}
    for flag in FHVHV_COLUMNS[-5:]:
        assert set(table[flag].to_pylist()) == {"N", "Y"}, flag
    on_scene = table["on_scene_datetime"].to_pylist()
    assert all((when is None) == (license_ != "HV0003") for when, license_ in zip(on_scene, licenses, strict=True))
    assert 0 < table["originating_base_num"].null_count < table.num_rows
    assert pc.all(pc.less_equal(table["request_datetime"], table["pickup_datetime"])).as_py()
    assert pc.min(table["trip_time"]).as_py() >= 0
    assert set(table["airport_fee"].to_pylist()) == {0.0, 2.5}
    assert table.num_rows == TLC_ROWS


def test_null_typed_columns_hold_no_value(tlc):
    for service, month, column in [("yellow", "2019-02", "airport_fee"), ("green", "2024-01", "ehail_fee"),
                                   ("fhv", "2020-03", "SR_Flag"), ("fhvhv", "2019-02", "airport_fee"),
                                   ("fhvhv", "2019-02", "wav_match_flag")]:  # fmt: skip
        values = pq.read_table(_tlc_path(tlc, service, month), columns=[column])[column]
        assert values.type == NULL and values.null_count == TLC_ROWS, (service, month, column)
    sr_flag = pq.read_table(_tlc_path(tlc, "fhv", "2019-02"), columns=["SR_Flag"])["SR_Flag"]
    assert set(sr_flag.to_pylist()) == {1.0, None}
    airport = pq.read_table(_tlc_path(tlc, "yellow", "2024-01"), columns=["Airport_fee"])["Airport_fee"]
    assert {1.75, 0.0} <= set(airport.to_pylist()) <= {1.75, 0.0, -1.75}


def test_timestamps_are_microseconds_beyond_pandas_range(tlc):
    fhv = pq.read_table(_tlc_path(tlc, "fhv", "2019-02"))
    (late,) = [row for row in fhv.to_pylist() if row["dropOff_datetime"].year == 3019]
    assert late["pickup_datetime"].strftime("%Y-%m") == "2019-02"
    parquet_type = pq.ParquetFile(_tlc_path(tlc, "fhv", "2019-02")).schema.column(2)
    assert parquet_type.physical_type == "INT64" and "timeUnit=microseconds" in str(parquet_type.logical_type)
    pickups = pq.read_table(_tlc_path(tlc, "yellow", "2021-01"))["tpep_pickup_datetime"].to_pylist()
    assert {2008, 2009, 2088} <= {p.year for p in pickups}


@pytest.mark.parametrize("service, month", TLC_FILES)
def test_tlc_manifest_counts_what_the_file_holds(tlc, service, month):
    relative = SERVICES[service].source_path(month, TLC)
    entry = read_manifest(tlc)["files"][relative]
    recount = _recount_parquet(tlc / relative, service, month)

    assert {key: entry[key] for key in recount} == recount
    assert entry["layout"] == "tlc" and entry["reissue"] is False
    assert entry["header"] == pq.read_schema(tlc / relative).names
    assert entry["kept"] == entry["rows"] - entry["pickup_outside_month"] - entry["dropoff_before_pickup"]
    assert entry["pickup_outside_month"] >= 5 and entry["dropoff_before_pickup"] >= 2
    assert entry["dropoff_year_3019"] == (1 if service == "fhv" else 0)


def test_tlc_and_mirror_hold_the_same_values(tmp_path):
    for service, month in [("yellow", "2021-01"), ("green", "2019-02"), ("fhv", "2019-02")]:
        tlc_entry = write_fake_month(tmp_path, service, month, rows=800, seed=9)
        mirror_entry = write_fake_month(tmp_path, service, month, rows=800, seed=9, layout="mirror")
        same = set(fake_source._COUNT_KEYS) | {"rows", "pickup_outside_month_years"}
        assert {k: tlc_entry[k] for k in same} == {k: mirror_entry[k] for k in same}

        table = pq.read_table(tmp_path / tlc_entry["path"])
        _, rows = _read(tmp_path / mirror_entry["path"])
        for name in mirror_entry["header"]:
            parquet = table[name].to_pylist()
            if pa.types.is_timestamp(table[name].type):
                parquet = [when.strftime("%Y-%m-%d %H:%M:%S") for when in parquet]
                assert parquet == [row[name] for row in rows], name
            elif pa.types.is_floating(table[name].type) or pa.types.is_integer(table[name].type):
                assert parquet == [float(row[name]) if row[name] else None for row in rows], name
            else:
                assert parquet == [row[name] or None for row in rows], name


def test_big_months_get_several_row_groups(tmp_path, monkeypatch):
    monkeypatch.setattr(fake_source, "CHUNK_ROWS", 700)  # five chunks: two row groups of up to four chunks
    for service, month in [("yellow", "2022-03"), ("fhvhv", "2021-03")]:
        entry = write_fake_month(tmp_path, service, month, rows=3_333, seed=5)
        path = tmp_path / entry["path"]
        metadata = pq.ParquetFile(path).metadata
        assert metadata.num_row_groups == math.ceil(math.ceil(3_333 / 700) / fake_source.ROW_GROUP_CHUNKS) == 2
        assert [metadata.row_group(i).num_rows for i in range(2)] == [2_800, 533]
        recount = _recount_parquet(path, service, month)
        assert {key: entry[key] for key in recount} == recount
    index = pq.read_table(tmp_path / "trip-data/yellow_tripdata_2022-03.parquet")[INDEX_COLUMN]
    assert index.to_pylist() == list(range(3_333))  # one index over every chunk


@pytest.mark.parametrize(
    "service, month", [("green", "2024-01"), ("yellow", "2019-02"), ("yellow", "2023-02"), ("fhv", "2022-05"),
                       ("fhvhv", "2021-01")],
)  # fmt: skip
def test_a_reissue_changes_the_types_only(tmp_path, service, month):
    original = write_fake_month(tmp_path, service, month, rows=1_500, seed=2)
    before = pq.read_table(tmp_path / original["path"])
    reissued = write_fake_month(tmp_path, service, month, rows=1_500, seed=2, reissue=True)
    after = pq.read_table(tmp_path / reissued["path"])

    assert reissued["path"] == original["path"]  # the same month's file, published again
    changed = {
        f.name: (f.type, after.schema.field(f.name).type)
        for f in before.schema
        if f.type != after.schema.field(f.name).type
    }
    assert set(changed) == DRIFTING[service]
    assert set(changed.values()) <= {(F64, I64), (I64, F64), (I32, I64), (I64, I32)}
    assert after.schema.names == before.schema.names
    assert after.cast(before.schema).equals(before)  # the same values
    assert after.schema.equals(tlc_schema(service, month, reissue=True), check_metadata=False)
    counts = set(fake_source._COUNT_KEYS) | {"rows", "pickup_outside_month_years"}
    assert {k: reissued[k] for k in counts} == {k: original[k] for k in counts}
    recount = _recount_parquet(tmp_path / reissued["path"], service, month)
    assert {k: reissued[k] for k in recount} == recount
    assert reissued["reissue"] is True and reissued["sha256"] != original["sha256"]
    assert read_manifest(tmp_path)["files"][reissued["path"]] == reissued


def test_tlc_same_seed_writes_the_same_bytes(tmp_path):
    def file(folder: Path, seed: int) -> bytes:
        entry = write_fake_month(folder, "fhvhv", "2025-01", rows=500, seed=seed)
        return (folder / entry["path"]).read_bytes()

    assert file(tmp_path / "a", 3) == file(tmp_path / "b", 3) != file(tmp_path / "c", 4)


# --------------------------------------------------------------------------------------------------------------
# The command


def test_cli_writes_the_files_and_prints_them(tmp_path, capsys):
    out = tmp_path / "mirror"
    assert main(["fake-source", "--out", str(out), "--services", "green,fhv", "--months", "2020-12..2021-02",
                 "--rows", "50", "--seed", "2", "--layout", "mirror"]) == 0  # fmt: skip
    printed = capsys.readouterr().out.splitlines()
    months = ["2020-12", "2021-01", "2021-02"]
    expected = [f"{out / SERVICES[s].source_path(m, MIRROR)}\t50" for s in ("green", "fhv") for m in months]
    assert printed == [*expected, f"{out / 'misc/taxi_zone_lookup.csv'}\t265"]
    assert sorted(read_manifest(out)["files"]) == sorted(
        SERVICES[s].source_path(m, MIRROR) for s in ("green", "fhv") for m in months
    )


def test_cli_default_services_are_the_layouts(tmp_path, capsys):
    assert main(["fake-source", "--out", str(tmp_path / "tlc"), "--months", "2024-01", "--rows", "30"]) == 0
    assert main(["fake-source", "--out", str(tmp_path / "mirror"), "--months", "2021-01", "--rows", "30",
                 "--layout", "mirror"]) == 0  # fmt: skip
    printed = capsys.readouterr().out.splitlines()
    assert printed == [
        *(
            f"{tmp_path / 'tlc/trip-data'}/{s}_tripdata_2024-01.parquet\t30"
            for s in ("yellow", "green", "fhv", "fhvhv")
        ),
        f"{tmp_path / 'tlc/misc/taxi_zone_lookup.csv'}\t265",
        *(f"{tmp_path / 'mirror'}/{s}/{s}_tripdata_2021-01.csv.gz\t30" for s in ("yellow", "green", "fhv")),
        f"{tmp_path / 'mirror/misc/taxi_zone_lookup.csv'}\t265",
    ]


def test_cli_reissues_a_month(tmp_path, capsys):
    arguments = ["fake-source", "--out", str(tmp_path), "--services", "green", "--months", "2024-01", "--rows", "40"]
    assert main(arguments) == 0
    assert pq.read_schema(tmp_path / "trip-data/green_tripdata_2024-01.parquet").field("trip_type").type == I64
    assert main([*arguments, "--reissue"]) == 0
    assert pq.read_schema(tmp_path / "trip-data/green_tripdata_2024-01.parquet").field("trip_type").type == F64
    assert read_manifest(tmp_path)["files"]["trip-data/green_tripdata_2024-01.parquet"]["reissue"] is True


def test_cli_as_a_console_script(tmp_path):
    script = shutil.which("taxi-assets") or str(Path(sys.executable).parent / "taxi-assets")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    args = [script, "fake-source", "--out", str(tmp_path), "--services", "yellow", "--months", "2021-01,2021-03"]
    result = subprocess.run([*args, "--rows", "40"], check=False, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[:2] == [
        f"{tmp_path / 'trip-data/yellow_tripdata_2021-01.parquet'}\t40",
        f"{tmp_path / 'trip-data/yellow_tripdata_2021-03.parquet'}\t40",
    ]
    assert _recount_parquet(tmp_path / "trip-data/yellow_tripdata_2021-03.parquet", "yellow", "2021-03")["rows"] == 40


@pytest.mark.parametrize(
    "arguments, named",
    [
        (["--services", "yellow,purple", "--months", "2021-01"], "argument --services: unknown service 'purple'"),
        (["--months", "2021-13"], "argument --months: malformed month '2021-13'"),
        (["--months", "21-01"], "argument --months: malformed month '21-01'"),
        (["--months", "2021-03..2021-01"], "argument --months: range end 2021-01 is before its start 2021-03"),
        (["--months", "2021-01", "--rows", "ten"], "argument --rows"),
        (
            ["--months", "2021-01", "--rows", "100", "--realistic"],
            "argument --realistic: not allowed with argument --rows",
        ),
        (["--months", "2021-01", "--seed", "-3"], "argument --seed"),
        ([], "--months"),
        (["--months", "2021-01", "--layout", "csv"], "argument --layout: invalid choice: 'csv'"),
        (
            ["--months", "2021-01", "--layout", "mirror", "--services", "green,fhvhv"],
            f"argument --services: fhvhv not in the mirror layout: {MIRROR.missing_reason}",
        ),
        (["--months", "2021-01", "--layout", "mirror", "--reissue"], "argument --reissue: needs --layout tlc"),
    ],
)
def test_cli_rejects_bad_arguments_naming_them(tmp_path, capsys, arguments, named):
    with pytest.raises(SystemExit) as exit_info:
        main(["fake-source", "--out", str(tmp_path), *arguments])
    assert exit_info.value.code == 2
    assert named in " ".join(capsys.readouterr().err.split())  # argparse wraps long messages
    assert not any(tmp_path.iterdir())
