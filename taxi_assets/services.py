"""The data contract of every source dataset: columns, Arrow types, source spellings, file names.

This is the one place that knows what a TLC file looks like and what the lake keeps of it. Cleaning,
the warehouses and Postgres all derive their schemas from here, so a month can never drift from another.
"""

from __future__ import annotations

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
    """A monthly trips dataset published per service (yellow, green, fhv)."""

    def source_path(self, month: str) -> str:
        """Path of a month's file under the mirror's download root, e.g. ``yellow/yellow_tripdata_2021-01.csv.gz``."""
        return f"{self.name}/{self.name}_tripdata_{month}.csv.gz"

    def raw_key(self, month: str) -> str:
        return f"raw/{self.source_path(month)}"

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
    ),
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
    ),
)

FHV = TripService(
    name="fhv",
    description="For-hire vehicle trips (community livery, black car, luxury limousine bases).",
    pickup_column="pickup_datetime",
    dropoff_column="dropoff_datetime",
    columns=(
        _col("dispatching_base_num", TEXT, description="TLC license number of the dispatching base"),
        _col("pickup_datetime", TIMESTAMP, description="Pickup time"),
        _col("dropoff_datetime", TIMESTAMP, "dropOff_datetime", description="Dropoff time"),
        _PU,
        _DO,
        _col("sr_flag", TEXT, "SR_Flag", numeric_text=True, description="1 for a shared-ride request, blank otherwise"),
        _col(
            "affiliated_base_number", TEXT, "Affiliated_base_number", description="Base the vehicle is affiliated with"
        ),
    ),
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
ZONES_SOURCE_PATH = "misc/taxi_zone_lookup.csv"
ZONES_RAW_KEY = f"raw/{ZONES_SOURCE_PATH}"
ZONES_CLEAN_KEY = "clean/taxi_zones/taxi_zone_lookup.parquet"

SERVICES: dict[str, TripService] = {s.name: s for s in (YELLOW, GREEN, FHV)}
