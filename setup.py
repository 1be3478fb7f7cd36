from setuptools import find_packages, setup

setup(
    name="taxi_assets",
    version="0.1.0",
    description="Dagster code location: NYC TLC taxi trips into a data lake, a warehouse and Postgres",
    packages=find_packages(exclude=["taxi_assets_tests", "benchmarks"]),
    python_requires=">=3.10",
    install_requires=[
        "dagster==1.13.27",
        "dagster-webserver==1.13.27",
        "dagster-gcp==0.29.27",
        "dagster-gcp-pandas==0.29.27",
        "dagster-postgres==0.29.27",
        # dagster-postgres speaks psycopg2; SQLAlchemy 2.1 maps a bare postgresql:// URL to psycopg 3.
        "sqlalchemy>=2.0,<2.1",
        # DuckDBResource (connection with lock retries) for the embedded warehouse.
        "dagster-duckdb==0.29.27",
        # DuckDBPandasIOManager: the embedded default's IO manager of the summaries (pandas DataFrames).
        "dagster-duckdb-pandas==0.29.27",
        # 1.5.5: the version whose spatial extension ships on PyPI, which the BigQuery emulator needs.
        "duckdb==1.5.5",
        "pandas>=2.2,<3",
        "pyarrow==26.0.1",
        # The embedded default's real Postgres 16, from a pip package. It has wheels for x86_64 Linux and macOS only;
        # elsewhere (an ARM image, which runs against TAXI_POSTGRES_URL anyway) it is left out.
        'pgserver==0.1.4; platform_machine == "x86_64" or sys_platform == "darwin"',
        # Binary COPY of Arrow record batches into Postgres, in C (streamed, no Python per row).
        "adbc-driver-postgresql==1.13.0",
        # The fake source's random columns, and the summaries' float columns.
        "numpy>=2,<3",
        # pandas' DataFrame.to_markdown: the summaries' preview in the UI.
        "tabulate>=0.9",
        # Streamed downloads with urllib3 retries on transient failures only.
        "requests>=2.32,<3",
    ],
    extras_require={
        "test": [
            "pytest==9.2.0",
            # The tests read Postgres back directly (taxi_assets_tests/stores.py).
            "psycopg[binary]==3.3.9",
            "dagster-graphql==1.13.27",
            "gcp-storage-emulator==2026.7.19",
            "bqemulator==1.4.0",
            "duckdb-extension-spatial==1.5.5",
            # The UI test drives Debian's Chromium (no browser download); dagster-docker validates the
            # Docker run launcher's config in deploy/docker/dagster.yaml.
            "playwright==1.65.2",
            "dagster-docker==0.29.27",
            # The benchmark's smoke run (taxi_assets_tests/test_benchmark_smoke.py).
            "psycopg2-binary>=2.9",
            "psutil>=5.9",
            "matplotlib>=3.8",
            # test_repo_root.py runs `dg check defs` and `dg list defs`.
            "dagster-dg-cli==1.13.27",
            # `make test` lints the tree first (the configuration is in pyproject.toml).
            "ruff==0.17.6",
        ],
        # `dg`, Dagster's project CLI (dg check defs, dg list defs, dg dev), at Dagster's version. A development
        # tool, not in install_requires: the user-code image does not need it (it would add some 25 packages).
        "dev": ["dagster-dg-cli==1.13.27"],
        # benchmarks/: the seed way (pandas + SQLAlchemy + psycopg2 to_sql), counts read back (psycopg), the
        # server's memory (psutil) and the backfill's timeline picture (matplotlib).
        "bench": ["psycopg2-binary>=2.9", "psycopg[binary]==3.3.9", "psutil>=5.9", "matplotlib>=3.8"],
    },
    entry_points={"console_scripts": ["taxi-assets=taxi_assets.cli:main"]},
)
