"""Cleaning a source file into canonical parquet, as plain functions on Arrow record batches (no Dagster).

The source is the mirror's CSV(.gz) or the TLC's parquet (told apart by their first bytes). Either is streamed in
record batches straight into a parquet writer, so memory stays bounded whatever the size of the month. Each batch
is renamed and cast to the data contract's schema, whatever physical types this month's file happens to use (the
TLC's parquet drifts: integers as DOUBLE, INT64 or INT32, all-null columns of parquet's Null type), then the drop
rules run. Exactly two rules drop rows, and every dropped row is counted under the first rule it breaks:

- ``pickup_outside_month``: the pickup is not inside the partition's month (or is blank);
- ``dropoff_before_pickup``: the dropoff is earlier than the pickup.

Nothing else is dropped or filled in: a blank passenger count stays null, zero distances and negative amounts
(voids and refunds) are kept as the TLC published them.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from taxi_assets.services import Column, ContractError, DataContract

DROP_RULES = ("pickup_outside_month", "dropoff_before_pickup")
# Bytes of CSV per record batch (about 8k yellow rows). Measured on a 1.37M-row yellow month (2 cores): the
# streaming reader keeps several blocks in flight, so peak memory grows with the block (16 MiB: +330 MB,
# 4 MiB: +200 MB, 1 MiB: +110 MB over the imports) while the time stays about 1 s. See docs/BENCHMARKS.md.
CSV_BLOCK_SIZE = 1 << 20
# Kept rows are gathered into parquet row groups of about this many rows (small blocks would otherwise give
# tiny row groups: slow to write, slow to scan). 128k rows of yellow are about 20 MB in memory.
ROW_GROUP_ROWS = 128 * 1024
PARQUET_COMPRESSION = "zstd"


@dataclass
class CleaningReport:
    rows_read: int = 0
    rows_written: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_RULES, 0))

    @property
    def rows_dropped(self) -> int:
        return sum(self.dropped.values())


PARQUET_MAGIC = b"PAR1"
# Rows per record batch read from a parquet source: about 10 MB of fhvhv, whatever the file's row groups hold.
PARQUET_BATCH_ROWS = 64 * 1024
# Columns some TLC files carry that are no data (pandas wrote its index); never part of a contract.
IGNORED_SOURCE_COLUMNS = frozenset({"__index_level_0__"})


def is_parquet(path: Path) -> bool:
    with open(path, "rb") as probe:
        return probe.read(4) == PARQUET_MAGIC


def _parquet_file(path: Path, source: str | None = None) -> pq.ParquetFile:
    """``path`` opened for streaming: one row group's pages at a time through a small read buffer."""
    try:
        # INT96 timestamps (old Spark writers) as microseconds: nanoseconds would overflow for year 3019.
        return pq.ParquetFile(str(path), buffer_size=1 << 20, pre_buffer=False, coerce_int96_timestamp_unit="us")
    except (pa.ArrowException, OSError) as error:
        raise ContractError(f"{source or path}: not a readable parquet file ({error})") from error


def _parquet_header(file: pq.ParquetFile) -> list[str]:
    return [name for name in file.schema_arrow.names if name not in IGNORED_SOURCE_COLUMNS]


def _open(path: Path) -> pa.NativeFile:
    """``path`` as a stream, gunzipped when its first bytes say gzip (staged files have no telling extension)."""
    with open(path, "rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    return pa.input_stream(str(path), compression="gzip" if gzipped else None)


def read_header(path: Path) -> list[str]:
    """The column names of a parquet file, or the header row of a CSV or CSV.gz file."""
    if is_parquet(path):
        return _parquet_header(_parquet_file(path))
    with _gzip_errors_named(path), _open(path) as stream:
        first_line = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="").readline()
    if not first_line.strip():
        raise ContractError(f"{path}: the file is empty (no header row)")
    return next(csv.reader([first_line]))


def read_batches(path: Path, contract: DataContract, block_size: int = CSV_BLOCK_SIZE) -> Iterator[pa.RecordBatch]:
    """Stream ``path`` (parquet, CSV or CSV.gz) as record batches in ``contract``'s canonical schema (renamed,
    typed, in contract order).

    Raises ``ContractError`` naming the file and the column for unknown, missing or unparsable columns.
    """
    if is_parquet(path):
        yield from _parquet_batches(path, contract)
        return
    header = read_header(path)
    matched = contract.match_header(header, str(path))
    column_of = {c.name: source for source, c in matched.items()}
    options = pacsv.ConvertOptions(
        column_types={source: c.read_type for source, c in matched.items()},
        null_values=[""],  # only blank is missing: a zone named "N/A" stays text
        strings_can_be_null=True,
    )
    try:  # opening parses the first block already
        with _gzip_errors_named(path):
            reader = pacsv.open_csv(
                _open(path), read_options=pacsv.ReadOptions(block_size=block_size), convert_options=options
            )
    except pa.ArrowInvalid as error:
        raise _parse_error(path, header, error) from error
    while True:
        try:
            with _gzip_errors_named(path):
                batch = reader.read_next_batch()
        except StopIteration:
            return
        except pa.ArrowInvalid as error:
            raise _parse_error(path, header, error) from error
        yield pa.RecordBatch.from_arrays(
            [_to_canonical(batch, column_of.get(c.name), c, path) for c in contract.columns],
            schema=contract.schema,
        )


def _parquet_batches(path: Path, contract: DataContract, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
    """The parquet file's record batches in canonical form (or only ``columns``, canonical names, for checks)."""
    file = _parquet_file(path)
    matched = contract.match_header(_parquet_header(file), str(path))
    column_of = {c.name: source for source, c in matched.items()}
    wanted = [c for c in contract.columns if columns is None or c.name in columns]
    schema = pa.schema([contract.schema.field(c.name) for c in wanted])
    read = [column_of[c.name] for c in wanted if c.name in column_of]
    try:
        for batch in file.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=read, use_threads=False):
            yield pa.RecordBatch.from_arrays(
                [_to_canonical(batch, column_of.get(c.name), c, path) for c in wanted], schema=schema
            )
    except (pa.ArrowException, OSError) as error:  # a truncated or corrupt page
        raise ContractError(f"{path}: the parquet file cannot be read ({error})") from error


def check_source_file(path: Path, contract: DataContract, source: str) -> None:
    """Prove that the downloaded ``path`` can be cleaned before it replaces the raw zone's copy: the values fit the
    contract, checked by the cleaning's own conversion in one streaming pass (one batch in memory at a time).

    For parquet: a readable footer, columns the contract knows, and every column whose cast can fail (floats or
    text into an integer or timestamp column) actually cast, value by value. Casts that cannot fail (INT32 to
    INT64, Null to anything) are not read. For CSV(.gz): the header, and every value parsed and cast as cleaning
    does (text could hide in any typed column: an integer column holding ``abc`` or ``1.5`` is an error).
    ``source`` (the URL) names the file in errors.
    """
    try:
        if is_parquet(path):
            _check_parquet_values(path, contract, source)
        else:
            contract.match_header(read_header(path), source)
            for _ in read_batches(path, contract):
                pass
    except ContractError as error:
        raise ContractError(str(error).replace(str(path), source)) from error


def _check_parquet_values(path: Path, contract: DataContract, source: str) -> None:
    file = _parquet_file(path, source)
    matched = contract.match_header(_parquet_header(file), source)
    types = {field.name: field.type for field in file.schema_arrow}
    lossy = [c.name for name, c in matched.items() if not _cast_is_lossless(types[name], c.type)]
    for _ in _parquet_batches(path, contract, columns=lossy) if lossy else ():
        pass


def _cast_is_lossless(source: pa.DataType, target: pa.DataType) -> bool:
    """Whether every value of ``source`` casts to ``target`` (then the values need not be read to prove it)."""
    if source == target or pa.types.is_null(source) or pa.types.is_string(target):
        return True
    if pa.types.is_integer(source) and pa.types.is_integer(target):
        return source.bit_width <= target.bit_width
    return pa.types.is_floating(target) and (pa.types.is_integer(source) or pa.types.is_floating(source))


@contextmanager
def _gzip_errors_named(path: Path) -> Iterator[None]:
    """Arrow's gzip decoder's complaints about ``path`` as errors of the file, naming it: a cut stream (the decoder
    reached the end of the file inside it) or bytes that are not deflate data. Another ``OSError`` (the disk)
    passes unchanged."""
    try:
        yield
    except OSError as error:
        message = str(error)
        if message.startswith("Truncated compressed stream"):
            raise ContractError(f"{path}: the gzip stream is truncated (download incomplete)") from error
        if "inflate failed" in message:
            raise ContractError(f"{path}: not a valid gzip file ({message})") from error
        raise


def _parse_error(path: Path, header: list[str], error: pa.ArrowInvalid) -> ContractError:
    """Arrow says ``CSV column #3``; name the column as the file spells it."""
    message = str(error)
    found = re.search(r"CSV column #(\d+)", message)
    if found and int(found.group(1)) < len(header):
        return ContractError(f"{path}: column {header[int(found.group(1))]!r}: {message}")
    return ContractError(f"{path}: {message}")


def _to_canonical(batch: pa.RecordBatch, source: str | None, column: Column, path: Path) -> pa.Array:
    if source is None:  # an optional column this month does not have
        return pa.nulls(batch.num_rows, column.type)
    values = batch.column(source)
    if column.numeric_text:
        if not pa.types.is_string(values.type):
            values = values.cast(pa.string())  # a parquet month that stored the code as a number (1.0)
        values = pc.replace_substring_regex(values, pattern=r"^(-?\d+)\.0+$", replacement=r"\1")
    try:
        return values.cast(column.type)  # safe cast: 1.0 -> 1, but 1.5 is an error, never a silent truncation
    except pa.ArrowInvalid as error:
        raise ContractError(f"{path}: column {source!r} does not fit {column.type}: {error}") from error


def apply_drop_rules(
    batch: pa.RecordBatch, contract: DataContract, month_start: datetime, month_end: datetime
) -> tuple[pa.RecordBatch, dict[str, int]]:
    """Drop the rows that break a rule; return the kept rows and how many each rule dropped."""
    pickup = batch.column(contract.pickup_column)
    dropoff = batch.column(contract.dropoff_column)
    start = pa.scalar(month_start, type=pickup.type)
    end = pa.scalar(month_end, type=pickup.type)
    in_month = pc.fill_null(pc.and_(pc.greater_equal(pickup, start), pc.less(pickup, end)), False)
    dropoff_first = pc.fill_null(pc.less(dropoff, pickup), False)
    keep = pc.and_(in_month, pc.invert(dropoff_first))
    kept = batch.filter(keep)
    outside = batch.num_rows - pc.sum(in_month).as_py()
    return kept, {"pickup_outside_month": outside, "dropoff_before_pickup": batch.num_rows - outside - kept.num_rows}


def clean_trips_file(
    source: Path, dest: Path, contract: DataContract, month_start: datetime, month_end: datetime, progress=None
) -> CleaningReport:
    """Clean one month's trips CSV into a parquet file; ``progress(report)`` is called after each row group
    written (about every ``ROW_GROUP_ROWS`` rows) and once at the end."""
    report = CleaningReport()
    # No dictionary for timestamps: nearly every value is distinct, so the dictionary fills, is thrown away and the
    # column falls back to plain pages. Measured: the writer's memory then stays the same whatever the month holds
    # (with timestamp dictionaries it rose by 25 MB on some months) and the files are 15% smaller.
    dictionary = [f.name for f in contract.schema if not pa.types.is_timestamp(f.type)]
    with pq.ParquetWriter(
        str(dest), contract.schema, compression=PARQUET_COMPRESSION, use_dictionary=dictionary
    ) as writer:
        pending: list[pa.RecordBatch] = []
        pending_rows = 0

        def flush() -> None:
            nonlocal pending, pending_rows
            # One call, one row group: the writer splits a table at row_group_size, never merges calls.
            writer.write_table(pa.Table.from_batches(pending, contract.schema), row_group_size=max(pending_rows, 1))
            pending, pending_rows = [], 0

        for batch in read_batches(source, contract):
            kept, dropped = apply_drop_rules(batch, contract, month_start, month_end)
            report.rows_read += batch.num_rows
            report.rows_written += kept.num_rows
            for rule, count in dropped.items():
                report.dropped[rule] += count
            if kept.num_rows:
                pending.append(kept)
                pending_rows += kept.num_rows
            if pending_rows >= ROW_GROUP_ROWS:
                flush()
                if progress:
                    progress(report)
        if pending:
            flush()
        if progress:
            progress(report)
    # Arrow's allocator keeps freed blocks for reuse; hand them back so the next step (often in the same
    # process) starts from the imports' footprint, not from this one's peak (about 110 MB here).
    pa.default_memory_pool().release_unused()
    return report


def clean_lookup_file(source: Path, dest: Path, contract: DataContract) -> CleaningReport:
    """Convert a small lookup CSV (the taxi zones) to typed parquet; no rows are dropped."""
    report = CleaningReport(dropped={})
    table = pa.Table.from_batches(list(read_batches(source, contract)), schema=contract.schema)
    pq.write_table(table, str(dest), compression=PARQUET_COMPRESSION)
    report.rows_read = report.rows_written = table.num_rows
    return report
