"""The ``taxi-assets`` command. Each subcommand registers itself with ``_add_<name>(subparsers)``.

taxi-assets fake-source --out DIR [--services yellow,green,fhv,fhvhv] --months 2021-01[,2021-02|2021-01..2021-03]
                        [--rows N | --realistic] [--seed S] [--layout tlc|mirror] [--reissue]
taxi-assets summary --month 2021-01 [--data-dir DIR]
taxi-assets contract            (the data contract of every dataset, as Markdown tables)
taxi-assets stop-postgres [--data-dir DIR]
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
    from taxi_assets.resources.postgres import redact

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
