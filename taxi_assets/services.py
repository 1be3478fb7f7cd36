"""The data contract of every source dataset: columns, Arrow types, source spellings, file names.

This is the one place that knows what a TLC file looks like and what the lake keeps of it. Cleaning,
the warehouses and Postgres all derive their schemas from here, so a month can never drift from another.
The two source layouts are here too: the TLC's own parquet files (every month it has published) and the
course's CSV.gz mirror (yellow, green and fhv up to 2021-07).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pyarrow as pa

INTEGER = pa.int64()
TIMESTAMP = pa.timestamp("us")  # microseconds: the year 3019 in fhv 2019-02 fits, nanoseconds would not
MONEY = pa.float64()
DECIMAL = pa.float64()
TEXT = pa.string()


class ContractError(ValueError):
    """A source file does not match its data contract (unknown or missing column)."""


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    source_names: tuple[str, ...]
    required: bool = True
    description: str = ""
    # A code kept as text that pandas wrote from floats (``1.0``): normalized to ``1`` so every month agrees.
    numeric_text: bool = False

    @property
    def read_type(self) -> pa.DataType:
        """The type the CSV reader parses into before the cast to ``type``.

        Integer columns are read as float64 because the TLC files write them as ``1.0``; the safe cast
        afterwards turns a fractional value into an error instead of silently truncating it.
        """
        return pa.float64() if pa.types.is_integer(self.type) else self.type


@dataclass(frozen=True)
class DataContract:
    """What one source dataset looks like, and the canonical table the lake keeps of it."""

    name: str
    description: str
    columns: tuple[Column, ...]
    pickup_column: str | None = None
    dropoff_column: str | None = None

    @property
    def schema(self) -> pa.Schema:
        return pa.schema(
            [pa.field(c.name, c.type, nullable=True, metadata={"description": c.description}) for c in self.columns]
        )

    @property
    def fingerprint(self) -> str:
        """A short hash of the columns (names, types, spellings, rules): changes whenever the contract does."""
        spec = [(c.name, str(c.type), c.source_names, c.required, c.numeric_text) for c in self.columns]
        return hashlib.sha256(repr(spec).encode()).hexdigest()[:10]

    @property
    def table_name(self) -> str:
        return f"{self.name}_trips" if self.pickup_column else self.name

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    def match_header(self, header: list[str], source: str) -> dict[str, Column]:
        """Map each header name of ``source`` to its contract column.

        Names match case-insensitively (the TLC spells ``PUlocationID`` and ``PULocationID``, ``airport_fee``
        and ``Airport_fee``). An unknown column or a missing required one raises ``ContractError``.
        """
        by_spelling = {s.lower(): c for c in self.columns for s in (*c.source_names, c.name)}
        matched: dict[str, Column] = {}
        for name in header:
            column = by_spelling.get(name.strip().lower())
            if column is None:
                raise ContractError(f"{source}: column {name!r} is not in the {self.name} data contract")
            if column in matched.values():
                raise ContractError(f"{source}: column {name!r} appears twice (as {column.name!r})")
            matched[name] = column
        missing = [c.name for c in self.columns if c.required and c not in matched.values()]
        if missing:
            raise ContractError(f"{source}: required column(s) {', '.join(map(repr, missing))} missing")
        return matched


@dataclass(frozen=True)
class TripService(DataContract):
    """A monthly trips dataset published per service (yellow, green, fhv, fhvhv)."""

    # The first month the TLC publishes in this contract's shape (yellow 2009-2010 has coordinates, no zones).
    first_month: str = "2019-01"

    def file_name(self, month: str, layout: SourceLayout) -> str:
        return f"{self.name}_tripdata_{month}{layout.extension}"

    def source_path(self, month: str, layout: SourceLayout) -> str:
        """Path of a month's file under the source's root, e.g. ``trip-data/yellow_tripdata_2021-01.parquet``."""
        return layout.trips_path.format(service=self.name, file=self.file_name(month, layout))

    def raw_key(self, month: str, layout: SourceLayout) -> str:
        """The raw zone keeps the file as published: ``raw/yellow/yellow_tripdata_2021-01.parquet``."""
        return f"raw/{self.name}/{self.file_name(month, layout)}"

    def clean_key(self, month: str) -> str:
        return f"clean/{self.name}/{self.name}_tripdata_{month}.parquet"

    def clean_prefix(self) -> str:
        return f"clean/{self.name}/"


def _col(
    name: str, type_: pa.DataType, *source_names: str, required: bool = True, description: str = "", **extra
) -> Column:
    return Column(name, type_, source_names, required, description, **extra)


def _money(name: str, source: str | None = None, *, required: bool = True, description: str = "") -> Column:
    return _col(name, MONEY, source or name, required=required, description=description)


_VENDOR = _col("vendor_id", INTEGER, "VendorID", description="TPEP/LPEP provider code (1, 2)")
_RATECODE = _col("ratecode_id", INTEGER, "RatecodeID", description="Final rate code in effect at the end of the trip")
_PU = _col("pu_location_id", INTEGER, "PULocationID", "PUlocationID", description="TLC taxi zone of the pickup")
_DO = _col("do_location_id", INTEGER, "DOLocationID", "DOlocationID", description="TLC taxi zone of the dropoff")
_PASSENGERS = _col("passenger_count", INTEGER, description="Passengers, as entered by the driver")
_DISTANCE = _col("trip_distance", DECIMAL, description="Trip distance in miles reported by the taximeter")
_STORE_FWD = _col("store_and_fwd_flag", TEXT, description="Y if the trip record was held in the vehicle before sending")
_PAYMENT = _col("payment_type", INTEGER, description="How the passenger paid (1 card, 2 cash, ...)")
_CONGESTION = _money("congestion_surcharge", required=False, description="NYS congestion surcharge (from 2019)")
_AIRPORT = _money("airport_fee", "Airport_fee", required=False, description="Airport pickup fee (from 2021)")
# Optional columns the TLC added later go last: a month from before they existed reads them as null.
_CBD = _money("cbd_congestion_fee", required=False, description="Manhattan congestion relief zone toll (from 2025)")
_FARE_PARTS = (
    _money("fare_amount", description="Time-and-distance fare calculated by the meter"),
    _money("extra", description="Miscellaneous extras and surcharges"),
    _money("mta_tax"),
    _money("tip_amount", description="Credit card tips; cash tips are not included"),
    _money("tolls_amount"),
)

YELLOW = TripService(
    name="yellow",
    description="Yellow taxi (medallion) trips, street-hail in all five boroughs.",
    pickup_column="pickup_datetime",
    dropoff_column="dropoff_datetime",
    columns=(
        _VENDOR,
        _col("pickup_datetime", TIMESTAMP, "tpep_pickup_datetime", description="Meter engaged"),
        _col("dropoff_datetime", TIMESTAMP, "tpep_dropoff_datetime", description="Meter disengaged"),
        _PASSENGERS,
        _DISTANCE,
        _RATECODE,
        _STORE_FWD,
        _PU,
        _DO,
        _PAYMENT,
        *_FARE_PARTS,
        _money("improvement_surcharge"),
        _money("total_amount", description="Total charged to passengers, cash tips excluded"),
        _CONGESTION,
        _AIRPORT,
        _CBD,
    ),
    first_month="2011-01",
)

GREEN = TripService(
    name="green",
    description="Green taxi (boro cab) trips, street-hail outside Manhattan's core.",
    pickup_column="pickup_datetime",
    dropoff_column="dropoff_datetime",
    columns=(
        _VENDOR,
        _col("pickup_datetime", TIMESTAMP, "lpep_pickup_datetime", description="Meter engaged"),
        _col("dropoff_datetime", TIMESTAMP, "lpep_dropoff_datetime", description="Meter disengaged"),
        _STORE_FWD,
        _RATECODE,
        _PU,
        _DO,
        _PASSENGERS,
        _DISTANCE,
        *_FARE_PARTS,
        _money("ehail_fee", description="E-hail fee (blank in every published month)"),
        _money("improvement_surcharge"),
        _money("total_amount", description="Total charged to passengers, cash tips excluded"),
        _PAYMENT,
        _col("trip_type", INTEGER, description="1 street-hail, 2 dispatch"),
        _CONGESTION,
        _CBD,
    ),
    first_month="2013-08",
)

# The for-hire services (fhv, fhvhv) share these columns; fhv's 2019 files spell the dropoff dropOff_datetime.
_DISPATCHING_BASE = _col("dispatching_base_num", TEXT, description="TLC license number of the dispatching base")
_HIRE_PICKUP = _col("pickup_datetime", TIMESTAMP, description="Pickup time")
_HIRE_DROPOFF = _col("dropoff_datetime", TIMESTAMP, "dropOff_datetime", description="Dropoff time")

FHV = TripService(
    name="fhv",
    description="For-hire vehicle trips (community livery, black car, luxury limousine bases).",
    pickup_column="pickup_datetime",
    dropoff_column="dropoff_datetime",
    columns=(
        _DISPATCHING_BASE,
        _HIRE_PICKUP,
        _HIRE_DROPOFF,
        _PU,
        _DO,
        _col("sr_flag", TEXT, "SR_Flag", numeric_text=True, description="1 for a shared-ride request, blank otherwise"),
        _col(
            "affiliated_base_number", TEXT, "Affiliated_base_number", description="Base the vehicle is affiliated with"
        ),
    ),
    first_month="2015-01",
)


def _flag(name: str, description: str) -> Column:
    return _col(name, TEXT, description=description)


FHVHV = TripService(
    name="fhvhv",
    description="High-volume for-hire vehicle trips (Uber, Lyft, Via, Juno): one row per trip, fares included.",
    pickup_column="pickup_datetime",
    dropoff_column="dropoff_datetime",
    columns=(
        _col("hvfhs_license_num", TEXT, description="TLC license of the HVFHS company (HV0003 Uber, HV0005 Lyft)"),
        _DISPATCHING_BASE,
        _col("originating_base_num", TEXT, description="Base that received the original trip request"),
        _col("request_datetime", TIMESTAMP, description="Passenger requested the pickup"),
        _col("on_scene_datetime", TIMESTAMP, description="Driver arrived at the pickup (accessible vehicles only)"),
        _HIRE_PICKUP,
        _HIRE_DROPOFF,
        _PU,
        _DO,
        _col("trip_miles", DECIMAL, description="Miles driven for the passenger trip"),
        _col("trip_time", INTEGER, description="Seconds of the passenger trip"),
        _money("base_passenger_fare", description="Fare before tolls, tips, taxes and fees"),
        _money("tolls"),
        _money("bcf", description="Black Car Fund"),
        _money("sales_tax"),
        _CONGESTION,
        _AIRPORT,
        _money("tips"),
        _money("driver_pay", description="Driver pay, before tolls and tips"),
        _flag("shared_request_flag", "Y if the passenger agreed to a shared ride"),
        _flag("shared_match_flag", "Y if the passenger shared the vehicle with another booking"),
        _flag("access_a_ride_flag", "Y if administered on behalf of the MTA's Access-A-Ride"),
        _flag("wav_request_flag", "Y if the passenger requested a wheelchair-accessible vehicle"),
        _flag("wav_match_flag", "Y if the trip took place in a wheelchair-accessible vehicle"),
        _CBD,
    ),
    first_month="2019-02",
)

TAXI_ZONES = DataContract(
    name="taxi_zones",
    description="The TLC taxi zone lookup: 265 zones with their borough and service zone.",
    columns=(
        _col("location_id", INTEGER, "LocationID", description="Taxi zone id, as in pu/do_location_id"),
        _col("borough", TEXT, "Borough"),
        _col("zone", TEXT, "Zone"),
        _col("service_zone", TEXT, description="Yellow Zone, Boro Zone, Airports or EWR"),
    ),
)
ZONES_SOURCE_PATH = "misc/taxi_zone_lookup.csv"  # the same path in both layouts
ZONES_RAW_KEY = f"raw/{ZONES_SOURCE_PATH}"
ZONES_CLEAN_KEY = "clean/taxi_zones/taxi_zone_lookup.parquet"

SERVICES: dict[str, TripService] = {s.name: s for s in (YELLOW, GREEN, FHV, FHVHV)}


@dataclass(frozen=True)
class SourceLayout:
    """How a source names its monthly files, which services it has and when a month appears there."""

    name: str
    description: str
    extension: str
    # ``{service}`` and ``{file}`` (``yellow_tripdata_2021-01.parquet``), relative to the source's root.
    trips_path: str
    services: tuple[str, ...]
    # A month M is published about this many months after M ends (the TLC: "with two months delay").
    publication_lag_months: int
    # The newest month the source will ever have (``None``: it keeps publishing).
    last_month: str | None = None
    # Why a service is missing from ``services`` (said in the error when someone asks for it anyway).
    missing_reason: str = ""

    def has(self, service: TripService) -> bool:
        return service.name in self.services


TLC = SourceLayout(
    name="tlc",
    description="the TLC's own parquet files, every month it has published",
    extension=".parquet",
    trips_path="trip-data/{file}",
    services=("yellow", "green", "fhv", "fhvhv"),
    publication_lag_months=2,
)
MIRROR = SourceLayout(
    name="mirror",
    description="the DataTalksClub course's CSV.gz mirror, which ends at 2021-07",
    extension=".csv.gz",
    trips_path="{service}/{file}",
    services=("yellow", "green", "fhv"),
    publication_lag_months=2,  # a copy of the TLC's files, published on the TLC's calendar
    last_month="2021-07",
    # The mirror's fhvhv CSVs are the fhv layout (7 columns, no hvfhs_license_num, no fares or times): they
    # cannot fill the fhvhv contract, and guessing 17 of its 24 columns as null would be a lie in the warehouse.
    missing_reason="the mirror's fhvhv files have the 7-column fhv layout (no license, fares or times); "
    "use TAXI_SOURCE=tlc for fhvhv",
)
LAYOUTS: dict[str, SourceLayout] = {layout.name: layout for layout in (TLC, MIRROR)}
