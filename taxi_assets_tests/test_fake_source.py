"""The offline fake TLC source: real headers, the real files' quirks, determinism, an honest manifest, the CLI.

Every count in the manifest is checked against a recount made here with the csv module, independently of the
generator's numpy arrays.
"""

from __future__ import annotations

import csv
import gzip
import os
import re
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from taxi_assets import fake_source
from taxi_assets.cli import main
from taxi_assets.fake_source import (
    MIN_ROWS,
    read_manifest,
    realistic_rows,
    source_header,
    write_fake_month,
    write_fake_source,
)
from taxi_assets.services import SERVICES

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
    write_fake_source(folder, ["yellow", "green", "fhv"], ["2019-02", "2021-01"], rows=3_000, seed=11)
    return folder


def test_headers_are_the_real_files_headers(source):
    for service, header in REAL_HEADERS.items():
        for month in ("2019-02", "2021-01"):
            with gzip.open(source / SERVICES[service].source_path(month), "rt") as f:
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
    relative = SERVICES[service].source_path(month)
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
        write_fake_source(folder, ["yellow", "green", "fhv"], ["2021-01"], rows=500, seed=seed)
        return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}

    first, again, other = files(tmp_path / "a", 3), files(tmp_path / "b", 3), files(tmp_path / "c", 4)
    assert first == again
    assert first.keys() == other.keys()
    assert first["yellow/yellow_tripdata_2021-01.csv.gz"] != other["yellow/yellow_tripdata_2021-01.csv.gz"]
    assert first["misc/taxi_zone_lookup.csv"] == other["misc/taxi_zone_lookup.csv"]  # zones do not depend on seed


def test_chunks_keep_every_quirk_and_every_count(tmp_path, monkeypatch):
    monkeypatch.setattr(fake_source, "CHUNK_ROWS", 700)  # five chunks, quirk rows spread over them
    for service in ("yellow", "fhv"):
        entry = write_fake_month(tmp_path, service, "2021-03", rows=3_333, seed=5)
        recount = _recount(tmp_path / entry["path"], service, "2021-03")
        assert {key: entry[key] for key in recount} == recount
        assert recount["rows"] == 3_333
    assert set(read_manifest(tmp_path)["files"]) == {
        "yellow/yellow_tripdata_2021-03.csv.gz",
        "fhv/fhv_tripdata_2021-03.csv.gz",
    }


def test_manifest_keeps_months_written_earlier(tmp_path):
    write_fake_source(tmp_path, ["green"], ["2021-01"], rows=100)
    manifest = write_fake_source(tmp_path, ["green", "fhv"], ["2021-02"], rows=200)
    assert manifest == read_manifest(tmp_path)
    assert {path: e["rows"] for path, e in manifest["files"].items()} == {
        "green/green_tripdata_2021-01.csv.gz": 100,
        "green/green_tripdata_2021-02.csv.gz": 200,
        "fhv/fhv_tripdata_2021-02.csv.gz": 200,
    }
    assert manifest["zones"] == {"path": "misc/taxi_zone_lookup.csv", "rows": 265, "bytes": manifest["zones"]["bytes"]}
    assert read_manifest(tmp_path / "nothing-here") == {"files": {}}


def test_default_and_realistic_row_counts(tmp_path):
    assert write_fake_month(tmp_path, "green", "2021-01")["rows"] == fake_source.DEFAULT_ROWS == 10_000
    assert realistic_rows("yellow", "2021-01") == 1_369_765
    assert realistic_rows("yellow", "2019-03") == 7_832_545
    assert realistic_rows("green", "2021-01") == 76_518
    assert realistic_rows("fhv", "2021-01") == 1_154_112
    assert 6_000_000 < realistic_rows("yellow", "2019-07") < 9_000_000
    assert realistic_rows("green", "2030-05") == realistic_rows("green", "2021-05")  # nearest known year


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"service": "purple"}, "unknown service 'purple'"),
        ({"month": "2021-1"}, "malformed month '2021-1'"),
        ({"month": "2021-13"}, "malformed month"),
        ({"rows": MIN_ROWS - 1}, f"at least {MIN_ROWS}"),
        ({"rows": 100, "realistic": True}, "either rows or realistic"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_arguments_are_value_errors(tmp_path, kwargs, message):
    arguments = {"service": "yellow", "month": "2021-01", "rows": 100, **kwargs}
    with pytest.raises(ValueError, match=re.escape(message)):
        write_fake_month(tmp_path, **arguments)
    assert not any(tmp_path.rglob("*.csv.gz"))


def test_cli_writes_the_files_and_prints_them(tmp_path, capsys):
    out = tmp_path / "mirror"
    assert main(["fake-source", "--out", str(out), "--services", "green,fhv", "--months", "2020-12..2021-02",
                 "--rows", "50", "--seed", "2"]) == 0  # fmt: skip
    printed = capsys.readouterr().out.splitlines()
    months = ["2020-12", "2021-01", "2021-02"]
    expected = [f"{out / SERVICES[s].source_path(m)}\t50" for s in ("green", "fhv") for m in months]
    assert printed == [*expected, f"{out / 'misc/taxi_zone_lookup.csv'}\t265"]
    assert sorted(read_manifest(out)["files"]) == sorted(
        SERVICES[s].source_path(m) for s in ("green", "fhv") for m in months
    )


def test_cli_as_a_console_script(tmp_path):
    script = shutil.which("taxi-assets") or str(Path(sys.executable).parent / "taxi-assets")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    args = [script, "fake-source", "--out", str(tmp_path), "--services", "yellow", "--months", "2021-01,2021-03"]
    result = subprocess.run([*args, "--rows", "40"], check=False, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[:2] == [
        f"{tmp_path / 'yellow/yellow_tripdata_2021-01.csv.gz'}\t40",
        f"{tmp_path / 'yellow/yellow_tripdata_2021-03.csv.gz'}\t40",
    ]
    assert _recount(tmp_path / "yellow/yellow_tripdata_2021-03.csv.gz", "yellow", "2021-03")["rows"] == 40


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
    ],
)
def test_cli_rejects_bad_arguments_naming_them(tmp_path, capsys, arguments, named):
    with pytest.raises(SystemExit) as exit_info:
        main(["fake-source", "--out", str(tmp_path), *arguments])
    assert exit_info.value.code == 2
    assert named in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
