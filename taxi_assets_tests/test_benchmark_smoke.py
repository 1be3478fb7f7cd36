"""A small run of the benchmark (a few thousand rows, one run of each way), so that its code paths never rot.

The full run (``python -m benchmarks.run``, millions of rows, minutes) is not part of the tests, and nothing here
asserts a time against a target: only the figures the run reports. Every way runs end to end and is measured (a
positive time and memory), loads exactly the rows of the generated files' manifest, and lands in the report with
the figures of its measures; the ratios of the targets are the ones the medians shown give.
"""

import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import psutil

# benchmarks/ is not installed: pytest's pythonpath (".") finds it
from benchmarks.run import (
    FHVHV,
    FHVHV_BEGIN,
    FHVHV_END,
    QUICK,
    SERVICE,
    SPEED_BEGIN,
    SPEED_END,
    SPEED_SCENARIOS,
    STEPS,
    TARGETS,
    month_windows,
    split_report,
    split_section,
)
from taxi_assets.fake_source import write_fake_month

REPO = Path(__file__).resolve().parents[1]
FHVHV_STEPS = ("startup", *STEPS)
# The targets of each part of the report, in the order of its targets table; "at least" targets are ratios to beat.
FIRST_WAVE_TARGETS = ("postgres_vs_seed", "postgres_vs_arrow", "month_vs_seed", "peak_mb", "flat_memory", "backfill")
FHVHV_TARGETS = ("fhvhv_memory",)
SPEED_TARGETS = (
    "downloads",
    "both_cores",
    "both_cores_peak_mb",
    "both_cores_tree_mb",
    "month_vs_seed_v2",
    "postgres_vs_arrow_v2",
)
AT_LEAST = {"postgres_vs_seed", "month_vs_seed", "month_vs_seed_v2"}
_LINKED_PNG = re.compile(r"\]\(([^)\s]+\.png)\)")
_NUMBER = re.compile(r"-?[\d,]*\.?\d+")
_LOGGED_RATIO = re.compile(r"^\[bench [\d:]+\]\s+(\w+): (-?[\d.]+) \(target [\d.]+\)$")


def quick_manifest(folder: Path) -> dict[tuple[str, str], dict]:
    """The manifest entries of the files the quick run generates, by (service, month): the generator is
    deterministic (same seed, service, month and layout: the same rows), so writing them again gives the counts
    of the run's own files, which it deletes at the end."""
    files = [
        (SERVICE, "mirror", QUICK.main_month, QUICK.main_rows),
        (SERVICE, "mirror", QUICK.big_month, QUICK.big_rows),
        *((SERVICE, "mirror", month, QUICK.backfill_rows) for month in QUICK.backfill_months),
        (FHVHV, "tlc", QUICK.fhvhv_small_month, QUICK.fhvhv_small_rows),
        (FHVHV, "tlc", QUICK.fhvhv_big_month, QUICK.fhvhv_big_rows),
    ]
    return {
        (service, month): write_fake_month(folder / layout, service, month, rows, layout=layout, update_manifest=False)
        for service, layout, month, rows in files
    }


def quick_speed_manifest(folder: Path) -> dict[str, dict]:
    """The manifest entries of the backfill-speed group's months (yellow, TLC layout), by month."""
    return {
        month: write_fake_month(folder, SERVICE, month, QUICK.speed_rows, layout="tlc", update_manifest=False)
        for month in QUICK.speed_months
    }


# --- reading the report's figures -----------------------------------------------------------------------------


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def table(markdown: str, *leading: str) -> list[dict[str, str]]:
    """The rows (column -> cell) of the one table of ``markdown`` whose header begins with ``leading``."""
    blocks, block = [], []
    for line in [*markdown.splitlines(), ""]:
        if line.startswith("|"):
            block.append(line)
        elif block:
            blocks.append(block)
            block = []
    found = [b for b in blocks if tuple(_cells(b[0])[: len(leading)]) == leading]
    assert len(found) == 1, f"{len(found)} tables begin with {leading}"
    header, _rule, *rows = found[0]
    return [dict(zip(_cells(header), _cells(row), strict=True)) for row in rows]


def shown(cell: str) -> tuple[float, float]:
    """The value a cell shows and half its last digit: the true value is within that of it."""
    match = _NUMBER.search(cell)
    assert match, f"no number in {cell!r}"
    text = match.group().replace(",", "")
    decimals = len(text.split(".")[1]) if "." in text else 0
    return float(text), 0.5 * 10**-decimals


def shows(cell: str, value: float) -> bool:
    """Whether ``cell`` shows ``value`` (rounded to the cell's precision)."""
    number, half = shown(cell)
    return abs(number - value) <= half + 1e-9


def count(cell: str) -> int:
    number, half = shown(cell)
    assert half == 0.5, f"{cell!r} is not a count"
    return int(number)


def ratio_range(numerator: str, denominator: str | None = None) -> tuple[float, float]:
    """The range of ``numerator / denominator`` given the rounded values two cells show."""
    top, top_half = shown(numerator)
    if denominator is None:
        return top - top_half, top + top_half
    bottom, bottom_half = shown(denominator)
    low = (top - top_half) / (bottom + bottom_half)
    high = (top + top_half) / (bottom - bottom_half) if bottom > bottom_half else math.inf
    return low, high


# --- the figures ------------------------------------------------------------------------------------------------


def assert_figures(
    measures: list[dict],
    report: str,
    log: str,
    manifest: dict[tuple[str, str], dict],
    speed_manifest: dict[str, dict],
    report_path: Path,
) -> None:
    """The figures of a quick run: its measures (the --json file), its report and its log (stderr), against the
    manifest of the files it generated."""
    # Every scenario measured, each as often as the plan says, with a positive time and memory.
    n_backfill, n_speed = len(QUICK.backfill_months), len(QUICK.speed_months)
    assert Counter(m["scenario"] for m in measures) == {
        "seed": 1, "arrow-copy": 1, "month": 1, "postgres_trips": 1, "big-month": 1, "single-month": n_backfill,
        "backfill": 1, "fhvhv-small": 1, "fhvhv-big": 1,
        "one-connection": 1, "download-range": 1, "range-single": n_speed, "range-backfill": 1,
    }  # fmt: skip
    for m in measures:
        assert m["wall_seconds"] > 0 and m["work_seconds"] > 0, m
        # Measured by the OS: an interpreter with its imports at least (the plain download loop imports little).
        assert m["peak_rss_mb"] > (20 if m["scenario"] == "one-connection" else 50), m
        if m["scenario"] not in ("seed", "arrow-copy", "one-connection"):  # the Dagster runs: their steps' durations
            ran = {"postgres_trips": {"postgres_trips"}, "download-range": {"raw_trips"}}.get(m["scenario"], set(STEPS))
            assert set(m["steps"]) >= ran and all(m["steps"][name] > 0 for name in ran), m
    for m in measures:  # a four-asset run of the backfill-speed group: its span, within its summed steps' reach
        if m["scenario"] in ("range-single", "range-backfill"):
            assert abs(m["extra"]["steps_sum_seconds"] - sum(m["steps"].values())) < 1e-9, m
            assert max(m["steps"].values()) - 0.01 <= m["work_seconds"] < m["wall_seconds"], m
            assert m["extra"]["tree_pss_mb"] > 50 and m["extra"]["rss_sampled_mb"] > 50, m
    by = defaultdict(list)
    for m in measures:
        by[m["scenario"]].append(m)
    for scenario in ("fhvhv-small", "fhvhv-big"):  # the peak broken down by step, from the sampled resident set
        for m in by[scenario]:
            # Sampled every 0.05 s: a step of a quick run can end between two samples (the report shows "nan").
            sampled = {p: m["extra"][f"rss_{p}_mb"] for p in FHVHV_STEPS if f"rss_{p}_mb" in m["extra"]}
            assert "startup" in sampled and len(sampled) >= 2 and all(v > 50 for v in sampled.values()), m["extra"]

    # The rows loaded are the manifest's: the baselines load the whole file, the assets the rows the cleaning keeps.
    rows = {month: entry["rows"] for (service, month), entry in manifest.items() if service == SERVICE}
    kept = {month: entry["kept"] for (service, month), entry in manifest.items() if service == SERVICE}
    main, big, backfill_months = QUICK.main_month, QUICK.big_month, QUICK.backfill_months
    loaded = {scenario: [m["rows"] for m in ms] for scenario, ms in by.items()}
    assert loaded == {
        "seed": [rows[main]],
        "arrow-copy": [rows[main]],
        "month": [kept[main]],
        "postgres_trips": [kept[main]],
        "big-month": [kept[big]],
        "single-month": [kept[month] for month in backfill_months],
        "backfill": [sum(kept[month] for month in backfill_months)],
        "fhvhv-small": [manifest[FHVHV, QUICK.fhvhv_small_month]["kept"]],
        "fhvhv-big": [manifest[FHVHV, QUICK.fhvhv_big_month]["kept"]],
        # the downloaded files' rows (and their sizes, checked by the run), then the rows loaded
        "one-connection": [sum(e["rows"] for e in speed_manifest.values())],
        "download-range": [sum(e["rows"] for e in speed_manifest.values())],
        "range-single": [speed_manifest[month]["kept"] for month in QUICK.speed_months],
        "range-backfill": [sum(e["kept"] for e in speed_manifest.values())],
    }
    assert all(rows[month] > kept[month] > 0.99 * rows[month] for month in rows)  # the cleaning drops a few

    # The medians of the measures (one run each here, but computed as the report's are).
    def med(scenario: str, key: str) -> float:
        return statistics.median(m[key] for m in by[scenario])

    def step(scenario: str, name: str) -> float:
        return statistics.median(m["steps"][name] for m in by[scenario])

    singles = {run: [m for m in by["single-month"] if m["run"] == run] for run in range(1, QUICK.runs + 1)}
    twelve_work = statistics.median(sum(m["work_seconds"] for m in ms) for ms in singles.values())
    twelve_wall = statistics.median(sum(m["wall_seconds"] for m in ms) for ms in singles.values())
    ratios = {
        "postgres_vs_seed": med("seed", "work_seconds") / step("postgres_trips", "postgres_trips"),
        "postgres_vs_arrow": step("postgres_trips", "postgres_trips") / med("arrow-copy", "work_seconds"),
        "month_vs_seed": med("seed", "work_seconds") / med("month", "wall_seconds"),
        "peak_mb": med("month", "peak_rss_mb"),
        "flat_memory": med("big-month", "peak_rss_mb") / med("month", "peak_rss_mb"),
        "backfill": med("backfill", "wall_seconds") / twelve_work,
        "fhvhv_memory": med("fhvhv-big", "peak_rss_mb") / med("fhvhv-small", "peak_rss_mb"),
    }
    speed_singles = statistics.median(
        sum(m["extra"]["steps_sum_seconds"] for m in by["range-single"] if m["run"] == run)
        for run in range(1, QUICK.runs + 1)
    )
    ratios.update(
        downloads=med("download-range", "work_seconds") / med("one-connection", "work_seconds"),
        both_cores=med("range-backfill", "work_seconds") / speed_singles,
        both_cores_peak_mb=med("range-backfill", "peak_rss_mb"),
        both_cores_tree_mb=statistics.median(m["extra"]["tree_pss_mb"] for m in by["range-backfill"]),
        month_vs_seed_v2=ratios["month_vs_seed"],
        postgres_vs_arrow_v2=ratios["postgres_vs_arrow"],
    )

    # The report shows those medians and the manifest's counts.
    rest, speed = split_section(report, SPEED_BEGIN, SPEED_END)
    assert speed is not None and speed.startswith(SPEED_BEGIN) and speed.rstrip().endswith(SPEED_END)
    first_wave, fhvhv = split_report(rest)
    assert fhvhv is not None and fhvhv.startswith(FHVHV_BEGIN) and fhvhv.rstrip().endswith(FHVHV_END)
    one_month = table(first_wave, "Way", "Rows")  # seed, arrow-copy, postgres_trips's step, its process, month
    expected = [
        (rows[main], med("seed", "work_seconds"), med("seed", "peak_rss_mb")),
        (rows[main], med("arrow-copy", "work_seconds"), med("arrow-copy", "peak_rss_mb")),
        (kept[main], step("postgres_trips", "postgres_trips"), med("postgres_trips", "peak_rss_mb")),
        (kept[main], med("postgres_trips", "wall_seconds"), med("postgres_trips", "peak_rss_mb")),
        (rows[main], med("month", "wall_seconds"), med("month", "peak_rss_mb")),
    ]
    assert [count(row["Rows"]) for row in one_month] == [n for n, _, _ in expected]
    for row, (_, seconds, peak) in zip(one_month, expected, strict=True):
        assert shows(row["Time (s)"], seconds) and shows(row["Peak memory (MB)"], peak), row
    months = table(first_wave, "Month", "Rows")  # the month against the big month
    assert [(row["Month"], count(row["Rows"])) for row in months] == [(main, rows[main]), (big, rows[big])]
    for row, scenario in zip(months, ("month", "big-month"), strict=True):
        assert shows(row["Four assets (s)"], med(scenario, "wall_seconds")), row
        assert shows(row["Peak memory (MB)"], med(scenario, "peak_rss_mb")), row
    backfill = table(first_wave, "Way", "Time (s)")  # single runs' work, their processes, the backfill's process
    for row, seconds in zip(backfill, (twelve_work, twelve_wall, med("backfill", "wall_seconds")), strict=True):
        assert shows(row["Time (s)"], seconds), row
    fhvhv_months = table(fhvhv, "Month", "Rows")
    for row, (scenario, month) in zip(
        fhvhv_months, (("fhvhv-small", QUICK.fhvhv_small_month), ("fhvhv-big", QUICK.fhvhv_big_month)), strict=True
    ):
        entry = manifest[FHVHV, month]
        assert (row["Month"], count(row["Rows"])) == (month, entry["rows"])
        assert count(row["Kept (in Postgres and DuckDB)"]) == entry["kept"]
        assert shows(row["Four assets (s)"], med(scenario, "wall_seconds")), row
        assert shows(row["Peak memory (MB)"], med(scenario, "peak_rss_mb")), row

    # The backfill-speed section: downloads (one connection, the raw_trips step, its process) and both cores (the
    # single runs' summed steps and processes, the backfill's span and process), each figure a number.
    downloads = table(speed, "Way", "Time (s)", "Range (s)", "Peak memory (MB)", "MB/s")
    expected_downloads = [
        (med("one-connection", "work_seconds"), med("one-connection", "peak_rss_mb")),
        (med("download-range", "work_seconds"), med("download-range", "peak_rss_mb")),
        (med("download-range", "wall_seconds"), med("download-range", "peak_rss_mb")),
    ]
    assert len(downloads) == len(expected_downloads)
    for row, (seconds, peak) in zip(downloads, expected_downloads, strict=True):
        assert shows(row["Time (s)"], seconds) and shows(row["Peak memory (MB)"], peak), row
        assert shown(row["MB/s"])[0] > 0, row
    cores = table(speed, "Way", "Time (s)", "Range (s)", "Peak memory (MB)", "Processes together, PSS (MB)")
    speed_walls = statistics.median(
        sum(m["wall_seconds"] for m in by["range-single"] if m["run"] == run) for run in range(1, QUICK.runs + 1)
    )
    expected_cores = [
        speed_singles,
        speed_walls,
        med("range-backfill", "work_seconds"),
        med("range-backfill", "wall_seconds"),
    ]
    assert len(cores) == len(expected_cores)
    for row, seconds in zip(cores, expected_cores, strict=True):
        assert shows(row["Time (s)"], seconds), row
    for row in cores[2:]:  # the backfill's peak, from wait4, and its process tree's, sampled
        assert shows(row["Peak memory (MB)"], med("range-backfill", "peak_rss_mb")), row
        tree = statistics.median(m["extra"]["tree_pss_mb"] for m in by["range-backfill"])
        assert shows(row["Processes together, PSS (MB)"], tree), row
    # The timelines: PNG pictures beside the report, linked from the section.
    pictures = _LINKED_PNG.findall(speed)
    assert len(pictures) == 2, pictures
    for link in pictures:
        png = (report_path.parent / link).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5_000, link

    # Every run in the report's tables of runs, with its figures.
    for markdown, leading, part in (
        (
            first_wave,
            ("Scenario", "Run"),
            [m for m in measures if not m["scenario"].startswith(FHVHV) and m["scenario"] not in SPEED_SCENARIOS],
        ),
        (fhvhv, ("Scenario", "Month", "Run"), [m for m in measures if m["scenario"].startswith(FHVHV)]),
        (speed, ("Scenario", "Run", "Wall (s)", "Work (s)"), [m for m in measures if m["scenario"] in SPEED_SCENARIOS]),
    ):
        runs = table(markdown, *leading)
        assert [(row["Scenario"], int(row["Run"]), count(row["Rows"])) for row in runs] == [
            (m["scenario"], m["run"], m["rows"]) for m in part
        ]
        for row, m in zip(runs, part, strict=True):
            assert shows(row["Wall (s)"], m["wall_seconds"]) and shows(row["Peak (MB)"], m["peak_rss_mb"]), row

    # The ratios: from those medians, as logged at the end of the run and shown (and judged) in the targets tables.
    logged = {}
    for line in log.splitlines():
        if match := _LOGGED_RATIO.match(line):
            logged[match[1]] = float(match[2])
    assert logged.keys() == TARGETS.keys() == ratios.keys()
    from_shown = {
        "postgres_vs_seed": ratio_range(one_month[0]["Time (s)"], one_month[2]["Time (s)"]),
        "postgres_vs_arrow": ratio_range(one_month[2]["Time (s)"], one_month[1]["Time (s)"]),
        "month_vs_seed": ratio_range(one_month[0]["Time (s)"], one_month[4]["Time (s)"]),
        "peak_mb": ratio_range(months[0]["Peak memory (MB)"]),
        "flat_memory": ratio_range(months[1]["Peak memory (MB)"], months[0]["Peak memory (MB)"]),
        "backfill": ratio_range(backfill[2]["Time (s)"], backfill[0]["Time (s)"]),
        "fhvhv_memory": ratio_range(fhvhv_months[1]["Peak memory (MB)"], fhvhv_months[0]["Peak memory (MB)"]),
        "downloads": ratio_range(downloads[1]["Time (s)"], downloads[0]["Time (s)"]),
        "both_cores": ratio_range(cores[2]["Time (s)"], cores[0]["Time (s)"]),
        "both_cores_peak_mb": ratio_range(cores[2]["Peak memory (MB)"]),
        "both_cores_tree_mb": ratio_range(cores[2]["Processes together, PSS (MB)"]),
    }
    from_shown["month_vs_seed_v2"] = from_shown["month_vs_seed"]
    from_shown["postgres_vs_arrow_v2"] = from_shown["postgres_vs_arrow"]
    keys = FIRST_WAVE_TARGETS + FHVHV_TARGETS + SPEED_TARGETS
    targets = table(first_wave, "Target", "Measured") + table(fhvhv, "Target", "Measured")
    targets += table(speed, "Target", "Measured")
    assert len(targets) == len(keys)
    for key, row in zip(keys, targets, strict=True):
        assert abs(logged[key] - ratios[key]) <= 0.0005 + 1e-9, (key, logged[key], ratios[key])
        low, high = from_shown[key]
        assert low - 0.0005 <= logged[key] <= high + 0.0005, (key, logged[key], from_shown[key])
        measured, half = shown(row["Measured"])
        assert abs(measured - logged[key]) <= half + 0.0005 + 1e-9, (key, row, logged[key])
        met = ratios[key] >= TARGETS[key] if key in AT_LEAST else ratios[key] <= TARGETS[key]
        assert row["Met"] == ("yes" if met else "NO"), (key, row, ratios[key])


def test_a_quick_benchmark_runs_every_way_and_reports_its_figures(tmp_path):
    work, report_path, measures_path = tmp_path / "work", tmp_path / "BENCHMARKS.md", tmp_path / "measures.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TAXI_", "DAGSTER_HOME"))}
    command = [sys.executable, "-m", "benchmarks.run", "--quick", "--work-dir", str(work), "--out", str(report_path),
               "--json", str(measures_path)]  # fmt: skip

    # Its log goes to a file, not a pipe: a process it started and left behind cannot keep this test waiting.
    log_path = tmp_path / "benchmark.log"
    with log_path.open("w") as log_file:
        result = subprocess.run(command, check=False, cwd=REPO, env=env, stdout=log_file, stderr=log_file, timeout=420)
    log = log_path.read_text()

    assert result.returncode == 0, log[-4000:]
    assert_figures(
        json.loads(measures_path.read_text()),
        report_path.read_text(),
        log,
        quick_manifest(tmp_path / "m"),
        quick_speed_manifest(tmp_path / "m" / "speed"),
        report_path,
    )

    # Nothing left behind: the working folder is gone and its embedded Postgres stopped.
    assert not work.exists()
    leftovers = [p.pid for p in psutil.process_iter(["cmdline"]) if str(work) in " ".join(p.info["cmdline"] or [])]
    assert not leftovers, f"processes still running from the benchmark's folder: {leftovers}"


def test_the_fhvhv_section_is_kept_or_replaced_alone():
    """``--only`` measures one group and keeps the report's other section: the split behind it."""
    block = f"{FHVHV_BEGIN}\n## fhvhv\n\n| a | b |\n{FHVHV_END}\n"

    assert split_report("# Benchmarks\n\n## Targets\n") == ("# Benchmarks\n\n## Targets\n", None)
    assert split_report(f"# Benchmarks\n\n## Targets\n\n{block}") == ("# Benchmarks\n\n## Targets\n", block)


def test_the_backfill_speed_section_is_kept_or_replaced_alone():
    """The backfill-speed section, between its own markers, comes out of a report whole; the rest stays."""
    fhvhv = f"{FHVHV_BEGIN}\n## fhvhv\n{FHVHV_END}\n"
    speed = f"{SPEED_BEGIN}\n## speed\n\n| a | b |\n{SPEED_END}\n"

    rest, section = split_section(f"# Benchmarks\n\n{fhvhv}\n{speed}", SPEED_BEGIN, SPEED_END)

    assert section == speed
    assert split_report(rest) == ("# Benchmarks\n", fhvhv)
    assert split_section(rest, SPEED_BEGIN, SPEED_END) == (rest, None)


def test_the_timeline_reads_each_months_window_from_a_runs_log_messages():
    """``month_windows`` on a real Dagster run's event log: a month ends at the message that says it is done and
    starts the duration that message gives before; months the run did not materialize (a check's message) and
    messages without a month are not bars."""
    import dagster as dg

    @dg.asset(partitions_def=dg.StaticPartitionsDefinition(["2021-01", "2021-02"]))
    def trips(context: dg.AssetExecutionContext) -> None:
        context.log.info("starting")
        context.log.info("2021-02: 1,000,000 rows read (50,000 rows/s)")
        time.sleep(0.3)  # the month's 0.2 s below start after the step's start (a window is clamped to its step)
        context.log.info("http://source/trip-data/yellow_tripdata_2021-02.parquet: 9 bytes in 0.2s -> lake")
        context.log.info("2019-05: due and missing")

    with dg.instance_for_test() as instance:
        result = dg.materialize([trips], partition_key="2021-02", instance=instance)
        records = instance.all_logs(result.run_id)

    (step,) = {r.step_key for r in records if r.step_key}
    done = next(r for r in records if r.user_message.startswith("http://"))
    assert month_windows(records) == {step: {"2021-02": (done.timestamp - 0.2, done.timestamp)}}
