"""The baselines of the benchmark, each run as its own process by ``benchmarks.run``:

``seed``        the course seeds' way: pandas reads the CSV.gz in 100k-row chunks and ``DataFrame.to_sql`` inserts
                them through SQLAlchemy and psycopg2 (written here as the seeds write it, only to measure it);
``arrow-copy``  the bare Arrow-to-COPY baseline: Arrow's CSV reader reads the whole month into one table, the ADBC
                Postgres driver sends it with binary COPY into a fresh table;
``download``    one connection at a time: the files one after another with a plain ``requests`` loop (the
                backfill-speed group's baseline against a source that limits each connection's rate).

Usage: ``python -m benchmarks.baselines seed|arrow-copy --csv FILE --url POSTGRES_URL --table NAME``, or
``python -m benchmarks.baselines download --url BASE_URL --paths P1,P2 --out DIR``. Prints one JSON object: the
rows loaded (read back with count(*)) or the files and bytes downloaded, and the seconds of each phase, timed inside
the process (after the imports). Peak memory is measured from outside, by ``benchmarks.run``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def seed_way(csv: str, url: str, table: str) -> dict:
    import pandas as pd
    from sqlalchemy import create_engine, text

    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg2://", 1))
    started = time.perf_counter()
    df_iter = pd.read_csv(csv, iterator=True, chunksize=100_000)
    for number, df in enumerate(df_iter):
        df.tpep_pickup_datetime = pd.to_datetime(df.tpep_pickup_datetime)
        df.tpep_dropoff_datetime = pd.to_datetime(df.tpep_dropoff_datetime)
        if number == 0:
            df.head(n=0).to_sql(name=table, con=engine, if_exists="replace")
        df.to_sql(name=table, con=engine, if_exists="append")
    load_seconds = time.perf_counter() - started
    with engine.connect() as conn:
        rows = conn.execute(text(f'SELECT count(*) FROM "{table}"')).scalar_one()
        conn.execute(text(f'DROP TABLE "{table}"'))
        conn.commit()
    engine.dispose()
    return {"rows": rows, "seconds": load_seconds}


def arrow_copy(csv: str, url: str, table: str) -> dict:
    import adbc_driver_postgresql.dbapi as adbc
    import pyarrow.csv as pacsv

    started = time.perf_counter()
    data = pacsv.read_csv(csv)  # the whole month, types inferred by Arrow
    read_seconds = time.perf_counter() - started
    with adbc.connect(url) as conn:
        with conn.cursor() as cursor:
            cursor.adbc_ingest(table, data, mode="replace")
        conn.commit()
        copy_seconds = time.perf_counter() - started - read_seconds
        with conn.cursor() as cursor:
            cursor.execute(f'SELECT count(*) FROM "{table}"')
            rows = cursor.fetchone()[0]
            cursor.execute(f'DROP TABLE "{table}"')
        conn.commit()
    return {
        "rows": rows,
        "seconds": read_seconds + copy_seconds,
        "read_seconds": read_seconds,
        "copy_seconds": copy_seconds,
    }


def one_connection(url: str, paths: list[str], out: str) -> dict:
    """Download ``paths`` under ``url`` one after another, streamed to files in ``out`` (one connection at a time)."""
    import requests

    started, written = time.perf_counter(), 0
    with requests.Session() as session:
        for path in paths:
            with session.get(f"{url}/{path}", stream=True, timeout=60) as response:
                response.raise_for_status()
                with open(Path(out) / Path(path).name, "wb") as file:
                    for chunk in response.iter_content(1 << 20):
                        written += file.write(chunk)
    return {"files": len(paths), "bytes": written, "seconds": time.perf_counter() - started}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.baselines", description=__doc__.split("\n\n")[0])
    parser.add_argument("way", choices=["seed", "arrow-copy", "download"])
    parser.add_argument("--url", required=True, help="libpq URL of the Postgres to load into; download: base URL")
    parser.add_argument("--csv", help="a month's .csv.gz (seed, arrow-copy)")
    parser.add_argument("--table", help="table to create, dropped afterwards (seed, arrow-copy)")
    parser.add_argument("--paths", help="download: comma-separated paths under --url, in order")
    parser.add_argument("--out", help="download: folder to write the files into")
    args = parser.parse_args(argv)
    if args.way == "download":
        if not (args.paths and args.out):
            parser.error("download needs --paths and --out")
        print(json.dumps(one_connection(args.url, args.paths.split(","), args.out)))
        return 0
    if not (args.csv and args.table):
        parser.error(f"{args.way} needs --csv and --table")
    way = seed_way if args.way == "seed" else arrow_copy
    print(json.dumps(way(args.csv, args.url, args.table)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
