"""An offline fake of the TLC source: monthly trips ``.csv.gz`` files laid out like the public mirror.

``write_fake_source(out_dir, ["yellow"], ["2021-01"])`` writes ``{out}/yellow/yellow_tripdata_2021-01.csv.gz``
(the contract's ``source_path``), ``{out}/misc/taxi_zone_lookup.csv`` and ``{out}/manifest.json``, a folder that
``TAXI_SOURCE_URL`` can point at instead of the internet. No Dagster here.

Each file has the real header (spellings and order of the mirror) and the real files' quirks, so cleaning and
loading meet them in tests: integer codes written as ``1.0``, rows whose VendorID, passenger_count, RatecodeID,
store_and_fwd_flag and payment_type are all blank, zero passengers, zero distances, voids with negative amounts,
pickups outside the month (2008, 2009, 2088 and the neighbouring months), dropoffs before pickups, an fhv dropoff
in the year 3019, ``ehail_fee`` always blank, ``SR_Flag`` mostly blank, ``congestion_surcharge`` blank before
2019-04. The manifest counts these from the generated data, so a test can compare what a pipeline reports
with what the file holds.

Output is deterministic: the same seed, service and month give byte-identical files. Rows are generated with
numpy in chunks, formatted by Arrow's CSV writer and streamed into one gzip stream (compressed on a second
thread), so memory stays bounded whatever the row count.
"""

from __future__ import annotations

import calendar
import hashlib
import json
import os
import re
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

from taxi_assets.services import SERVICES, ZONES_SOURCE_PATH, TripService

DEFAULT_ROWS = 10_000
# Smallest file that still holds every quirk (5 outside-month rows, 2 dropoff-first rows, the 3019 row, 4 forced).
MIN_ROWS = 20
CHUNK_ROWS = 65_536
GZIP_LEVEL = 1
MANIFEST_NAME = "manifest.json"
ZONE_ROWS = 265

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
    return list(SOURCE_HEADERS[_service(service).name])


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
    match = re.fullmatch(r"(\d{4})-(\d{2})", key)
    if not match or not 1 <= int(match.group(2)) <= 12 or int(match.group(1)) < 1971:
        raise ValueError(f"malformed month {key!r} (expected YYYY-MM, e.g. 2021-01)")
    return int(match.group(1)), int(match.group(2))


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
        "Saint Albans", "South Jamaica", "South Ozone Park", "Springfield Gardens North", "Springfield Gardens South", "Steinway", "Sunnyside",
        "Whitestone", "Willets Point", "Woodhaven", "Woodside",
    )),
    "Brooklyn": (61, (
        "Bath Beach", "Bay Ridge", "Bedford", "Bensonhurst East", "Bensonhurst West", "Boerum Hill", "Borough Park", "Brighton Beach",
        "Brooklyn Heights", "Brooklyn Navy Yard", "Brownsville", "Bushwick North", "Bushwick South", "Canarsie", "Carroll Gardens",
        "Clinton Hill", "Cobble Hill", "Columbia Street", "Coney Island", "Crown Heights North", "Crown Heights South", "Cypress Hills",
        "DUMBO/Vinegar Hill", "Downtown Brooklyn/MetroTech", "Dyker Heights", "East Flatbush/Farragut",
        "East Flatbush/Remsen Village", "East New York", "East New York/Pennsylvania Avenue", "East Williamsburg", "Erasmus", "Flatbush/Ditmas Park",
        "Flatlands", "Fort Greene", "Gerritsen Beach", "Gowanus", "Gravesend", "Green-Wood Cemetery", "Greenpoint",
        "Homecrest", "Kensington", "Madison", "Manhattan Beach", "Marine Park/Floyd Bennett Field", "Marine Park/Mill Basin", "Midwood", "Ocean Hill",
        "Ocean Parkway South", "Park Slope", "Prospect Heights", "Prospect Park", "Prospect-Lefferts Gardens",
        "Red Hook", "Sheepshead Bay", "Starrett City", "Stuyvesant Heights", "Sunset Park East", "Sunset Park West", "Williamsburg (North Side)",
        "Williamsburg (South Side)",
        "Windsor Terrace",
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


def _taxi_table(values: dict, service: str) -> tuple[pa.Table, dict[str, int]]:
    v = values
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
    table = pa.table([columns[name] for name in header], names=header)

    passengers = np.where(blank, -1, v["passengers"])
    counts = {
        "null_passenger_count": int(blank.sum()),
        "zero_passenger_count": int((passengers == 0).sum()),
        "zero_trip_distance": int((np.round(v["distance"], 2) == 0).sum()),
        "negative_fare_amount": int((np.round(v["fare"], 2) < 0).sum()),
        "negative_total_amount": int((np.round(v["total"], 2) < 0).sum()),
        "blank_vendor_rows": int(blank.sum()),  # VendorID, passenger_count, RatecodeID, flag, payment all blank
        "congestion_surcharge_blank": int(v["congestion_blank"].sum()),
        "ehail_fee_blank": len(blank) if service == "green" else 0,
    }
    return table, counts


def _fhv_chunk(rng: np.random.Generator, n: int, month: _Month, plan: _Plan) -> tuple[pa.Table, dict, dict[str, int]]:
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

    header = source_header("fhv")
    table = pa.table(
        [
            _texts(_BASES, base),
            _timestamps(pickup),
            _timestamps(dropoff),
            _float_text(pu, pu_blank),
            _float_text(do, do_blank),
            _texts(_SR_FLAG, np.zeros(n, dtype=np.int64), ~shared),
            _texts(_BASES, affiliated, affiliated_blank),
        ],
        names=header,
    )
    counts = {"null_pu_location_id": int(pu_blank.sum()), "sr_flag_set": int(shared.sum())}
    return table, {"pickup": pickup, "dropoff": dropoff}, counts


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


def _chunks(
    service: str, month: _Month, rows: int, seed: int, years: dict[str, int]
) -> Iterator[tuple[pa.Table, dict]]:
    """Tables of at most CHUNK_ROWS rows, with their counts; each chunk has its own seeded generator. The
    years of pickups outside the month are added up in ``years``."""
    code = zlib.crc32(service.encode())
    plan = _plan(np.random.default_rng([seed, code, month.year, month.month, 0]), rows, service)
    for number, start in enumerate(range(0, rows, CHUNK_ROWS)):
        n = min(CHUNK_ROWS, rows - start)
        rng = np.random.default_rng([seed, code, month.year, month.month, number + 1])
        local = plan.within(start, start + n)
        if service == "fhv":
            table, times, counts = _fhv_chunk(rng, n, month, local)
        else:
            values = _taxi_chunk(rng, n, service, month, local)
            table, counts = _taxi_table(values, service)
            times = values
        counts.update(_time_counts(times["pickup"], times["dropoff"], month, years))
        yield table, counts


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


def write_fake_month(
    out_dir: str | os.PathLike,
    service: str,
    month: str,
    rows: int | None = None,
    seed: int = 0,
    realistic: bool = False,
    *,
    update_manifest: bool = True,
) -> dict:
    """Write one month's file ``{out}/{service}/{service}_tripdata_{month}.csv.gz``; return its manifest entry.

    ``rows`` is the exact number of data rows (quirk rows included), ``DEFAULT_ROWS`` when omitted;
    ``realistic=True`` uses ``realistic_rows(service, month)`` instead. The entry is merged into
    ``{out}/manifest.json`` unless ``update_manifest`` is false.
    """
    contract = _service(service)
    the_month = _month(month)
    rows = _row_count(service, month, rows, realistic)
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")

    relative = contract.source_path(month)
    path = Path(out_dir) / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    header = source_header(service)
    totals = dict.fromkeys(_COUNT_KEYS, 0)
    years: dict[str, int] = {}
    sink = _GzipSink(path, GZIP_LEVEL)
    try:
        sink.write((",".join(header) + "\n").encode())
        for table, counts in _chunks(service, the_month, rows, seed, years):
            buffer = pa.BufferOutputStream()
            pacsv.write_csv(table, buffer, _CSV_OPTIONS)
            sink.write(buffer.getvalue())
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
) -> dict:
    """Write every ``service`` x ``month`` file, the zone lookup and ``{out}/manifest.json``; return the manifest.

    The manifest is ``{"files": {relative path: entry}, "zones": {...}}``; entries already in the folder's
    manifest (other months written earlier) are kept.
    """
    services, months = list(services), list(months)
    for service in services:
        _service(service)
    for month in months:
        parse_month(month)
        for service in services:
            _row_count(service, month, rows, realistic)  # fail before writing anything
    zones = write_zone_lookup(out_dir)
    entries = {}
    for service in services:
        for month in months:
            entry = write_fake_month(out_dir, service, month, rows, seed, realistic, update_manifest=False)
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
