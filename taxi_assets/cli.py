"""The ``taxi-assets`` command. Each subcommand registers itself with ``_add_<name>(subparsers)``.

taxi-assets fake-source --out DIR [--services yellow,green,fhv,fhvhv] --months 2021-01[,2021-02|2021-01..2021-03]
                        [--rows N | --realistic] [--seed S] [--layout tlc|mirror] [--reissue]
taxi-assets summary --month 2021-01 [--data-dir DIR]
taxi-assets contract            (the data contract of every dataset, as Markdown tables)
taxi-assets stop-postgres [--data-dir DIR]
taxi-assets gcp-smoke [--month 2021-01] [--rows N] [--keep]   (a real GCP project: docs/GCP.md)
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from taxi_assets import settings
from taxi_assets.months import Month, months_between
from taxi_assets.services import LAYOUTS, SERVICES

SERVICE_NAMES = tuple(SERVICES)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="taxi-assets", description="Tools for the taxi_assets code location.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_fake_source(subparsers)
    _add_summary(subparsers)
    _add_contract(subparsers)
    _add_stop_postgres(subparsers)
    _add_gcp_smoke(subparsers)
    args = parser.parse_args(argv)
    return args.run(args)


# --- fake-source ---------------------------------------------------------------------------------------------


def _add_fake_source(subparsers) -> None:
    parser = subparsers.add_parser(
        "fake-source",
        help="write fake TLC files (the TLC's parquet or the mirror's CSV.gz) into a folder",
        description="Write fake TLC trip files in the TLC's parquet layout (with each era's column types) or the "
        "public mirror's CSV.gz layout, the zone lookup and a manifest.json.",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="folder to write into (created if missing)")
    parser.add_argument("--services", type=_services, help="comma-separated (default: every service of the layout)")
    parser.add_argument(
        "--months", type=_months, required=True, help="comma-separated YYYY-MM, or a range A..B (e.g. 2021-01..2021-03)"
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--rows", type=_rows, help="data rows per file, quirk rows included (default: 10000)")
    size.add_argument("--realistic", action="store_true", help="as many rows as the real month has (millions)")
    parser.add_argument("--seed", type=_seed, default=0, help="random seed; same seed, same bytes (default: 0)")
    parser.add_argument(
        "--layout", choices=sorted(LAYOUTS), default="tlc", help="tlc: trip-data/*.parquet (default); mirror: *.csv.gz"
    )
    parser.add_argument(
        "--reissue", action="store_true", help="tlc only: the same values with the other type of each drifting column"
    )
    parser.set_defaults(run=lambda args: _run_fake_source(parser, args))


def _run_fake_source(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from pathlib import Path

    from taxi_assets.fake_source import write_fake_source

    layout = LAYOUTS[args.layout]
    services = args.services or [name for name in SERVICE_NAMES if name in layout.services]
    missing = [name for name in services if name not in layout.services]
    if missing:
        names = ", ".join(missing)
        parser.error(f"argument --services: {names} not in the {layout.name} layout: {layout.missing_reason}")
    if args.reissue and layout.name != "tlc":
        parser.error("argument --reissue: needs --layout tlc (the mirror's CSV files have no column types)")
    manifest = write_fake_source(
        args.out, services, args.months, args.rows, args.seed, args.realistic, layout=layout.name, reissue=args.reissue
    )
    out = Path(args.out)
    for relative in (SERVICES[s].source_path(m, layout) for s in services for m in args.months):
        print(f"{out / relative}\t{manifest['files'][relative]['rows']}")
    print(f"{out / manifest['zones']['path']}\t{manifest['zones']['rows']}")
    return 0


# --- summary -------------------------------------------------------------------------------------------------


def _add_summary(subparsers) -> None:
    parser = subparsers.add_parser(
        "summary",
        help="rows of a month in the lake, the warehouse and Postgres (embedded default)",
        description="Print a month's row count in every store of the embedded default, and how to query them.",
    )
    parser.add_argument("--month", type=_month_key, required=True, help="YYYY-MM")
    parser.add_argument("--data-dir", help="TAXI_DATA_DIR of the run (default: $TAXI_DATA_DIR or ./data)")
    parser.set_defaults(run=_run_summary)


def _run_summary(args: argparse.Namespace) -> int:
    from contextlib import ExitStack

    from taxi_assets.targets import local_resources

    stores = local_resources(_data_dir(args))
    with ExitStack() as stack:
        # Initialized as Dagster would (EnvVar settings such as TAXI_POSTGRES_URL resolved), and torn down here.
        lake, warehouse, postgres = (
            stack.enter_context(stores[k].process_config_and_initialize_cm()) for k in ("lake", "warehouse", "postgres")
        )
        _print_summary(args, lake, warehouse, postgres)
    return 0


def _print_summary(args: argparse.Namespace, lake, warehouse, postgres) -> None:
    month = Month.parse(args.month)
    print(f"{'service':<8} {'lake':>12} {'warehouse':>12} {'postgres':>12}   ({args.month})")
    for service in SERVICES.values():
        key = service.clean_key(args.month)
        lake_rows = lake.parquet_row_count(key) if lake.exists(key) else 0
        counts = (lake_rows, warehouse.month_row_count(service, month), postgres.month_row_count(service, month))
        print(f"{service.name:<8} " + " ".join(f"{n:>12,}" for n in counts))
    from taxi_assets.secrets import redact

    print(f"\nlake:      {lake.uri('clean')}\nwarehouse: duckdb {warehouse.database}")
    print(f"postgres:  psql '{redact(postgres.connection_url())}'")


# --- contract ------------------------------------------------------------------------------------------------


def _add_contract(subparsers) -> None:
    parser = subparsers.add_parser("contract", help="print the data contract of every dataset as Markdown")
    parser.set_defaults(run=lambda args: print(contract_markdown(), end="") or 0)


def contract_markdown() -> str:
    """The data contract as Markdown tables (README.md embeds this output; a test keeps them equal)."""
    from taxi_assets.services import LAYOUTS, TAXI_ZONES, ZONES_SOURCE_PATH

    lines: list[str] = []
    for contract in [*SERVICES.values(), TAXI_ZONES]:
        if contract.name in SERVICES:
            paths = [
                SERVICES[contract.name].source_path("YYYY-MM", layout)
                for layout in LAYOUTS.values()
                if layout.has(contract)
            ]
        else:
            paths = [ZONES_SOURCE_PATH]
        lines += [
            f"#### `{contract.name}` from {' or '.join(f'`{p}`' for p in paths)}",
            "",
            "| column | type | source header | |",
            "|---|---|---|---|",
        ]
        for column in contract.columns:
            headers = ", ".join(f"`{name}`" for name in column.source_names or (column.name,))
            lines.append(
                f"| `{column.name}` | {column.type} | {headers} | {'required' if column.required else 'optional'} |"
            )
        lines.append("")
    return "\n".join(lines)


# --- stop-postgres -------------------------------------------------------------------------------------------


def _add_stop_postgres(subparsers) -> None:
    parser = subparsers.add_parser(
        "stop-postgres",
        help="stop the embedded Postgres of the embedded default",
        description="Stop the embedded Postgres under {TAXI_DATA_DIR}/postgres (it keeps running between runs).",
    )
    parser.add_argument("--data-dir", help="TAXI_DATA_DIR of the runs (default: $TAXI_DATA_DIR or ./data)")
    parser.set_defaults(run=_run_stop_postgres)


def _data_dir(args: argparse.Namespace) -> Path:
    """``--data-dir``, else ``TAXI_DATA_DIR`` (default ``./data``)."""
    return Path(args.data_dir).resolve() if args.data_dir else settings.data_dir()


def _run_stop_postgres(args: argparse.Namespace) -> int:
    from taxi_assets.resources.postgres import stop_embedded_postgres

    folder = _data_dir(args) / "postgres"
    print(f"{folder}: {'stopped' if stop_embedded_postgres(folder) else 'no server running'}")
    return 0


# --- gcp-smoke -----------------------------------------------------------------------------------------------


def _add_gcp_smoke(subparsers) -> None:
    parser = subparsers.add_parser(
        "gcp-smoke",
        help="load one small fake month through GCS and BigQuery of a real project, and check what only it can show",
        description="With the gcp target's settings (TAXI_GCS_BUCKET, TAXI_GCP_PROJECT, TAXI_BQ_LOCATION, "
        "TAXI_GCP_CREDENTIALS or ADC), materialize one fake yellow month through the real raw, clean and warehouse "
        "assets into the folder _smoke/<id>/ of the bucket and the dataset <TAXI_BQ_DATASET>_smoke_<id>, then "
        "check: DATETIME values unshifted, counts read back, a forced count mismatch rolled back, the external "
        "table's rows, no key material in the logs. Both are deleted at the end unless --keep. Costs a few cents "
        "at most; needs billing (the sandbox has no DML).",
    )
    parser.add_argument("--month", type=_month_key, default="2021-01", help="YYYY-MM (default: 2021-01)")
    parser.add_argument("--rows", type=_rows, default=2_000, help="rows of the fake month (default: 2000)")
    parser.add_argument("--keep", action="store_true", help="keep the smoke's objects and dataset to look at them")
    parser.set_defaults(run=_run_gcp_smoke)


def _with(resource, **changes):
    """A copy of an (unresolved) resource with some fields changed: a new instance, as Dagster reads its config
    from the constructor's arguments (``model_copy`` would change the attribute, not what a run resolves)."""
    fields = {name: getattr(resource, name) for name in type(resource).model_fields}
    return type(resource)(**{**fields, **changes})


class _Tee:
    """A text stream that writes to ``stream`` and keeps a copy: the smoke scans what it printed and logged."""

    def __init__(self, stream):
        import io

        self.stream, self.copy = stream, io.StringIO()

    def write(self, text: str) -> int:
        self.copy.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return False


def _run_gcp_smoke(args: argparse.Namespace) -> int:
    import sys
    import uuid
    from contextlib import ExitStack, redirect_stderr, redirect_stdout

    from taxi_assets.targets import gcp_stores

    smoke_id = uuid.uuid4().hex[:8]
    # The gcp target's lake and warehouse settings, checked as at the code location's load (no Postgres here).
    resources = gcp_stores()
    # Its own folder of the bucket and its own dataset: the deployment's months are never touched.
    lake_def = _with(resources["lake"], prefix=f"_smoke/{smoke_id}/")
    warehouse_def = _with(resources["warehouse"], dataset=f"{resources['warehouse'].dataset}_smoke_{smoke_id}")
    out, err = _Tee(sys.stdout), _Tee(sys.stderr)
    results: list[tuple[str, bool, str]] = []
    with ExitStack() as stack:
        lake = stack.enter_context(lake_def.process_config_and_initialize_cm())
        warehouse = stack.enter_context(warehouse_def.process_config_and_initialize_cm())
        print(f"gcp-smoke {smoke_id}: {lake.uri('')} and {warehouse.bigquery.project}.{warehouse.dataset}")
        event_log: list[str] = []
        try:
            with redirect_stdout(out), redirect_stderr(err):
                _smoke(args, lake_def, warehouse_def, lake, warehouse, results, event_log)
            logged = "\n".join([out.copy.getvalue(), err.copy.getvalue(), *event_log])
            results.append(_smoke_no_key_material(logged))
        finally:
            if not args.keep:
                _smoke_clean_up(lake, warehouse)
    for name, ok, detail in results:
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")
    failed = [name for name, ok, _ in results if not ok]
    print(f"gcp-smoke {smoke_id}: {'all checks passed' if not failed else 'failed: ' + ', '.join(failed)}")
    return 1 if failed else 0


def _smoke(args, lake_def, warehouse_def, lake, warehouse, results: list, event_log: list[str]) -> None:
    """The pipeline (the real assets, resources as the gcp target builds them), then each check in turn."""
    import tempfile

    import dagster as dg

    from taxi_assets.assets.trips import build_trip_assets
    from taxi_assets.fake_source import write_fake_source
    from taxi_assets.partitions import Calendar
    from taxi_assets.services import TLC, YELLOW
    from taxi_assets.source import TaxiSource
    from taxi_assets.targets import KINDS

    month, service = Month.parse(args.month), YELLOW
    with tempfile.TemporaryDirectory(prefix="taxi-gcp-smoke-") as folder:
        write_fake_source(folder, [service.name], [month.key], args.rows, 0, layout="tlc")
        raw, clean, load, _ = build_trip_assets(
            service, KINDS["gcp"], dg.BackfillPolicy.single_run(), Calendar(layout=TLC, first_month=month.key)
        )
        instance = dg.DagsterInstance.ephemeral()
        run = dg.materialize(
            [raw, clean, load],
            partition_key=month.key,
            resources={"lake": lake_def, "warehouse": warehouse_def, "source": TaxiSource(base_url=folder)},
            instance=instance,
            raise_on_error=False,
        )
    # The run's event log (messages and metadata) is scanned for key material, with what was printed.
    event_log.extend(dg.serialize_value(record) for record in instance.all_logs(run.run_id))
    failures = [e.message for e in run.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    results.append(("pipeline", run.success, "raw, clean, warehouse materialized" if run.success else str(failures)))
    if not run.success:
        return

    try:
        _smoke_checks(args, run, lake, warehouse, results)
    except Exception as error:  # noqa: BLE001 - a check that cannot run is a failed check, reported with the rest
        results.append(("checks", False, f"stopped by {type(error).__name__}: {error}"))


def _smoke_checks(args, run, lake, warehouse, results: list) -> None:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from taxi_assets.resources.bigquery import BigQueryWarehouse
    from taxi_assets.services import YELLOW

    month, service = Month.parse(args.month), YELLOW
    key = service.clean_key(month.key)
    with warehouse.bigquery.get_client() as client:
        table_id = f"{client.project}.{warehouse.dataset}.{service.table_name}"
        lake_rows = lake.parquet_row_count(key)
        month_rows = warehouse.month_row_count(service, month)
        results.append(
            (
                "counts read back",
                lake_rows == month_rows == _clean_rows(run) and month_rows > 0,
                f"cleaned {_clean_rows(run):,}, lake {lake_rows:,}, BigQuery {month_rows:,} rows in {month.key}",
            )
        )

        # DATETIME: the wall-clock times of the clean parquet, unshifted (a UTC conversion would move the hours).
        with lake.read(key) as path:
            pickup = pq.read_table(path, columns=[service.pickup_column])[service.pickup_column]
        want = (str(pc.min(pickup).as_py()), str(pc.max(pickup).as_py()), int(pc.sum(pc.hour(pickup)).as_py()))
        column_type = {f.name: f.field_type for f in client.get_table(table_id).schema}[service.pickup_column]
        got = _smoke_datetimes(client, table_id, service.pickup_column, month)
        results.append(
            (
                "DATETIME unshifted",
                column_type == "DATETIME" and got == want,
                f"{service.pickup_column} is {column_type}; min, max, sum of hours: BigQuery {got}, lake {want}",
            )
        )

        # A forced count mismatch inside the transaction: BigQuery must roll the whole swap back.
        class _OffByOne(BigQueryWarehouse):
            def _staged_counts(self, *a):
                staged, outside = super()._staged_counts(*a)
                return staged + 1, outside

        forced = _OffByOne(bigquery=warehouse.bigquery, dataset=warehouse.dataset)
        try:
            forced.replace_month(service, month, lake, key)
            outcome = "the swap committed despite the wrong count"
            rolled_back = False
        except Exception as error:  # noqa: BLE001 - any failure is the expected outcome; the count decides
            after = warehouse.month_row_count(service, month)
            staging = [t.table_id for t in client.list_tables(f"{client.project}.{warehouse.dataset}")]
            staging = [t for t in staging if t.startswith("_staging")]
            rolled_back = "differs from the staged rows" in str(error) and after == month_rows and not staging
            outcome = f"failed ({type(error).__name__}), {after:,} rows after, staging tables left: {staging or 'none'}"
        results.append(("forced count mismatch rolls back", rolled_back, outcome))

        # The external table over the lake's clean objects: the same rows.
        external = _smoke_count(client, f"{table_id}_external", service.pickup_column, month)
        results.append(
            ("external table", external == month_rows, f"{external:,} rows in {month.key}, native {month_rows:,}")
        )


def _clean_rows(run) -> int | None:
    """The rows clean_trips wrote (the fake month less the rows the cleaning dropped), from its metadata."""
    for event in run.get_asset_materialization_events():
        if event.asset_key.path[-1] == "clean_trips":
            return event.materialization.metadata["dagster/partition_row_count"].value
    return None


def _smoke_where(column: str, month: Month) -> str:
    return f"{column} >= DATETIME '{month.start:%Y-%m-%d}' AND {column} < DATETIME '{month.end:%Y-%m-%d}'"


def _smoke_count(client, table_id: str, column: str, month: Month) -> int:
    sql = f"SELECT COUNT(*) AS n FROM `{table_id}` WHERE {_smoke_where(column, month)}"
    return next(iter(client.query(sql).result(timeout=300))).n


def _smoke_datetimes(client, table_id: str, column: str, month: Month) -> tuple[str, str, int]:
    sql = (
        f"SELECT CAST(MIN({column}) AS STRING) AS lo, CAST(MAX({column}) AS STRING) AS hi, "
        f"SUM(EXTRACT(HOUR FROM {column})) AS hours FROM `{table_id}` WHERE {_smoke_where(column, month)}"
    )
    row = next(iter(client.query(sql).result(timeout=300)))
    return row.lo.replace("T", " "), row.hi.replace("T", " "), int(row.hours)


def _smoke_no_key_material(text: str) -> tuple[str, bool, str]:
    """Whether ``text`` (what the smoke printed and logged, and the run's event log) holds no part of the key of
    ``TAXI_GCP_CREDENTIALS`` and no private key or OAuth access token at all. Names what was found, never it."""
    import json

    needles: dict[str, str] = {"a PEM private key": "PRIVATE KEY-----", "an OAuth access token": "ya29."}
    key = settings.value(settings.GCP_CREDENTIALS)
    if key:
        try:
            info = json.loads(key) if key.startswith("{") else json.loads(Path(key).read_text())
        except (OSError, ValueError):
            info = {}
        for field in ("private_key_id", "client_secret", "refresh_token"):
            if isinstance(info.get(field), str) and len(info[field]) >= 8:
                needles[f"the key's {field}"] = info[field]
        pem = [line for line in str(info.get("private_key", "")).splitlines() if len(line) >= 32]
        for n, line in enumerate(pem):
            needles[f"line {n + 1} of the key's private_key"] = line
    found = [name for name, needle in needles.items() if needle in text]
    checked = f"{len(text):,} characters of output and event log, {len(needles)} patterns"
    return "no key material in the logs", not found, f"found {', '.join(found)}" if found else checked


def _smoke_clean_up(lake, warehouse) -> None:
    """Delete the smoke's dataset and its objects (everything under the lake's prefix)."""
    with warehouse.bigquery.get_client() as client:
        client.delete_dataset(
            f"{client.project}.{warehouse.dataset}", delete_contents=True, not_found_ok=True, timeout=120
        )
    gcs = lake._storage()
    for blob in gcs.list_blobs(lake.bucket, prefix=lake.prefix, timeout=120):
        blob.delete(timeout=120)
    print(f"deleted {lake.uri('')} and the dataset {warehouse.dataset}")


def _month_key(text: str) -> str:
    return _month(text).key


def _services(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in SERVICE_NAMES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown service {', '.join(map(repr, unknown)) or repr(text)} (choose from {', '.join(SERVICE_NAMES)})"
        )
    return list(dict.fromkeys(names))


def _month(text: str) -> Month:
    try:
        return Month.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _months(text: str) -> list[str]:
    months: list[str] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        first, sep, last = item.partition("..")
        start, end = _month(first), _month(last if sep else first)
        if end.start < start.start:
            raise argparse.ArgumentTypeError(f"range end {last} is before its start {first}")
        months.extend(months_between(start.key, end.key))
    if not months:
        raise argparse.ArgumentTypeError(f"no month in {text!r}")
    return list(dict.fromkeys(months))


def _rows(text: str) -> int:
    from taxi_assets.fake_source import MIN_ROWS

    try:
        rows = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if rows < MIN_ROWS:
        raise argparse.ArgumentTypeError(f"must be at least {MIN_ROWS} (to hold every quirk), got {rows}")
    return rows


def _seed(text: str) -> int:
    try:
        seed = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if seed < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {seed}")
    return seed


if __name__ == "__main__":
    raise SystemExit(main())
