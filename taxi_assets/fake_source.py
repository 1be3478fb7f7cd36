"""An offline fake of the TLC source: monthly trips files in the TLC's parquet layout or the mirror's CSV.gz.

``write_fake_source(out_dir, ["yellow"], ["2021-01"])`` writes ``{out}/trip-data/yellow_tripdata_2021-01.parquet``
(the contract's ``source_path`` in the ``tlc`` layout), ``{out}/misc/taxi_zone_lookup.csv`` and
``{out}/manifest.json``, a folder that ``TAXI_TLC_URL`` can point at instead of the internet. With
``layout="mirror"`` the trips are ``{out}/yellow/yellow_tripdata_2021-01.csv.gz`` (yellow, green and fhv only:
``MIRROR.missing_reason`` says why there is no fhvhv), for ``TAXI_SOURCE=mirror`` and ``TAXI_SOURCE_URL``.
No Dagster here.

Both layouts hold the same generated values (same seed, service and month) and the real files' quirks, so
cleaning and loading meet them in tests: rows whose VendorID, passenger_count, RatecodeID, store_and_fwd_flag
and payment_type are all null, zero passengers, zero distances, voids with negative amounts, pickups outside the
month (2008, 2009, 2088 and the neighbouring months), dropoffs before pickups, an fhv dropoff in the year 3019,
``ehail_fee`` always null, ``SR_Flag`` mostly null, ``congestion_surcharge`` null before 2019-04. The mirror
writes integer codes as ``1.0``. The manifest counts these from the generated data, so a test can compare what
a pipeline reports with what the file holds.

The TLC layout also has the drifts of the real parquet files, deterministic by month (``tlc_schema(service,
month)`` is a file's exact schema). Timestamps are always INT64 microseconds (``timestamp[us]``: the year 3019
fits), amounts DOUBLE, text STRING, other integers (fhvhv ``trip_time``, seconds) INT64:

=================  ===============================================  ==============================================
service            column(s)                                        physical type by month
=================  ===============================================  ==============================================
yellow             passenger_count, RatecodeID, payment_type        DOUBLE 2018-07..2023-01, INT64 otherwise
yellow             VendorID, PULocationID, DOLocationID             INT64 until 2023-01, INT32 from 2023-02
yellow             airport_fee                                      Null type until 2020-12, DOUBLE 2021-01..2023-12,
                                                                    spelled ``Airport_fee`` (DOUBLE) from 2024-01
green              passenger_count, RatecodeID, payment_type,       DOUBLE until 2023-12, INT64 from 2024-01
                   trip_type
green              ehail_fee                                        always Null type
fhv                PUlocationID, DOlocationID                       DOUBLE until 2022-12, INT64 from 2023-01
fhv                SR_Flag                                          DOUBLE (1.0 or null) until 2020-02, Null type
                                                                    from 2020-03 (shared rides were suspended)
fhvhv              PULocationID, DOLocationID                       INT64 (DOUBLE when reissued)
fhvhv              airport_fee                                      Null type until 2020-12, DOUBLE from 2021-01
fhvhv              wav_match_flag                                   Null type in 2019, STRING (Y/N) from 2020-01
yellow, green,     cbd_congestion_fee                               absent until 2024-12, DOUBLE (the last
fhvhv                                                               column) from 2025-01
yellow, fhv        ``__index_level_0__`` (a pandas index)           INT64 0..n-1 after the last column in 2022
=================  ===============================================  ==============================================

``reissue=True`` writes a month's same values with the other type of every drifting integer column (DOUBLE <->
INT64, INT32 <-> INT64: the rows marked above with two types), as the TLC did when it re-published green
2024-01, so a test can re-materialize a month and check nothing but the types changed.

Output is deterministic: the same seed, service, month and layout give byte-identical files. Rows are
generated with numpy in chunks of ``CHUNK_ROWS``, each with its own seeded generator, so memory stays bounded
whatever the row count. The mirror's chunks are formatted by Arrow's CSV writer and streamed into one gzip
stream (compressed on a second thread); the TLC's are written with ``pyarrow.parquet.ParquetWriter``, one row
group per ``ROW_GROUP_CHUNKS`` chunks.
"""

from __future__ import annotations

import calendar
import hashlib
import json
import os
import zlib
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from taxi_assets.months import Month
from taxi_assets.services import LAYOUTS, MIRROR, SERVICES, TLC, ZONES_SOURCE_PATH, SourceLayout, TripService

DEFAULT_ROWS = 10_000
# Smallest file that still holds every quirk (5 outside-month rows, 2 dropoff-first rows, the 3019 row, 4 forced).
MIN_ROWS = 20
CHUNK_ROWS = 65_536
# A parquet row group is this many chunks (262,144 rows): big months get several, memory stays bounded.
ROW_GROUP_CHUNKS = 4
GZIP_LEVEL = 1
MANIFEST_NAME = "manifest.json"
ZONE_ROWS = 265
INDEX_COLUMN = "__index_level_0__"  # what pandas names the index it writes into a parquet file

# Row counts of real mirror files, for ``realistic=True``.
KNOWN_ROW_COUNTS: dict[tuple[str, str], int] = {
    ("yellow", "2019-03"): 7_832_545,
    ("yellow", "2021-01"): 1_369_765,
    ("green", "2021-01"): 76_518,
    ("fhv", "2021-01"): 1_154_112,
}
# Typical rows per month by service and year (rounded, order of magnitude of the real files) for other months.
TYPICAL_ROWS_BY_YEAR: dict[str, dict[int, int]] = {
    "yellow": {2019: 7_300_000, 2020: 2_000_000, 2021: 1_900_000},
    "green": {2019: 500_000, 2020: 150_000, 2021: 80_000},
    "fhv": {2019: 1_900_000, 2020: 1_100_000, 2021: 1_150_000},
    "fhvhv": {2019: 21_000_000, 2020: 13_000_000, 2021: 14_500_000, 2022: 17_500_000, 2023: 19_000_000},
}

_EPOCH = datetime(1970, 1, 1)
_DAY = 86_400

# --------------------------------------------------------------------------------------------------------------
# The real headers of the mirror's files, spellings and order as published (fhv spells ``PUlocationID``; the
# mirror's yellow and green files have no airport_fee). Checked against the data contract below.
SOURCE_HEADERS: dict[str, tuple[str, ...]] = {
    "yellow": (
        "VendorID", "tpep_pickup_datetime", "tpep_dropoff_datetime", "passenger_count", "trip_distance", "RatecodeID",
        "store_and_fwd_flag", "PULocationID", "DOLocationID", "payment_type", "fare_amount", "extra", "mta_tax",
        "tip_amount", "tolls_amount", "improvement_surcharge", "total_amount", "congestion_surcharge",
    ),
    "green": (
        "VendorID", "lpep_pickup_datetime", "lpep_dropoff_datetime", "store_and_fwd_flag", "RatecodeID",
        "PULocationID", "DOLocationID", "passenger_count", "trip_distance", "fare_amount", "extra", "mta_tax",
        "tip_amount", "tolls_amount", "ehail_fee", "improvement_surcharge", "total_amount", "payment_type",
        "trip_type", "congestion_surcharge",
    ),
    "fhv": (
        "dispatching_base_num", "pickup_datetime", "dropOff_datetime", "PUlocationID", "DOlocationID", "SR_Flag",
        "Affiliated_base_number",
    ),
}  # fmt: skip
for _name, _header in SOURCE_HEADERS.items():  # fails at import if the contract drifts from the real files
    SERVICES[_name].match_header(list(_header), f"fake {_name} header")


def source_header(service: str) -> list[str]:
    """The exact header of a mirror file of ``service``, e.g. ``["VendorID", "tpep_pickup_datetime", ...]``."""
    return list(SOURCE_HEADERS[_layout_service(service, MIRROR).name])


# --------------------------------------------------------------------------------------------------------------
# The TLC's parquet schemas, era by era (the table in the module docstring)

_I32, _I64, _F64, _STR, _NULL = pa.int32(), pa.int64(), pa.float64(), pa.string(), pa.null()
_TS = pa.timestamp("us")
CBD_FIRST_MONTH = "2025-01"
_CBD_SERVICES = ("yellow", "green", "fhvhv")
_INDEX_SERVICES, _INDEX_YEAR = ("yellow", "fhv"), "2022"
_TAXI_MONEY = ("fare_amount", "extra", "mta_tax", "tip_amount", "tolls_amount")


def _drift(in_era: bool, era_type: pa.DataType, other_type: pa.DataType, reissue: bool) -> pa.DataType:
    """``era_type`` inside the era, ``other_type`` outside it; a reissue swaps the two."""
    return era_type if in_era != reissue else other_type


def _yellow_fields(month: str, reissue: bool) -> list[tuple[str, pa.DataType]]:
    codes = _drift("2018-07" <= month <= "2023-01", _F64, _I64, reissue)
    ids = _drift(month >= "2023-02", _I32, _I64, reissue)
    airport = "Airport_fee" if month >= "2024-01" else "airport_fee"
    return [
        ("VendorID", ids), ("tpep_pickup_datetime", _TS), ("tpep_dropoff_datetime", _TS), ("passenger_count", codes),
        ("trip_distance", _F64), ("RatecodeID", codes), ("store_and_fwd_flag", _STR), ("PULocationID", ids),
        ("DOLocationID", ids), ("payment_type", codes), *((name, _F64) for name in _TAXI_MONEY),
        ("improvement_surcharge", _F64), ("total_amount", _F64), ("congestion_surcharge", _F64),
        (airport, _F64 if month >= "2021-01" else _NULL),
    ]  # fmt: skip


def _green_fields(month: str, reissue: bool) -> list[tuple[str, pa.DataType]]:
    codes = _drift(month <= "2023-12", _F64, _I64, reissue)
    return [
        ("VendorID", _I64), ("lpep_pickup_datetime", _TS), ("lpep_dropoff_datetime", _TS), ("store_and_fwd_flag", _STR),
        ("RatecodeID", codes), ("PULocationID", _I64), ("DOLocationID", _I64), ("passenger_count", codes),
        ("trip_distance", _F64), *((name, _F64) for name in _TAXI_MONEY), ("ehail_fee", _NULL),
        ("improvement_surcharge", _F64), ("total_amount", _F64), ("payment_type", codes), ("trip_type", codes),
        ("congestion_surcharge", _F64),
    ]  # fmt: skip


def _fhv_fields(month: str, reissue: bool) -> list[tuple[str, pa.DataType]]:
    zones = _drift(month <= "2022-12", _F64, _I64, reissue)
    return [
        ("dispatching_base_num", _STR), ("pickup_datetime", _TS), ("dropOff_datetime", _TS), ("PUlocationID", zones),
        ("DOlocationID", zones), ("SR_Flag", _F64 if month <= "2020-02" else _NULL), ("Affiliated_base_number", _STR),
    ]  # fmt: skip


def _fhvhv_fields(month: str, reissue: bool) -> list[tuple[str, pa.DataType]]:
    zones = _F64 if reissue else _I64
    return [
        ("hvfhs_license_num", _STR), ("dispatching_base_num", _STR), ("originating_base_num", _STR),
        ("request_datetime", _TS), ("on_scene_datetime", _TS), ("pickup_datetime", _TS), ("dropoff_datetime", _TS),
        ("PULocationID", zones), ("DOLocationID", zones), ("trip_miles", _F64), ("trip_time", _I64),
        ("base_passenger_fare", _F64), ("tolls", _F64), ("bcf", _F64), ("sales_tax", _F64),
        ("congestion_surcharge", _F64), ("airport_fee", _F64 if month >= "2021-01" else _NULL), ("tips", _F64),
        ("driver_pay", _F64), ("shared_request_flag", _STR), ("shared_match_flag", _STR), ("access_a_ride_flag", _STR),
        ("wav_request_flag", _STR), ("wav_match_flag", _STR if month >= "2020-01" else _NULL),
    ]  # fmt: skip


_TLC_FIELDS = {"yellow": _yellow_fields, "green": _green_fields, "fhv": _fhv_fields, "fhvhv": _fhvhv_fields}


def tlc_schema(service: str, month: str, *, reissue: bool = False) -> pa.Schema:
    """The exact Arrow schema of the fake TLC file of ``service`` and ``month``: the TLC's spellings and order,
    the physical type of each column in that month's era (``reissue``: the other type of each drifting integer
    column), ``cbd_congestion_fee`` and ``__index_level_0__`` where the month has them.

    ``tlc_schema("yellow", "2022-05").field("passenger_count").type == pa.float64()``
    """
    name = _service(service).name
    parse_month(month)
    fields = _TLC_FIELDS[name](month, reissue)
    if name in _CBD_SERVICES and month >= CBD_FIRST_MONTH:
        fields.append(("cbd_congestion_fee", _F64))
    if name in _INDEX_SERVICES and month.startswith(_INDEX_YEAR):
        fields.append((INDEX_COLUMN, _I64))
    return pa.schema(fields)


# --------------------------------------------------------------------------------------------------------------
# Months


@dataclass(frozen=True)
class _Month:
    key: str
    year: int
    month: int
    start: int  # epoch seconds, inclusive
    end: int  # epoch seconds, exclusive

    @property
    def days(self) -> int:
        return (self.end - self.start) // _DAY


def parse_month(key: str) -> tuple[int, int]:
    """``"2021-01"`` -> ``(2021, 1)``; ``ValueError`` for anything else."""
    month = Month.parse(key)
    return month.year, month.month


def _month(key: str) -> _Month:
    year, month = parse_month(key)
    start = calendar.timegm((year, month, 1, 0, 0, 0))
    end = calendar.timegm((year + month // 12, month % 12 + 1, 1, 0, 0, 0))
    return _Month(key, year, month, start, end)


def realistic_rows(service: str, month: str) -> int:
    """A realistic row count: the real file's when known, else the typical count of that service and year."""
    _service(service)
    year, _ = parse_month(month)
    if (service, month) in KNOWN_ROW_COUNTS:
        return KNOWN_ROW_COUNTS[(service, month)]
    by_year = TYPICAL_ROWS_BY_YEAR[service]
    nearest = min(by_year, key=lambda y: abs(y - year))
    return by_year[nearest]


def _service(name: str) -> TripService:
    if name not in SERVICES:
        raise ValueError(f"unknown service {name!r} (choose from {', '.join(SERVICES)})")
    return SERVICES[name]


def _layout_service(name: str, layout: SourceLayout) -> TripService:
    service = _service(name)
    if not layout.has(service):
        raise ValueError(f"{name} is not in the {layout.name} layout: {layout.missing_reason}")
    return service


# --------------------------------------------------------------------------------------------------------------
# The zone lookup

# The real Manhattan zone ids; 1 is Newark Airport (EWR), 132 JFK and 138 LaGuardia (Queens), 264/265 unknown.
_MANHATTAN_IDS = (
    4, 12, 13, 24, 41, 42, 43, 45, 48, 50, 68, 74, 75, 79, 87, 88, 90, 100, 103, 104, 105, 107, 113, 114, 116, 120,
    125, 127, 128, 137, 140, 141, 142, 143, 144, 148, 151, 152, 153, 158, 161, 162, 163, 164, 166, 170, 186, 194,
    202, 209, 211, 224, 229, 230, 231, 232, 233, 234, 236, 237, 238, 239, 243, 244, 246, 249, 261, 262, 263,
)  # fmt: skip
_AIRPORTS = {132: "JFK Airport", 138: "LaGuardia Airport"}
_BOROUGH_ZONES = {
    "Manhattan": (69, (
        "Alphabet City", "Battery Park", "Battery Park City", "Bloomingdale", "Central Harlem", "Central Harlem North",
        "Central Park", "Chinatown", "Clinton East", "Clinton West", "East Chelsea", "East Harlem North",
        "East Harlem South", "East Village", "Ellis Island", "Financial District North", "Financial District South",
        "Flatiron", "Garment District", "Governor's Island", "Gramercy", "Greenwich Village North",
        "Greenwich Village South", "Hamilton Heights", "Highbridge Park", "Hudson Sq", "Inwood", "Inwood Hill Park",
        "Kips Bay", "Lenox Hill East", "Lenox Hill West", "Liberty Island", "Lincoln Square East",
        "Lincoln Square West", "Little Italy/NoLiTa", "Lower East Side", "Manhattan Valley", "Manhattanville",
        "Marble Hill", "Meatpacking/West Village West", "Midtown Center", "Midtown East", "Midtown North",
        "Midtown South", "Morningside Heights", "Murray Hill", "Penn Station/Madison Sq West", "Randalls Island",
        "Roosevelt Island", "Seaport", "SoHo", "Stuy Town/Peter Cooper Village", "Sutton Place/Turtle Bay North",
        "Times Sq/Theatre District", "TriBeCa/Civic Center", "Two Bridges/Seward Park", "UN/Turtle Bay South",
        "Union Sq", "Upper East Side North", "Upper East Side South", "Upper West Side North",
        "Upper West Side South", "Washington Heights North", "Washington Heights South", "West Chelsea/Hudson Yards",
        "West Village", "World Trade Center", "Yorkville East", "Yorkville West",
    )),
    "Queens": (67, (
        "Astoria", "Astoria Park", "Auburndale", "Baisley Park", "Bay Terrace/Fort Totten", "Bayside", "Bellerose",
        "Breezy Point/Riis Beach", "Briarwood/Jamaica Hills", "Broad Channel", "Cambria Heights", "College Point",
        "Corona", "Douglaston", "East Elmhurst", "East Flushing", "Elmhurst", "Elmhurst/Maspeth", "Far Rockaway",
        "Flushing", "Flushing Meadows-Corona Park", "Forest Hills", "Forest Park/Highland Park", "Fresh Meadows",
        "Glen Oaks", "Glendale", "Hammels/Arverne", "Hillcrest/Pomonok", "Hollis", "Howard Beach", "Jackson Heights",
        "Jamaica", "Jamaica Bay", "Jamaica Estates", "Kew Gardens", "Kew Gardens Hills", "Laurelton",
        "Long Island City/Hunters Point", "Long Island City/Queens Plaza", "Maspeth", "Middle Village",
        "Murray Hill-Queens", "Oakland Gardens", "Old Astoria", "Ozone Park", "Queens Village", "Queensboro Hill",
        "Queensbridge/Ravenswood", "Rego Park", "Richmond Hill", "Ridgewood", "Rockaway Park", "Rosedale",
        "Saint Albans", "South Jamaica", "South Ozone Park", "Springfield Gardens North", "Springfield Gardens South",
        "Steinway", "Sunnyside", "Whitestone", "Willets Point", "Woodhaven", "Woodside",
    )),
    "Brooklyn": (61, (
        "Bath Beach", "Bay Ridge", "Bedford", "Bensonhurst East", "Bensonhurst West", "Boerum Hill", "Borough Park",
        "Brighton Beach", "Brooklyn Heights", "Brooklyn Navy Yard", "Brownsville", "Bushwick North", "Bushwick South",
        "Canarsie", "Carroll Gardens", "Clinton Hill", "Cobble Hill", "Columbia Street", "Coney Island",
        "Crown Heights North", "Crown Heights South", "Cypress Hills", "DUMBO/Vinegar Hill",
        "Downtown Brooklyn/MetroTech", "Dyker Heights", "East Flatbush/Farragut", "East Flatbush/Remsen Village",
        "East New York", "East New York/Pennsylvania Avenue", "East Williamsburg", "Erasmus", "Flatbush/Ditmas Park",
        "Flatlands", "Fort Greene", "Gerritsen Beach", "Gowanus", "Gravesend", "Green-Wood Cemetery", "Greenpoint",
        "Homecrest", "Kensington", "Madison", "Manhattan Beach", "Marine Park/Floyd Bennett Field",
        "Marine Park/Mill Basin", "Midwood", "Ocean Hill", "Ocean Parkway South", "Park Slope", "Prospect Heights",
        "Prospect Park", "Prospect-Lefferts Gardens", "Red Hook", "Sheepshead Bay", "Starrett City",
        "Stuyvesant Heights", "Sunset Park East", "Sunset Park West", "Williamsburg (North Side)",
        "Williamsburg (South Side)", "Windsor Terrace",
    )),
    "Bronx": (43, (
        "Allerton/Pelham Gardens", "Bedford Park", "Belmont", "Bronx Park", "Bronxdale", "City Island",
        "Crotona Park East", "Pelham Bay Park", "Van Cortlandt Village", "Rikers Island",
        "Claremont/Bathgate", "Co-Op City", "Country Club", "Crotona Park", "East Concourse/Concourse Village",
        "East Tremont", "Eastchester", "Fordham South", "Highbridge", "Hunts Point", "Kingsbridge Heights",
        "Longwood", "Melrose South", "Morrisania/Melrose", "Mott Haven/Port Morris", "Mount Hope", "Norwood",
        "Parkchester", "Pelham Bay", "Pelham Parkway", "Riverdale/Fieldston", "Schuylerville/Edgewater Park",
        "Soundview/Bruckner", "Soundview/Castle Hill", "Spuyten Duyvil/Kingsbridge", "University Heights",
        "Van Cortlandt Park", "Van Nest/Morris Park", "West Concourse", "West Farms/Bronx River",
        "Westchester Village/Unionport", "Williamsbridge/Olinville", "Woodlawn/Wakefield",
    )),
    "Staten Island": (20, (
        "Arden Heights", "Arrochar/Fort Wadsworth", "Bloomfield/Emerson Hill", "Charleston/Tottenville",
        "Eltingville/Annadale", "Freshkills Park", "Great Kills", "Grymes Hill/Clifton", "Heartland Village/Todt Hill",
        "Mariners Harbor", "New Dorp/Midland Beach", "Oakwood", "Port Richmond", "Rossville/Woodrow",
        "Saint George/New Brighton", "South Beach/Dongan Hills", "Stapleton", "West Brighton", "Westerleigh",
        "Great Kills Park",
    )),
}  # fmt: skip
# Upper Manhattan is a Boro Zone (green cabs may street-hail there); the rest of Manhattan is the Yellow Zone.
_UPPER_MANHATTAN = ("Harlem", "Inwood", "Washington Heights", "Hamilton", "Manhattanville", "Marble", "Highbridge")
_SUFFIXES = (" North", " South", " East", " West")


def _zone_names(base: tuple[str, ...], count: int) -> list[str]:
    """``count`` distinct names: the base names, then North/South/East/West variants of them."""
    names = dict.fromkeys(base)
    for suffix in _SUFFIXES:
        names.update(dict.fromkeys(name + suffix for name in base if "/" not in name and not name.endswith(_SUFFIXES)))
    return sorted(list(names)[:count])


def zone_rows() -> list[tuple[int, str, str | None, str]]:
    """The 265 rows of the fake zone lookup: ``(LocationID, Borough, Zone, service_zone)``.

    Manhattan keeps its real ids, the other boroughs share the remaining ids in alphabetical order of their
    zone names (as the real file is ordered). 264 and 265 are the real file's unknown zones: borough
    ``Unknown``, zone ``N/A`` and blank.
    """
    rows: dict[int, tuple[str, str | None, str]] = {1: ("EWR", "Newark Airport", "EWR")}
    rows.update({i: ("Queens", name, "Airports") for i, name in _AIRPORTS.items()})
    rows[264] = ("Unknown", "N/A", "N/A")
    rows[265] = ("Unknown", None, "N/A")
    count, base = _BOROUGH_ZONES["Manhattan"]
    for location_id, name in zip(_MANHATTAN_IDS, _zone_names(base, count), strict=True):
        upper = any(word in name for word in _UPPER_MANHATTAN)
        rows[location_id] = ("Manhattan", name, "Boro Zone" if upper else "Yellow Zone")
    others = sorted(
        (name, borough)
        for borough, (count, base) in _BOROUGH_ZONES.items()
        if borough != "Manhattan"
        for name in _zone_names(base, count)
    )
    free_ids = [i for i in range(1, ZONE_ROWS + 1) if i not in rows]
    if len(others) != len(free_ids):  # a guard on the name lists above
        raise AssertionError(f"{len(others)} zone names for {len(free_ids)} free ids")
    for location_id, (name, borough) in zip(free_ids, others, strict=True):
        rows[location_id] = (borough, name, "Boro Zone")
    return [(i, *rows[i]) for i in sorted(rows)]


def write_zone_lookup(out_dir: str | os.PathLike) -> Path:
    """Write ``{out}/misc/taxi_zone_lookup.csv``, quoted like the real file (text quoted, ids not)."""
    path = Path(out_dir) / ZONES_SOURCE_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ['"LocationID","Borough","Zone","service_zone"']
    for location_id, *texts in zone_rows():
        quoted = ["" if text is None else '"' + text.replace('"', '""') + '"' for text in texts]  # blank: empty field
        lines.append(",".join([str(location_id), *quoted]))
    _atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
    return path


_ZONES = zone_rows()
_ZONE_IDS = np.array([r[0] for r in _ZONES], dtype=np.int64)
_MANHATTAN_YELLOW = np.array([r[0] for r in _ZONES if r[3] == "Yellow Zone"], dtype=np.int64)
_BORO_ZONE_IDS = np.array([r[0] for r in _ZONES if r[3] == "Boro Zone"], dtype=np.int64)
_AIRPORT_IDS = np.array([1, *_AIRPORTS], dtype=np.int64)

# --------------------------------------------------------------------------------------------------------------
# Quirk rows placed at fixed positions of a file (chosen once per file, before the chunks are generated)

# Pickup-outside-month kinds; every file gets one of each of the first five, the rest are neighbouring months.
_OUT_2008, _OUT_2009, _OUT_2088, _OUT_PREV, _OUT_NEXT = range(5)


@dataclass(frozen=True)
class _Plan:
    """Global row positions of the rows that must exist in a file, each as a sorted int64 array."""

    outside: np.ndarray
    outside_kind: np.ndarray
    dropoff_first: np.ndarray
    year_3019: np.ndarray
    blank_codes: np.ndarray  # yellow/green: the five codes blank; fhv: a shared-ride flag
    zero_passengers: np.ndarray  # fhv: a blank pickup zone
    zero_distance: np.ndarray
    void: np.ndarray

    def within(self, start: int, stop: int) -> _Plan:
        def cut(positions: np.ndarray, values: np.ndarray | None = None) -> np.ndarray:
            lo, hi = np.searchsorted(positions, [start, stop])
            return (positions if values is None else values)[lo:hi]

        return _Plan(
            outside=cut(self.outside) - start,
            outside_kind=cut(self.outside, self.outside_kind),
            **{
                name: cut(getattr(self, name)) - start
                for name in ("dropoff_first", "year_3019", "blank_codes", "zero_passengers", "zero_distance", "void")
            },
        )


def _plan(rng: np.random.Generator, rows: int, service: str) -> _Plan:
    n_outside = 5 + rows // 20_000
    n_first = 2 + rows // 10_000
    n_3019 = 1 if service == "fhv" else 0
    sizes = [n_outside, n_first, n_3019, 1, 1, 1, 1]
    positions = rng.choice(rows, size=sum(sizes), replace=False).astype(np.int64)
    kinds = np.concatenate([np.arange(5), rng.choice([_OUT_PREV, _OUT_NEXT], size=n_outside - 5)])
    parts = np.split(positions, np.cumsum(sizes)[:-1])
    order = np.argsort(parts[0])
    return _Plan(parts[0][order], kinds[order], *(np.sort(p) for p in parts[1:]))


# --------------------------------------------------------------------------------------------------------------
# Formatting: every column becomes an Arrow array the CSV writer prints as the real files do

_FLOAT_TEXT = pa.array([f"{i}.0" for i in range(1000)])


def _float_text(values: np.ndarray, blank: np.ndarray | None = None) -> pa.Array:
    """Small non-negative integer codes printed as pandas printed them from floats: ``1.0``; blank where ``blank``."""
    return _FLOAT_TEXT.take(pa.array(values, mask=blank))


def _money_text(values: np.ndarray, blank: np.ndarray | None = None) -> pa.Array:
    """Amounts with at most two decimals, printed like pandas: ``8.0``, ``11.8``, ``-2.5``; blank where ``blank``."""
    values = np.round(values, 2) + 0.0  # + 0.0 turns -0.0 into 0.0
    text = pc.cast(pa.array(values, mask=blank), pa.string())
    whole = pa.array(values == np.floor(values))
    return pc.if_else(whole, pc.binary_join_element_wise(text, "0", "."), text)


def _timestamps(seconds: np.ndarray) -> pa.Array:
    return pa.array(seconds, type=pa.timestamp("s"))  # the CSV writer prints 2021-01-01 00:30:10


def _texts(choices: pa.Array, index: np.ndarray, blank: np.ndarray | None = None) -> pa.Array:
    return choices.take(pa.array(index, mask=blank))


# --------------------------------------------------------------------------------------------------------------
# Generating one chunk

_HOUR_WEIGHTS = np.array(
    [3.0, 2.2, 1.6, 1.1, 0.9, 1.0, 2.2, 3.8, 4.6, 4.7, 4.6, 4.8, 5.1, 5.2, 5.5, 5.8, 5.9, 6.3, 6.8, 6.5, 5.9, 5.6,
     5.0, 4.0]
)  # fmt: skip
_HOUR_P = _HOUR_WEIGHTS / _HOUR_WEIGHTS.sum()
_FLAGS = pa.array(["N", "Y"])
_SR_FLAG = pa.array(["1"])
_BASES = pa.array([f"B{n:05d}" for n in np.random.default_rng(2019).choice(np.arange(1, 3100), size=60, replace=False)])
_BASE_P = 1.0 / np.arange(1, len(_BASES) + 1)
_BASE_P /= _BASE_P.sum()


def _to_3019(seconds: int) -> int:
    when = _EPOCH + timedelta(seconds=int(seconds))
    when = when.replace(year=3019, day=min(when.day, 28))
    return int((when - _EPOCH).total_seconds())


def _times(rng: np.random.Generator, n: int, month: _Month, plan: _Plan) -> tuple[np.ndarray, np.ndarray]:
    """Pickups inside the month and dropoffs after them, then the planned outside / dropoff-first / 3019 rows."""
    day = rng.integers(0, month.days, n)
    hour = rng.choice(24, size=n, p=_HOUR_P)
    pickup = month.start + day * _DAY + hour * 3600 + rng.integers(0, 3600, n)
    minutes = np.clip(rng.lognormal(np.log(11.0), 0.65, n), 0.5, 240.0)
    duration = np.rint(minutes * 60).astype(np.int64)

    rows, kind = plan.outside, plan.outside_kind
    # 2008-12-31 late evening, 2009-01-01 small hours (meter clocks reset), any time of 2088
    windows = {
        _OUT_2008: (calendar.timegm((2009, 1, 1, 0, 0, 0)) - 3 * 3600, 3 * 3600),
        _OUT_2009: (calendar.timegm((2009, 1, 1, 0, 0, 0)), 3 * 3600),
        _OUT_2088: (calendar.timegm((2088, 1, 1, 0, 0, 0)), 366 * _DAY),
    }
    moved = np.empty(len(rows), dtype=np.int64)
    for k, (start, spread) in windows.items():
        chosen = kind == k
        moved[chosen] = start + rng.integers(0, spread, chosen.sum())
    prev, nxt = kind == _OUT_PREV, kind == _OUT_NEXT
    moved[prev] = month.start - rng.integers(1, 4 * 3600, prev.sum())
    moved[nxt] = month.end + rng.integers(0, 4 * 3600, nxt.sum())
    inside = (moved >= month.start) & (moved < month.end)  # a 2009 month, say: move a year back, out of it
    moved[inside] -= 366 * _DAY
    pickup[rows] = moved

    dropoff = pickup + duration
    dropoff[plan.dropoff_first] = pickup[plan.dropoff_first] - rng.integers(60, 3 * 3600, len(plan.dropoff_first))
    for row in plan.year_3019:
        dropoff[row] = _to_3019(pickup[row] + duration[row])
    return pickup, dropoff


def _taxi_chunk(rng: np.random.Generator, n: int, service: str, month: _Month, plan: _Plan) -> dict:
    """One chunk of yellow or green trips: the raw values, as numpy arrays and blank masks."""
    green = service == "green"
    pickup, dropoff = _times(rng, n, month, plan)
    minutes = (dropoff - pickup).clip(0, 4 * 3600) / 60.0

    blank_codes = rng.random(n) < (0.05 if green else 0.03)
    blank_codes[plan.blank_codes] = True
    blank_codes[plan.zero_passengers] = False
    vendor = np.where(rng.random(n) < (0.2 if green else 0.3), 1, 2)
    passengers = rng.choice(7, size=n, p=[0.02, 0.7, 0.14, 0.04, 0.02, 0.05, 0.03])
    passengers[plan.zero_passengers] = 0
    ratecode = rng.choice([1, 2, 3, 4, 5, 6, 99], size=n, p=[0.96, 0.02, 0.004, 0.004, 0.0115, 0.0004, 0.0001])
    flag = (rng.random(n) < 0.01).astype(np.int64)
    payment = rng.choice([1, 2, 3, 4], size=n, p=[0.7, 0.27, 0.02, 0.01])

    if green:
        pu = np.where(rng.random(n) < 0.85, rng.choice(_BORO_ZONE_IDS, n), rng.choice(_ZONE_IDS, n))
        do = np.where(rng.random(n) < 0.75, rng.choice(_BORO_ZONE_IDS, n), rng.choice(_ZONE_IDS, n))
    else:
        draw = rng.random((2, n))
        pu = np.where(draw[0] < 0.9, rng.choice(_MANHATTAN_YELLOW, n), rng.choice(_ZONE_IDS, n))
        pu = np.where(draw[0] > 0.975, rng.choice(_AIRPORT_IDS, n), pu)
        do = np.where(draw[1] < 0.85, rng.choice(_MANHATTAN_YELLOW, n), rng.choice(_ZONE_IDS, n))

    speed = rng.lognormal(np.log(10.0), 0.35, n)  # mph
    distance = np.round(minutes / 60.0 * speed, 2)
    distance[(rng.random(n) < 0.01)] = 0.0
    distance[plan.zero_distance] = 0.0

    fare = np.maximum(2.5, np.round((2.5 + 2.5 * distance + 0.5 * minutes) * 2) / 2)
    extra = rng.choice([0.0, 0.5, 1.0, 2.5, 3.0], size=n, p=[0.35, 0.3, 0.1, 0.2, 0.05])
    mta_tax = np.where(ratecode == 5, 0.0, 0.5)
    card = payment == 1
    tip = np.where(card & (rng.random(n) < 0.9), np.round(fare * rng.uniform(0.1, 0.3, n), 2), 0.0)
    tolls = np.where(rng.random(n) < 0.04, 6.12 if month.year >= 2020 else 5.76, 0.0)
    improvement = np.full(n, 0.3)
    congestion_blank = month.key < "2019-04"
    congestion = np.where(rng.random(n) < (0.1 if green else 0.9), 2.75 if green else 2.5, 0.0)

    void = rng.random(n) < 0.003
    void[plan.void] = True
    sign = np.where(void, -1.0, 1.0)
    tip = np.where(void, 0.0, tip)
    fare, extra, mta_tax, tolls, improvement, congestion = (
        v * sign for v in (fare, extra, mta_tax, tolls, improvement, congestion)
    )
    payment = np.where(void, np.where(rng.random(n) < 0.5, 3, 4), payment)
    total = fare + extra + mta_tax + tip + tolls + improvement + (0.0 if congestion_blank else congestion)

    return {
        "pickup": pickup,
        "dropoff": dropoff,
        "vendor": vendor,
        "passengers": passengers,
        "ratecode": ratecode,
        "flag": flag,
        "payment": payment,
        "trip_type": np.where(rng.random(n) < 0.03, 2, 1),
        "pu": pu,
        "do": do,
        "distance": distance,
        "fare": fare,
        "extra": extra,
        "mta_tax": mta_tax,
        "tip": tip,
        "tolls": tolls,
        "improvement": improvement,
        "total": total,
        "congestion": congestion,
        "congestion_blank": np.full(n, congestion_blank),
        "blank_codes": blank_codes,
    }


def _taxi_counts(v: dict, service: str) -> dict[str, int]:
    blank = v["blank_codes"]
    passengers = np.where(blank, -1, v["passengers"])
    return {
        "null_passenger_count": int(blank.sum()),
        "zero_passenger_count": int((passengers == 0).sum()),
        "zero_trip_distance": int((np.round(v["distance"], 2) == 0).sum()),
        "negative_fare_amount": int((np.round(v["fare"], 2) < 0).sum()),
        "negative_total_amount": int((np.round(v["total"], 2) < 0).sum()),
        "blank_vendor_rows": int(blank.sum()),  # VendorID, passenger_count, RatecodeID, flag, payment all blank
        "congestion_surcharge_blank": int(v["congestion_blank"].sum()),
        "ehail_fee_blank": len(blank) if service == "green" else 0,
    }


def _fhv_chunk(rng: np.random.Generator, n: int, month: _Month, plan: _Plan) -> dict:
    """One chunk of fhv trips: the raw values, as numpy arrays and blank masks."""
    pickup, dropoff = _times(rng, n, month, plan)
    # Many bases report whole minutes. Rounding down keeps a pickup in its month and before its dropoff (the
    # dropoff-first rows are a minute or more early); the outside-month rows keep their seconds.
    on_minute = rng.random(n) < 0.3
    on_minute[plan.outside] = False
    pickup = np.where(on_minute, pickup - pickup % 60, pickup)

    base = rng.choice(len(_BASES), size=n, p=_BASE_P)
    affiliated = np.where(rng.random(n) < 0.85, base, rng.choice(len(_BASES), size=n, p=_BASE_P))
    affiliated_blank = rng.random(n) < 0.05
    pu = rng.choice(_ZONE_IDS, n)
    do = rng.choice(_ZONE_IDS, n)
    pu_blank = rng.random(n) < 0.2
    pu_blank[plan.zero_passengers] = True
    do_blank = rng.random(n) < 0.15
    shared = rng.random(n) < 0.02
    shared[plan.blank_codes] = True
    return {
        "pickup": pickup,
        "dropoff": dropoff,
        "base": base,
        "affiliated": affiliated,
        "affiliated_blank": affiliated_blank,
        "pu": pu,
        "do": do,
        "pu_blank": pu_blank,
        "do_blank": do_blank,
        "shared": shared,
    }


_HV_LICENSES = pa.array(["HV0002", "HV0003", "HV0004", "HV0005"])  # Juno, Uber, Via, Lyft
_HV_P = np.array([0.01, 0.72, 0.02, 0.25])
_UBER = 1
_FLAG_NAMES = ("shared_request_flag", "shared_match_flag", "access_a_ride_flag", "wav_request_flag", "wav_match_flag")


def _fhvhv_chunk(rng: np.random.Generator, n: int, month: _Month, plan: _Plan) -> dict:
    """One chunk of fhvhv trips: the raw values, as numpy arrays and blank masks."""
    pickup, dropoff = _times(rng, n, month, plan)
    seconds = np.maximum(dropoff - pickup, 0)  # trip_time is never negative, even where the clocks disagree
    license_ = rng.choice(len(_HV_LICENSES), size=n, p=_HV_P)
    base = rng.choice(len(_BASES), size=n, p=_BASE_P)
    wait = np.rint(np.clip(rng.lognormal(np.log(300.0), 0.6, n), 30, 3600)).astype(np.int64)
    on_scene = pickup - (wait * rng.random(n) * 0.5).astype(np.int64)
    pu = np.where(rng.random(n) < 0.4, rng.choice(_MANHATTAN_YELLOW, n), rng.choice(_ZONE_IDS, n))
    do = np.where(rng.random(n) < 0.4, rng.choice(_MANHATTAN_YELLOW, n), rng.choice(_ZONE_IDS, n))

    miles = np.round(seconds / 3600.0 * rng.lognormal(np.log(12.0), 0.4, n), 3)
    miles[plan.zero_distance] = 0.0
    fare = np.round(2.5 + 1.15 * miles + 0.45 * seconds / 60.0, 2)
    fare[plan.void] *= -1  # the TLC's fhvhv files have a few negative fares (refunds)
    charged = np.maximum(fare, 0.0)
    tips = np.where(rng.random(n) < 0.12, np.round(charged * rng.uniform(0.1, 0.25, n), 2), 0.0)
    shared_request = rng.random(n) < 0.03
    return {
        "pickup": pickup,
        "dropoff": dropoff,
        "license": license_,
        "base": base,
        "originating_blank": rng.random(n) < 0.3,
        "request": pickup - wait,
        "on_scene": on_scene,
        "on_scene_blank": license_ != _UBER,  # only Uber reports when the driver arrived
        "pu": pu,
        "do": do,
        "miles": miles,
        "seconds": seconds,
        "fare": fare,
        "tolls": np.where(rng.random(n) < 0.05, 6.94, 0.0),
        "bcf": np.round(charged * 0.025, 2),
        "sales_tax": np.round(charged * 0.08875, 2),
        "congestion": np.where(rng.random(n) < 0.4, 2.75, 0.0),
        "airport": np.where(np.isin(pu, list(_AIRPORTS)), 2.5, 0.0),
        "tips": tips,
        "driver_pay": np.round(charged * rng.uniform(0.6, 0.85, n) + tips, 2),
        "shared_request_flag": shared_request,
        "shared_match_flag": shared_request & (rng.random(n) < 0.5),
        "access_a_ride_flag": rng.random(n) < 0.005,
        "wav_request_flag": rng.random(n) < 0.05,
        "wav_match_flag": rng.random(n) < 0.08,
        "cbd": np.where(np.isin(pu, _MANHATTAN_YELLOW) | np.isin(do, _MANHATTAN_YELLOW), 1.5, 0.0),
    }


def _fhvhv_counts(v: dict) -> dict[str, int]:
    return {
        "zero_trip_distance": int((v["miles"] == 0).sum()),
        "negative_fare_amount": int((v["fare"] < 0).sum()),
    }


# --------------------------------------------------------------------------------------------------------------
# The mirror's CSV tables


def _taxi_csv_table(v: dict, service: str) -> pa.Table:
    blank = v["blank_codes"]
    columns = {
        "VendorID": _float_text(v["vendor"], blank),
        "passenger_count": _float_text(v["passengers"], blank),
        "trip_distance": _money_text(v["distance"]),
        "RatecodeID": _float_text(v["ratecode"], blank),
        "store_and_fwd_flag": _texts(_FLAGS, v["flag"], blank),
        "PULocationID": _float_text(v["pu"]),
        "DOLocationID": _float_text(v["do"]),
        "payment_type": _float_text(v["payment"], blank),
        "fare_amount": _money_text(v["fare"]),
        "extra": _money_text(v["extra"]),
        "mta_tax": _money_text(v["mta_tax"]),
        "tip_amount": _money_text(v["tip"]),
        "tolls_amount": _money_text(v["tolls"]),
        "ehail_fee": pa.nulls(len(blank), pa.string()),
        "improvement_surcharge": _money_text(v["improvement"]),
        "total_amount": _money_text(v["total"]),
        "trip_type": _float_text(v["trip_type"], blank),
        "congestion_surcharge": _money_text(v["congestion"], v["congestion_blank"]),
    }
    prefix = "lpep" if service == "green" else "tpep"
    columns[f"{prefix}_pickup_datetime"] = _timestamps(v["pickup"])
    columns[f"{prefix}_dropoff_datetime"] = _timestamps(v["dropoff"])
    header = source_header(service)
    return pa.table([columns[name] for name in header], names=header)


def _fhv_csv_table(v: dict) -> pa.Table:
    n = len(v["pickup"])
    columns = [
        _texts(_BASES, v["base"]),
        _timestamps(v["pickup"]),
        _timestamps(v["dropoff"]),
        _float_text(v["pu"], v["pu_blank"]),
        _float_text(v["do"], v["do_blank"]),
        _texts(_SR_FLAG, np.zeros(n, dtype=np.int64), ~v["shared"]),
        _texts(_BASES, v["affiliated"], v["affiliated_blank"]),
    ]
    return pa.table(columns, names=source_header("fhv"))


# --------------------------------------------------------------------------------------------------------------
# The TLC's parquet tables: each column is an Arrow array, or numbers with their blank mask that take the
# month's type from ``tlc_schema`` (None: a Null-typed column)

_Numbers = tuple[np.ndarray, "np.ndarray | None"]


def _money(values: np.ndarray, blank: np.ndarray | None = None) -> _Numbers:
    return np.round(values, 2) + 0.0, blank  # + 0.0 turns -0.0 into 0.0


def _micros(seconds: np.ndarray, blank: np.ndarray | None = None) -> pa.Array:
    return pa.array(seconds * 1_000_000, type=_TS, mask=blank)


def _typed(column: pa.Array | _Numbers | None, type_: pa.DataType, n: int) -> pa.Array:
    if pa.types.is_null(type_):
        return pa.nulls(n)
    if isinstance(column, pa.Array):
        return column
    values, blank = column
    return pa.array(values.astype(type_.to_pandas_dtype()), type=type_, mask=blank)


def _taxi_tlc_columns(v: dict, service: str, month: str) -> dict:
    blank = v["blank_codes"]
    prefix = "lpep" if service == "green" else "tpep"
    sign = np.where(v["fare"] < 0, -1.0, 1.0)  # a void's fees are negative too
    in_manhattan = np.isin(v["pu"], _MANHATTAN_YELLOW) | np.isin(v["do"], _MANHATTAN_YELLOW)
    airport = np.where(np.isin(v["pu"], list(_AIRPORTS)), 1.75 if month >= "2023-01" else 1.25, 0.0)
    columns = {
        "VendorID": (v["vendor"], blank),
        f"{prefix}_pickup_datetime": _micros(v["pickup"]),
        f"{prefix}_dropoff_datetime": _micros(v["dropoff"]),
        "passenger_count": (v["passengers"], blank),
        "trip_distance": _money(v["distance"]),
        "RatecodeID": (v["ratecode"], blank),
        "store_and_fwd_flag": _texts(_FLAGS, v["flag"], blank),
        "PULocationID": (v["pu"], None),
        "DOLocationID": (v["do"], None),
        "payment_type": (v["payment"], blank),
        "fare_amount": _money(v["fare"]),
        "extra": _money(v["extra"]),
        "mta_tax": _money(v["mta_tax"]),
        "tip_amount": _money(v["tip"]),
        "tolls_amount": _money(v["tolls"]),
        "ehail_fee": None,
        "improvement_surcharge": _money(v["improvement"]),
        "total_amount": _money(v["total"]),
        "trip_type": (v["trip_type"], blank),
        "congestion_surcharge": _money(v["congestion"], v["congestion_blank"]),
        "cbd_congestion_fee": _money(sign * 0.75 * in_manhattan),
    }
    columns["airport_fee"] = columns["Airport_fee"] = _money(sign * airport)
    return columns


def _fhv_tlc_columns(v: dict) -> dict:
    return {
        "dispatching_base_num": _texts(_BASES, v["base"]),
        "pickup_datetime": _micros(v["pickup"]),
        "dropOff_datetime": _micros(v["dropoff"]),
        "PUlocationID": (v["pu"], v["pu_blank"]),
        "DOlocationID": (v["do"], v["do_blank"]),
        "SR_Flag": (np.ones(len(v["shared"])), ~v["shared"]),
        "Affiliated_base_number": _texts(_BASES, v["affiliated"], v["affiliated_blank"]),
    }


def _fhvhv_tlc_columns(v: dict) -> dict:
    columns = {
        "hvfhs_license_num": _HV_LICENSES.take(pa.array(v["license"])),
        "dispatching_base_num": _texts(_BASES, v["base"]),
        "originating_base_num": _texts(_BASES, v["base"], v["originating_blank"]),
        "request_datetime": _micros(v["request"]),
        "on_scene_datetime": _micros(v["on_scene"], v["on_scene_blank"]),
        "pickup_datetime": _micros(v["pickup"]),
        "dropoff_datetime": _micros(v["dropoff"]),
        "PULocationID": (v["pu"], None),
        "DOLocationID": (v["do"], None),
        "trip_miles": (v["miles"], None),
        "trip_time": (v["seconds"], None),
        "base_passenger_fare": _money(v["fare"]),
        "tolls": _money(v["tolls"]),
        "bcf": _money(v["bcf"]),
        "sales_tax": _money(v["sales_tax"]),
        "congestion_surcharge": _money(v["congestion"]),
        "airport_fee": _money(v["airport"]),
        "tips": _money(v["tips"]),
        "driver_pay": _money(v["driver_pay"]),
        "cbd_congestion_fee": _money(v["cbd"]),
    }
    columns.update((name, _texts(_FLAGS, v[name].astype(np.int64))) for name in _FLAG_NAMES)
    return columns


def _tlc_table(service: str, v: dict, month: str, schema: pa.Schema, start: int) -> pa.Table:
    """A chunk as the TLC's file of ``month`` has it; ``start`` is the chunk's first row (for the pandas index)."""
    if service == "fhv":
        columns = _fhv_tlc_columns(v)
    elif service == "fhvhv":
        columns = _fhvhv_tlc_columns(v)
    else:
        columns = _taxi_tlc_columns(v, service, month)
    n = len(v["pickup"])
    columns[INDEX_COLUMN] = (np.arange(start, start + n), None)
    return pa.Table.from_arrays([_typed(columns[f.name], f.type, n) for f in schema], schema=schema)


# --------------------------------------------------------------------------------------------------------------
# Writing one file

_COUNT_KEYS = (
    "pickup_outside_month",
    "dropoff_before_pickup",
    "kept",
    "null_passenger_count",
    "zero_passenger_count",
    "zero_trip_distance",
    "negative_fare_amount",
    "negative_total_amount",
    "blank_vendor_rows",
    "congestion_surcharge_blank",
    "ehail_fee_blank",
    "null_pu_location_id",
    "sr_flag_set",
    "dropoff_year_3019",
)
_YEAR_3000 = calendar.timegm((3000, 1, 1, 0, 0, 0))


def _time_counts(pickup: np.ndarray, dropoff: np.ndarray, month: _Month, years: dict[str, int]) -> dict[str, int]:
    """The cleaning rules' counts: a row is dropped for the first rule it breaks (outside month, then order)."""
    inside = (pickup >= month.start) & (pickup < month.end)
    first = inside & (dropoff < pickup)
    for seconds in pickup[~inside]:
        year = str((_EPOCH + timedelta(seconds=int(seconds))).year)
        years[year] = years.get(year, 0) + 1
    return {
        "pickup_outside_month": int((~inside).sum()),
        "dropoff_before_pickup": int(first.sum()),
        "kept": int((inside & ~first).sum()),
        "dropoff_year_3019": int((dropoff >= _YEAR_3000).sum()),
    }


def _value_counts(service: str, v: dict, schema: pa.Schema | None) -> dict[str, int]:
    """The service's quirk counts of a chunk; ``schema`` is the TLC file's (None: the mirror's CSV)."""
    if service == "fhv":
        sr_flag_written = schema is None or not pa.types.is_null(schema.field("SR_Flag").type)
        sr_flag_set = int(v["shared"].sum()) if sr_flag_written else 0
        return {"null_pu_location_id": int(v["pu_blank"].sum()), "sr_flag_set": sr_flag_set}
    if service == "fhvhv":
        return _fhvhv_counts(v)
    return _taxi_counts(v, service)


def _chunks(service: str, month: _Month, rows: int, seed: int) -> Iterator[tuple[int, dict]]:
    """``(first row, values)`` of chunks of at most CHUNK_ROWS rows; each chunk has its own seeded generator."""
    code = zlib.crc32(service.encode())
    plan = _plan(np.random.default_rng([seed, code, month.year, month.month, 0]), rows, service)
    for number, start in enumerate(range(0, rows, CHUNK_ROWS)):
        n = min(CHUNK_ROWS, rows - start)
        rng = np.random.default_rng([seed, code, month.year, month.month, number + 1])
        local = plan.within(start, start + n)
        if service == "fhv":
            yield start, _fhv_chunk(rng, n, month, local)
        elif service == "fhvhv":
            yield start, _fhvhv_chunk(rng, n, month, local)
        else:
            yield start, _taxi_chunk(rng, n, service, month, local)


_CSV_OPTIONS = pacsv.WriteOptions(include_header=False, quoting_style="none", batch_size=16_384)


class _GzipSink:
    """One gzip stream into ``path`` (via a temporary file, renamed when complete), compressed on a worker thread.

    zlib releases the GIL while it deflates, so the next chunk is generated while this one is compressed. At most
    one chunk waits, which bounds memory.
    """

    def __init__(self, path: Path, level: int):
        self.path = path
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self._file = open(self.tmp, "wb")  # noqa: SIM115 - closed in close()/abort()
        # wbits 31: a gzip wrapper with a fixed header (no file name, mtime 0), so output is byte-identical
        self._deflate = zlib.compressobj(level, zlib.DEFLATED, 31)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fake-source-gzip")
        self._pending: Future | None = None
        self.sha256 = hashlib.sha256()
        self.bytes = 0

    def _emit(self, data) -> None:
        self._put(self._deflate.compress(data))

    def _put(self, compressed: bytes) -> None:
        self._file.write(compressed)
        self.sha256.update(compressed)
        self.bytes += len(compressed)

    def write(self, data) -> None:
        if self._pending is not None:
            self._pending.result()
        self._pending = self._pool.submit(self._emit, data)

    def close(self) -> None:
        if self._pending is not None:
            self._pending.result()
        self._put(self._deflate.flush())
        self._pool.shutdown()
        self._file.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self._pool.shutdown(cancel_futures=True)
        self._file.close()
        self.tmp.unlink(missing_ok=True)


class _ParquetSink:
    """A parquet file into ``path`` (via a temporary file, renamed when complete), a row group per
    ROW_GROUP_CHUNKS chunks. Timestamps stay microseconds (``coerce_timestamps``), as the TLC writes them."""

    def __init__(self, path: Path, schema: pa.Schema):
        self.path = path
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        # Nearly every timestamp is distinct: a dictionary would fill and be thrown away. Without one the
        # writer is about 30% faster and the file 8% smaller (measured on fhvhv).
        dictionary = [f.name for f in schema if not pa.types.is_timestamp(f.type)]
        self._writer = pq.ParquetWriter(
            self.tmp, schema, compression="snappy", use_dictionary=dictionary, coerce_timestamps="us"
        )
        self._pending: list[pa.Table] = []
        self.sha256 = hashlib.sha256()
        self.bytes = 0

    def write(self, table: pa.Table) -> None:
        self._pending.append(table)
        if len(self._pending) == ROW_GROUP_CHUNKS:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._writer.write_table(pa.concat_tables(self._pending))
            self._pending = []

    def close(self) -> None:
        self._flush()
        self._writer.close()
        with open(self.tmp, "rb") as f:
            while block := f.read(1 << 20):
                self.sha256.update(block)
                self.bytes += len(block)
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self._writer.close()
        self.tmp.unlink(missing_ok=True)


def write_fake_month(
    out_dir: str | os.PathLike,
    service: str,
    month: str,
    rows: int | None = None,
    seed: int = 0,
    realistic: bool = False,
    *,
    layout: str = "tlc",
    reissue: bool = False,
    update_manifest: bool = True,
) -> dict:
    """Write one month's file ``{out}/{service.source_path(month, layout)}``; return its manifest entry.

    ``rows`` is the exact number of data rows (quirk rows included), ``DEFAULT_ROWS`` when omitted;
    ``realistic=True`` uses ``realistic_rows(service, month)`` instead. ``layout`` is ``"tlc"`` (parquet, with
    the month's drifts) or ``"mirror"`` (CSV.gz, no fhvhv); ``reissue=True`` (tlc only) writes the same values
    with the other type of each drifting integer column. The entry is merged into ``{out}/manifest.json``
    unless ``update_manifest`` is false.
    """
    the_layout = _check_layout(layout, reissue)
    contract = _layout_service(service, the_layout)
    the_month = _month(month)
    rows = _row_count(service, month, rows, realistic)
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")

    relative = contract.source_path(month, the_layout)
    path = Path(out_dir) / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    schema = tlc_schema(service, month, reissue=reissue) if the_layout is TLC else None
    header = schema.names if schema is not None else source_header(service)
    totals = dict.fromkeys(_COUNT_KEYS, 0)
    years: dict[str, int] = {}
    sink = _ParquetSink(path, schema) if schema is not None else _GzipSink(path, GZIP_LEVEL)
    try:
        if schema is None:
            sink.write((",".join(header) + "\n").encode())
        for start, values in _chunks(service, the_month, rows, seed):
            if schema is not None:
                sink.write(_tlc_table(service, values, month, schema, start))
            else:
                buffer = pa.BufferOutputStream()
                pacsv.write_csv(_csv_table(service, values), buffer, _CSV_OPTIONS)
                sink.write(buffer.getvalue())
            counts = _value_counts(service, values, schema)
            counts.update(_time_counts(values["pickup"], values["dropoff"], the_month, years))
            for key, count in counts.items():
                totals[key] += count
        sink.close()
    except BaseException:
        sink.abort()
        raise

    entry = {
        "service": service,
        "month": month,
        "path": relative,
        "layout": the_layout.name,
        "reissue": reissue,
        "rows": rows,
        **totals,
        "pickup_outside_month_years": dict(sorted(years.items())),
        "header": header,
        "seed": seed,
        "bytes": sink.bytes,
        "sha256": sink.sha256.hexdigest(),
    }
    if update_manifest:
        _merge_manifest(out_dir, {relative: entry})
    return entry


def _csv_table(service: str, values: dict) -> pa.Table:
    return _fhv_csv_table(values) if service == "fhv" else _taxi_csv_table(values, service)


def _check_layout(layout: str, reissue: bool) -> SourceLayout:
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r} (choose from {', '.join(LAYOUTS)})")
    if reissue and LAYOUTS[layout] is not TLC:
        raise ValueError("reissue=True needs the tlc layout: the mirror's CSV files have no column types")
    return LAYOUTS[layout]


def _row_count(service: str, month: str, rows: int | None, realistic: bool) -> int:
    if realistic and rows is not None:
        raise ValueError("give either rows or realistic=True, not both")
    if realistic:
        return realistic_rows(service, month)
    rows = DEFAULT_ROWS if rows is None else rows
    if not isinstance(rows, int) or rows < MIN_ROWS:
        raise ValueError(f"rows must be an integer of at least {MIN_ROWS} (to hold every quirk), got {rows!r}")
    return rows


# --------------------------------------------------------------------------------------------------------------
# The whole source folder and its manifest


def write_fake_source(
    out_dir: str | os.PathLike,
    services: Iterable[str],
    months: Iterable[str],
    rows: int | None = None,
    seed: int = 0,
    realistic: bool = False,
    *,
    layout: str = "tlc",
    reissue: bool = False,
) -> dict:
    """Write every ``service`` x ``month`` file in ``layout``, the zone lookup and ``{out}/manifest.json``;
    return the manifest (``layout`` and ``reissue`` as in ``write_fake_month``).

    The manifest is ``{"files": {relative path: entry}, "zones": {...}}``; entries already in the folder's
    manifest (other months written earlier) are kept.
    """
    services, months = list(services), list(months)
    the_layout = _check_layout(layout, reissue)
    for service in services:
        _layout_service(service, the_layout)
    for month in months:
        parse_month(month)
        for service in services:
            _row_count(service, month, rows, realistic)  # fail before writing anything
    zones = write_zone_lookup(out_dir)
    entries = {}
    for service in services:
        for month in months:
            entry = write_fake_month(
                out_dir, service, month, rows, seed, realistic, layout=layout, reissue=reissue, update_manifest=False
            )
            entries[entry["path"]] = entry
    return _merge_manifest(
        out_dir, entries, {"path": ZONES_SOURCE_PATH, "rows": ZONE_ROWS, "bytes": zones.stat().st_size}
    )


def read_manifest(out_dir: str | os.PathLike) -> dict:
    """The folder's manifest, ``{"files": {}}`` when there is none yet."""
    path = Path(out_dir) / MANIFEST_NAME
    if not path.exists():
        return {"files": {}}
    return json.loads(path.read_text())


def _merge_manifest(out_dir: str | os.PathLike, entries: dict, zones: dict | None = None) -> dict:
    manifest = read_manifest(out_dir)
    files = {**manifest.get("files", {}), **entries}
    manifest["files"] = dict(sorted(files.items()))
    if zones is not None:
        manifest["zones"] = zones
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    _atomic_write_bytes(Path(out_dir) / MANIFEST_NAME, (json.dumps(manifest, indent=2) + "\n").encode())
    return manifest


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
