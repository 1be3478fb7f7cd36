"""A small run of the benchmark (a few thousand rows, one run of each way), so that its code paths never rot.

The full run (``python -m benchmarks.run``, millions of rows, minutes) is not part of the tests, and nothing here
asserts a time: only that every way runs end to end, loads every row, and lands in the report.
"""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import psutil

# benchmarks/ is not installed: pytest's pythonpath (".") finds it
from benchmarks.run import FHVHV_BEGIN, FHVHV_END, QUICK, split_report

REPO = Path(__file__).resolve().parents[1]

REPORT_ROWS = (
    "Seed way: pandas 100k-row chunks + `to_sql`",
    "Bare Arrow → COPY",
    "`postgres_trips` from the clean parquet (Dagster step)",
    "`postgres_trips` alone, whole `dagster asset materialize` process",
    "All four assets, one `dagster asset materialize` (whole process)",
    "| `raw_trips` |",
    "| `clean_trips` |",
    "| `warehouse_trips` |",
    "| `postgres_trips` |",
    f"| {QUICK.main_month} | {QUICK.main_rows:,} |",
    f"| {QUICK.big_month} | {QUICK.big_rows:,} |",
    "single-month runs: the work (sum of step durations)",
    "single-month runs: whole processes",
    "One single-run backfill: whole process",
    "`postgres_trips` faster than the seed way",
    "`postgres_trips` against the bare Arrow → COPY",
    "Four assets (whole process) faster than the seed way's load",
    f"Peak memory, {QUICK.main_month} |",
    f"Peak memory, {QUICK.big_month} against {QUICK.main_month}",
    "Backfill against the work of single runs",
)
FHVHV_REPORT_ROWS = (  # in the report's fhvhv section
    f"| {QUICK.fhvhv_small_month} | {QUICK.fhvhv_small_rows:,} |",
    f"| {QUICK.fhvhv_big_month} | {QUICK.fhvhv_big_rows:,} |",
    "| `startup` |",
    "| `raw_trips` |",
    "| `clean_trips` |",
    "| `warehouse_trips` |",
    "| `postgres_trips` |",
    "The peak is reached in",
    f"Peak memory, fhvhv {QUICK.fhvhv_big_month} ({QUICK.fhvhv_big_rows:,} rows) against {QUICK.fhvhv_small_month}",
)
FHVHV_STEPS = ("startup", "raw_trips", "clean_trips", "warehouse_trips", "postgres_trips")


def test_a_quick_benchmark_runs_every_way_and_reports_every_row(tmp_path):
    work, report_path, measures_path = tmp_path / "work", tmp_path / "BENCHMARKS.md", tmp_path / "measures.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TAXI_", "DAGSTER_HOME"))}
    command = [sys.executable, "-m", "benchmarks.run", "--quick", "--work-dir", str(work), "--out", str(report_path),
               "--json", str(measures_path)]  # fmt: skip

    result = subprocess.run(command, check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)

    assert result.returncode == 0, result.stderr[-4000:]
    measures = json.loads(measures_path.read_text())
    n_backfill = len(QUICK.backfill_months)
    assert Counter(m["scenario"] for m in measures) == {
        "seed": 1, "arrow-copy": 1, "month": 1, "postgres_trips": 1, "big-month": 1, "single-month": n_backfill,
        "backfill": 1, "fhvhv-small": 1, "fhvhv-big": 1,
    }  # fmt: skip
    by = {m["scenario"]: m for m in measures}
    # The baselines load the whole file; the assets the rows the cleaning keeps (checked against the manifest by
    # the benchmark itself, in Postgres and in DuckDB).
    assert by["seed"]["rows"] == by["arrow-copy"]["rows"] == QUICK.main_rows
    assert 0.99 * QUICK.main_rows < by["month"]["rows"] == by["postgres_trips"]["rows"] < QUICK.main_rows
    assert by["big-month"]["rows"] > by["month"]["rows"]
    assert by["backfill"]["rows"] == sum(m["rows"] for m in measures if m["scenario"] == "single-month")
    assert set(by["month"]["steps"]) >= {"raw_trips", "clean_trips", "warehouse_trips", "postgres_trips"}
    # fhvhv from TLC parquet: every kept row in both stores (checked against the manifest by the benchmark), and
    # the peak broken down by step from the sampled resident set.
    assert 0.99 * QUICK.fhvhv_small_rows < by["fhvhv-small"]["rows"] < QUICK.fhvhv_small_rows
    assert 0.99 * QUICK.fhvhv_big_rows < by["fhvhv-big"]["rows"] < QUICK.fhvhv_big_rows
    for scenario in ("fhvhv-small", "fhvhv-big"):
        assert set(by[scenario]["steps"]) >= {"raw_trips", "clean_trips", "warehouse_trips", "postgres_trips"}
        assert all(by[scenario]["extra"][f"rss_{phase}_mb"] > 50 for phase in FHVHV_STEPS)
    assert all(m["peak_rss_mb"] > 50 and m["wall_seconds"] > 0 for m in measures)  # measured by the OS

    report = report_path.read_text()
    missing = [row for row in REPORT_ROWS if row not in report]
    assert not missing, f"rows missing from the report: {missing}"
    first_wave, fhvhv = split_report(report)
    missing = [row for row in FHVHV_REPORT_ROWS if row not in (fhvhv or "")]
    assert not missing, f"rows missing from the report's fhvhv section: {missing}"
    fhvhv_measures = [m for m in measures if m["scenario"].startswith("fhvhv")]
    every_run = [line for line in first_wave.split("## Every run")[1].splitlines() if line.startswith("|")]
    assert len(every_run) == 2 + len(measures) - len(fhvhv_measures)  # header, rule, one line per measured run
    every_fhvhv_run = [line for line in fhvhv.split("### Every fhvhv run")[1].splitlines() if line.startswith("|")]
    assert len(every_fhvhv_run) == 2 + len(fhvhv_measures)

    # Nothing left behind: the working folder is gone and its embedded Postgres stopped.
    assert not work.exists()
    leftovers = [p.pid for p in psutil.process_iter(["cmdline"]) if str(work) in " ".join(p.info["cmdline"] or [])]
    assert not leftovers, f"processes still running from the benchmark's folder: {leftovers}"


def test_the_fhvhv_section_is_kept_or_replaced_alone():
    """``--only`` measures one group and keeps the report's other section: the split behind it."""
    block = f"{FHVHV_BEGIN}\n## fhvhv\n\n| a | b |\n{FHVHV_END}\n"

    assert split_report("# Benchmarks\n\n## Targets\n") == ("# Benchmarks\n\n## Targets\n", None)
    assert split_report(f"# Benchmarks\n\n## Targets\n\n{block}") == ("# Benchmarks\n\n## Targets\n", block)
