"""The pipeline's benchmark, in one command: ``python -m benchmarks.run [--quick]`` (from the repository root).

It generates the test months with the project's own ``taxi-assets fake-source`` command, then measures, each in a
process of its own so that its peak resident memory comes from the operating system (``wait4``'s rusage of that
process and the processes it waited for, not Python's allocator):

- the seed way: pandas, 100k-row chunks, ``DataFrame.to_sql`` (``benchmarks/baselines.py``);
- the bare Arrow-to-COPY baseline: Arrow's CSV reader, the whole month in memory, ADBC binary COPY;
- the project's assets, by ``dagster asset materialize`` on the embedded default (lake folder, DuckDB, embedded
  Postgres): the four assets of one month, the ``postgres_trips`` asset alone, a 7.8M-row month, and a single-run
  backfill of 12 months against 12 single-month runs;
- ``fhvhv-memory``: the four fhvhv assets of a 20M-row month against a 1.4M-row month, read from TLC-layout
  parquet (``TAXI_SOURCE=tlc``, ``TAXI_TLC_URL`` a local folder), with the peak broken down by step (the
  measured process's resident set, sampled, over each step's start and end in Dagster's event log).

``--only first-wave`` or ``--only fhvhv-memory`` runs one group alone: the report's other group is kept as it is in
the ``--out`` file (the fhvhv section sits between ``<!-- fhvhv-memory -->`` markers at the end).

Every measured thing runs ``--runs`` times (3 by default), interleaved, and the report gives medians. Loaded rows
are read back from Postgres and DuckDB and checked against the generated files' manifest: a wrong count fails the
benchmark. The report goes to ``docs/BENCHMARKS.md`` (``--out``); ``--quick`` runs every code path on a few thousand
rows in well under a minute (the smoke test does that) and writes nothing under ``docs/`` unless asked.

The embedded Postgres the benchmark starts is stopped at the end, and the working folder (generated data, lake,
databases) is deleted unless ``--keep``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SERVICE = "yellow"
STEPS = ("raw_trips", "clean_trips", "warehouse_trips", "postgres_trips")
ASSETS = tuple(f"{SERVICE}/{step}" for step in STEPS)

TARGETS = {
    "postgres_vs_seed": 15.0,  # postgres_trips at least 15x faster than the seed way
    "postgres_vs_arrow": 1.5,  # ... and within 1.5x the bare Arrow-to-COPY baseline
    "month_vs_seed": 8.0,  # the four assets at least 8x faster than the seed way's Postgres load
    "peak_mb": 450.0,  # peak resident memory of the month's run
    "flat_memory": 1.10,  # the 7.8M-row month's peak at most 10% above the 1.37M-row month's
    "backfill": 1.2,  # a 12-month single-run backfill at most 1.2x the work of 12 single-month runs
    "fhvhv_memory": 1.10,  # the 20M-row fhvhv month's peak at most 10% above the 1.4M-row month's
}

GROUPS = ("first-wave", "fhvhv-memory")  # what --only can name
FHVHV = "fhvhv"
FHVHV_ASSETS = tuple(f"{FHVHV}/{step}" for step in STEPS)
FHVHV_BEGIN, FHVHV_END = "<!-- fhvhv-memory -->", "<!-- /fhvhv-memory -->"  # the fhvhv section of the report
BY_HAND = "<!-- by-hand -->"  # from here to the end, written by people: every run keeps it as it is


@dataclass(frozen=True)
class Plan:
    main_month: str
    main_rows: int | None  # None: realistic (1,369,765 rows for yellow 2021-01)
    big_month: str
    big_rows: int | None  # None: realistic (7,832,545 rows for yellow 2019-03)
    backfill_months: tuple[str, ...]
    backfill_rows: int
    runs: int
    # fhvhv-memory: two months of TLC-layout parquet, different months so that each run replaces its own
    fhvhv_small_month: str = "2021-01"
    fhvhv_small_rows: int = 1_400_000
    fhvhv_big_month: str = "2021-03"
    fhvhv_big_rows: int = 20_000_000


FULL = Plan("2021-01", None, "2019-03", None, tuple(f"2020-{m:02d}" for m in range(1, 13)), 200_000, 3)
QUICK = Plan(
    "2021-01", 3_000, "2019-03", 6_000, ("2020-01", "2020-02"), 2_000, 1, fhvhv_small_rows=3_000, fhvhv_big_rows=12_000
)


@dataclass
class Measure:
    """One measured process."""

    scenario: str
    run: int
    wall_seconds: float  # the whole process, interpreter start and imports included
    peak_rss_mb: float  # from the OS: the largest resident set of the process (and of the processes it waited for)
    postgres_peak_rss_mb: float  # the embedded server's largest process meanwhile (sampled; informational)
    work_seconds: float  # the work itself: timed inside the process, or Dagster's step durations
    rows: int  # rows read back from the store after the run
    steps: dict[str, float] = field(default_factory=dict)  # Dagster step durations, seconds
    extra: dict[str, float] = field(default_factory=dict)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------------------
# Processes, measured from outside


class _PostgresSampler(threading.Thread):
    """Samples the resident set of the embedded Postgres' processes while a measured process runs."""

    def __init__(self, pid_file: Path, interval: float = 0.2):
        super().__init__(daemon=True)
        self.pid_file, self.interval, self.peak = pid_file, interval, 0
        self._halt = threading.Event()

    def run(self) -> None:
        import psutil

        while not self._halt.is_set():
            try:
                postmaster = psutil.Process(int(self.pid_file.read_text().split()[0]))
                for proc in (postmaster, *postmaster.children(recursive=True)):
                    self.peak = max(self.peak, proc.memory_info().rss)
            except (OSError, ValueError, IndexError, psutil.Error):
                pass
            self._halt.wait(self.interval)

    def stop(self) -> float:
        self._halt.set()
        self.join()
        return self.peak / 2**20


class _TreeSampler(threading.Thread):
    """Samples the resident set of a process, and of it and its children summed, as ``(epoch seconds, process
    bytes, tree bytes)``: where in a run the memory goes (the peak itself comes from ``wait4``, which misses
    nothing). Dagster's children (``tail -F`` of the compute logs, their orphan watchers) are small but many."""

    def __init__(self, pid: int, interval: float = 0.05):
        super().__init__(daemon=True)
        self.pid, self.interval, self.samples = pid, interval, []
        self._halt = threading.Event()

    def run(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self._halt.is_set():
            try:
                own = root.memory_info().rss
                children = sum(p.memory_info().rss for p in root.children(recursive=True))
                self.samples.append((time.time(), own, own + children))
            except (OSError, psutil.Error):
                pass
            self._halt.wait(self.interval)

    def stop(self) -> list[tuple[float, int, int]]:
        self._halt.set()
        self.join()
        return self.samples


def run_measured(
    cmd: list[str], env: dict, cwd: Path, log_file: Path, pid_file: Path, trace: list | None = None
) -> tuple[float, float, float, str]:
    """Run ``cmd`` to completion: (wall seconds, peak RSS MB from wait4, Postgres peak MB, stdout). With ``trace``
    (a list), the process's resident set is also sampled into it (``_TreeSampler``'s samples)."""
    sampler = _PostgresSampler(pid_file)
    sampler.start()
    with open(log_file.with_suffix(".out"), "w") as out, open(log_file.with_suffix(".err"), "w") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=cwd)
        tree = _TreeSampler(proc.pid) if trace is not None else None
        if tree is not None:
            tree.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        if tree is not None:
            trace.extend(tree.stop())
    postgres_peak = sampler.stop()
    stdout = log_file.with_suffix(".out").read_text()
    if proc.returncode != 0:
        tail = log_file.with_suffix(".err").read_text()[-3000:]
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}; log {log_file}.err ends:\n{tail}")
    return wall, usage.ru_maxrss / 1024, postgres_peak, stdout  # ru_maxrss is in KiB on Linux


def _peaks_by_step(trace: list[tuple[float, int, int]], windows: dict[str, tuple[float, float]]) -> dict[str, float]:
    """The measured process's sampled resident set: its largest value (MB) before the first step (``startup``:
    interpreter, imports, definitions), during each step's window, and after the last one; ``sampled`` is the
    largest of all, ``tree`` the largest sum of the process and its children."""
    if not trace:
        return {}
    first = min((start for start, _ in windows.values()), default=float("inf"))
    last = max((end for _, end in windows.values()), default=float("-inf"))
    phases: dict[str, list[int]] = {"startup": [rss for t, rss, _ in trace if t < first]}
    for step, (start, end) in sorted(windows.items(), key=lambda item: item[1][0]):
        phases[step] = [rss for t, rss, _ in trace if start <= t <= end]
    phases["end"] = [rss for t, rss, _ in trace if t > last]
    peaks = {f"rss_{phase}_mb": max(values) / 2**20 for phase, values in phases.items() if values}
    peaks["rss_sampled_mb"] = max(rss for _, rss, _ in trace) / 2**20
    peaks["rss_tree_mb"] = max(tree for _, _, tree in trace) / 2**20
    return peaks


# --------------------------------------------------------------------------------------------------------------
# The benchmark


class Bench:
    def __init__(self, plan: Plan, work: Path):
        self.plan, self.work = plan, work
        self.source, self.data, self.home, self.logs = (work / n for n in ("source", "data", "dagster_home", "logs"))
        for folder in (self.source, self.data, self.home, self.logs):
            folder.mkdir(parents=True, exist_ok=True)
        (self.home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        self.pg_dir = self.data / "postgres"  # where the embedded default keeps its Postgres
        self.measures: list[Measure] = []
        self.generation: dict[str, float] = {}
        self.manifest: dict = {}
        self.tlc = work / "tlc"  # the fhvhv months, in the TLC's layout (trip-data/*.parquet)
        self.tlc_manifest: dict = {}
        self.fhvhv_generation: dict[str, dict[str, float]] = {}
        self.fhvhv_info: dict = {}
        self._instance = None
        self._count = 0
        env = {k: v for k, v in os.environ.items() if k != "TAXI_POSTGRES_URL"}  # unset: the embedded default
        env.update(
            TAXI_TARGET="local",
            TAXI_DATA_DIR=str(self.data),
            # The first-wave figures are of the course's CSV.gz mirror; the fhvhv memory figure reads TLC parquet.
            TAXI_SOURCE="mirror",
            TAXI_SOURCE_URL=str(self.source),
            DAGSTER_HOME=str(self.home),
            PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
        )
        self.env = env
        # fhvhv-memory: the TLC's parquet files, from a local folder (TAXI_SOURCE_URL unset: it means the mirror)
        self.tlc_env = {k: v for k, v in env.items() if k != "TAXI_SOURCE_URL"}
        self.tlc_env.update(TAXI_SOURCE="tlc", TAXI_TLC_URL=str(self.tlc))

    # --- helpers ---

    def _path(self, month: str) -> str:
        return f"{SERVICE}/{SERVICE}_tripdata_{month}.csv.gz"

    def source_rows(self, month: str) -> int:
        return self.manifest["files"][self._path(month)]["rows"]

    def kept_rows(self, month: str) -> int:
        return self.manifest["files"][self._path(month)]["kept"]

    def _log_file(self, name: str) -> Path:
        self._count += 1
        return self.logs / f"{self._count:03d}-{name}"

    def generate(self) -> None:
        """The test months, written by the project's own command (``taxi-assets fake-source``)."""
        groups = [
            ([self.plan.main_month], self.plan.main_rows),
            ([self.plan.big_month], self.plan.big_rows),
            (list(self.plan.backfill_months), self.plan.backfill_rows),
        ]
        for months, rows in groups:
            size = ["--realistic"] if rows is None else ["--rows", str(rows)]
            cmd = [sys.executable, "-m", "taxi_assets.cli", "fake-source", "--out", str(self.source), "--services",
                   SERVICE, "--months", ",".join(months), "--layout", "mirror", *size]  # fmt: skip
            log(f"generating {SERVICE} {','.join(months)} ({'realistic' if rows is None else f'{rows:,} rows'})")
            started = time.perf_counter()
            subprocess.run(cmd, check=True, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.generation[",".join(months)] = time.perf_counter() - started
        self.manifest = json.loads((self.source / "manifest.json").read_text())

    def start_postgres(self) -> str:
        from taxi_assets.resources.postgres import start_embedded_postgres

        return start_embedded_postgres(self.pg_dir)

    def stop_postgres(self) -> None:
        from taxi_assets.resources.postgres import stop_embedded_postgres

        stop_embedded_postgres(self.pg_dir)

    def postgres_version(self, url: str) -> str:
        import psycopg

        with psycopg.connect(url) as conn:
            return conn.execute("SHOW server_version").fetchone()[0]

    def _dagster(self):
        import dagster as dg

        if self._instance is None:
            self._instance = dg.DagsterInstance.from_config(str(self.home))
        return self._instance

    def _forget_materializations(self) -> None:
        """Every measured run loads its months whole: the instance forgets the runs before it, whose data versions
        would otherwise let the steps skip a month whose source file has not changed (the same file every run)."""
        self._dagster().wipe()

    def _instance_steps(self) -> tuple[str, dict[str, float]]:
        """The latest run's status and step durations, from the Dagster instance of the benchmark; a step that
        reported a month unchanged is an error (its time would not be a load's)."""
        import dagster as dg

        (run,) = self._dagster().get_runs(limit=1)
        for record in self._instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
            if "unchanged" in record.asset_materialization.metadata:
                raise AssertionError(f"{record.asset_materialization.asset_key.to_user_string()}: skipped as unchanged")
        steps = {}
        for record in self._instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_SUCCESS):
            event = record.dagster_event
            steps[event.step_key] = event.event_specific_data.duration_ms / 1000
        return run.status.value, steps

    def _step_windows(self) -> dict[str, tuple[float, float]]:
        """The latest run's steps: (start, end) in epoch seconds, from its STEP_START and STEP_SUCCESS events."""
        import dagster as dg

        (run,) = self._dagster().get_runs(limit=1)
        kinds = {dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS}
        windows: dict[str, list[float]] = {}
        for record in self._instance.all_logs(run.run_id, of_type=kinds):
            step = record.dagster_event.step_key.split("__", 1)[-1]
            window = windows.setdefault(step, [record.timestamp, record.timestamp])
            window[0], window[1] = min(window[0], record.timestamp), max(window[1], record.timestamp)
        return {step: (start, end) for step, (start, end) in windows.items()}

    def _store_rows(self, months: list[str], service: str = SERVICE, expected: int | None = None) -> int:
        """Rows of ``months`` in Postgres and in DuckDB; they must agree with the manifest (or ``expected``)."""
        import duckdb
        import psycopg

        url = self.start_postgres()
        expected = sum(self.kept_rows(m) for m in months) if expected is None else expected
        with psycopg.connect(url) as conn:
            pg = sum(
                conn.execute(f"SELECT count(*) FROM nyc_taxi.{service}_trips_{m.replace('-', '_')}").fetchone()[0]
                for m in months
            )
        with duckdb.connect(str(self.data / "warehouse.duckdb"), read_only=True) as conn:
            (warehouse,) = conn.execute(
                f"SELECT count(*) FROM nyc_taxi.{service}_trips WHERE strftime(pickup_datetime, '%Y-%m') IN "
                f"({', '.join('?' for _ in months)})",
                months,
            ).fetchone()
        if pg != expected or warehouse != expected:
            raise AssertionError(
                f"{months}: Postgres has {pg:,} rows, DuckDB {warehouse:,}, the manifest says {expected:,}"
            )
        return pg

    # --- scenarios ---

    def baseline(self, way: str, url: str, month: str, run: int) -> Measure:
        csv = self.source / self._path(month)
        cmd = [sys.executable, "-m", "benchmarks.baselines", way, "--csv", str(csv), "--url", url,
               "--table", f"bench_{way.replace('-', '_')}"]  # fmt: skip
        wall, peak, pg_peak, stdout = run_measured(
            cmd, self.env, REPO, self._log_file(way), self.pg_dir / "postmaster.pid"
        )
        result = json.loads(stdout.strip().splitlines()[-1])
        if result["rows"] != self.source_rows(month):
            raise AssertionError(f"{way}: loaded {result['rows']:,} rows, the file has {self.source_rows(month):,}")
        extra = {k: v for k, v in result.items() if k.endswith("_seconds")}
        measure = Measure(way, run, wall, peak, pg_peak, result["seconds"], result["rows"], extra=extra)
        return self._keep(measure)

    def assets(self, scenario: str, selection: tuple[str, ...], months: list[str], run: int) -> Measure:
        cmd = [
            sys.executable,
            "-m",
            "dagster",
            "asset",
            "materialize",
            "-m",
            "taxi_assets",
            "--select",
            ",".join(selection),
        ]
        cmd += ["--partition", months[0]] if len(months) == 1 else ["--partition-range", f"{months[0]}...{months[-1]}"]
        self._forget_materializations()
        wall, peak, pg_peak, _ = run_measured(
            cmd, self.env, self.work, self._log_file(scenario), self.pg_dir / "postmaster.pid"
        )
        status, steps = self._instance_steps()
        if status != "SUCCESS":
            raise AssertionError(f"{scenario}: the Dagster run ended {status}")
        steps = {key.split("__", 1)[-1]: seconds for key, seconds in steps.items()}
        rows = self._store_rows(months)
        work = sum(seconds for name, seconds in steps.items() if name in STEPS)
        return self._keep(Measure(scenario, run, wall, peak, pg_peak, work, rows, steps=steps))

    # --- fhvhv-memory ---

    def _fhvhv_path(self, month: str) -> str:
        return f"trip-data/{FHVHV}_tripdata_{month}.parquet"

    def fhvhv_entry(self, month: str) -> dict:
        return self.tlc_manifest["files"][self._fhvhv_path(month)]

    def generate_fhvhv(self) -> None:
        """The two fhvhv months in the TLC's layout, written by ``taxi-assets fake-source --layout tlc`` (its
        wall time and peak memory kept: the generator must stay bounded too)."""
        plan = self.plan
        months = ((plan.fhvhv_small_month, plan.fhvhv_small_rows), (plan.fhvhv_big_month, plan.fhvhv_big_rows))
        for month, rows in months:
            cmd = [sys.executable, "-m", "taxi_assets.cli", "fake-source", "--out", str(self.tlc), "--services",
                   FHVHV, "--months", month, "--rows", str(rows), "--layout", "tlc"]  # fmt: skip
            log(f"generating {FHVHV} {month} ({rows:,} rows, TLC parquet)")
            wall, peak, _, _ = run_measured(
                cmd, self.tlc_env, REPO, self._log_file(f"generate-{FHVHV}-{month}"), self.pg_dir / "postmaster.pid"
            )
            self.fhvhv_generation[month] = {"seconds": wall, "peak_rss_mb": peak}
        self.tlc_manifest = json.loads((self.tlc / "manifest.json").read_text())

    def fhvhv_assets(self, scenario: str, month: str, run: int) -> Measure:
        """The four fhvhv assets of ``month`` in one process; the peak broken down by step (``extra``)."""
        cmd = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "taxi_assets", "--select",
               ",".join(FHVHV_ASSETS), "--partition", month]  # fmt: skip
        trace: list[tuple[float, int, int]] = []
        self._forget_materializations()
        wall, peak, pg_peak, _ = run_measured(
            cmd, self.tlc_env, self.work, self._log_file(scenario), self.pg_dir / "postmaster.pid", trace
        )
        status, steps = self._instance_steps()
        if status != "SUCCESS":
            raise AssertionError(f"{scenario}: the Dagster run ended {status}")
        steps = {key.split("__", 1)[-1]: seconds for key, seconds in steps.items()}
        rows = self._store_rows([month], FHVHV, self.fhvhv_entry(month)["kept"])
        work = sum(seconds for name, seconds in steps.items() if name in STEPS)
        extra = _peaks_by_step(trace, self._step_windows())
        return self._keep(Measure(scenario, run, wall, peak, pg_peak, work, rows, steps=steps, extra=extra))

    def run_fhvhv(self) -> dict:
        plan = self.plan
        self.generate_fhvhv()
        url = self.start_postgres()
        self.fhvhv_info = {"postgres": self.postgres_version(url)}
        small, big = plan.fhvhv_small_month, plan.fhvhv_big_month
        if plan.runs > 1:  # fhvhv's first run: its tables created, caches cold (not counted)
            self.fhvhv_assets("fhvhv-warm-up", small, 0)
        for run in range(1, plan.runs + 1):  # alternated, so that drift on the machine hits both months alike
            self.fhvhv_assets("fhvhv-small", small, run)
            self.fhvhv_assets("fhvhv-big", big, run)
        return self.fhvhv_info

    def _keep(self, measure: Measure) -> Measure:
        self.measures.append(measure)
        log(
            f"{measure.scenario} #{measure.run}: {measure.wall_seconds:.1f}s wall, {measure.work_seconds:.1f}s work, "
            f"{measure.peak_rss_mb:.0f} MB peak, {measure.rows:,} rows"
        )
        return measure

    def run_all(self) -> dict:
        plan = self.plan
        self.generate()
        url = self.start_postgres()
        info = {"postgres": self.postgres_version(url)}
        main, big = plan.main_month, plan.big_month
        if plan.runs > 1:  # the embedded default's first run: tables and partitions created, caches cold
            self.assets("warm-up", ASSETS, [main], 0)
        for run in range(1, plan.runs + 1):
            self.baseline("seed", url, main, run)
            self.baseline("arrow-copy", url, main, run)
            self.assets("month", ASSETS, [main], run)
            self.assets("postgres_trips", (f"{SERVICE}/postgres_trips",), [main], run)
        for run in range(1, plan.runs + 1):
            self.assets("big-month", ASSETS, [big], run)
        for run in range(1, plan.runs + 1):
            for month in plan.backfill_months:
                self.assets("single-month", ASSETS, [month], run)
            self.assets("backfill", ASSETS, list(plan.backfill_months), run)
        return info


# --------------------------------------------------------------------------------------------------------------
# The report


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarize(bench: Bench) -> dict:
    """Medians per scenario, the ratios of the targets, and every run's figures."""
    by: dict[str, list[Measure]] = {}
    for m in bench.measures:
        by.setdefault(m.scenario, []).append(m)

    def med(scenario: str, attr: str) -> float:
        return _median([getattr(m, attr) for m in by.get(scenario, [])])

    def step(scenario: str, name: str) -> float:
        return _median([m.steps.get(name, float("nan")) for m in by.get(scenario, [])])

    plan = bench.plan
    runs = range(1, plan.runs + 1)
    singles = {r: [m for m in by.get("single-month", []) if m.run == r] for r in runs}
    backfill = {m.run: m for m in by.get("backfill", [])}
    twelve_work = _median([sum(m.work_seconds for m in singles[r]) for r in runs])
    twelve_wall = _median([sum(m.wall_seconds for m in singles[r]) for r in runs])
    backfill_wall = _median([backfill[r].wall_seconds for r in runs])
    seed = med("seed", "work_seconds")
    ratios = {
        "postgres_vs_seed": seed / step("postgres_trips", "postgres_trips"),
        "postgres_vs_arrow": step("postgres_trips", "postgres_trips") / med("arrow-copy", "work_seconds"),
        "month_vs_seed": seed / med("month", "wall_seconds"),
        "peak_mb": med("month", "peak_rss_mb"),
        "flat_memory": med("big-month", "peak_rss_mb") / med("month", "peak_rss_mb"),
        "backfill": backfill_wall / twelve_work,
    }
    return {
        "by": by,
        "ratios": ratios,
        "twelve_work": twelve_work,
        "twelve_wall": twelve_wall,
        "backfill_wall": backfill_wall,
        "med": med,
        "step": step,
    }


def _machine() -> dict:
    meminfo = Path("/proc/meminfo").read_text() if Path("/proc/meminfo").exists() else ""
    total_kb = next((int(line.split()[1]) for line in meminfo.splitlines() if line.startswith("MemTotal:")), 0)
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "?")
    versions = {}
    for package in ("dagster", "pyarrow", "duckdb", "adbc-driver-postgresql", "psycopg", "pgserver", "pandas",
                    "SQLAlchemy", "psycopg2-binary"):  # fmt: skip
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "-"
    return {
        "cores": os.cpu_count(),
        "memory_gb": total_kb / 2**20,
        "cpu": model,
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
    }


def _git() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], check=False, cwd=REPO, capture_output=True, text=True
        ).stdout
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], check=False, cwd=REPO, capture_output=True, text=True
        ).stdout
    except OSError:
        return "?"
    return head.strip() + (" (with uncommitted changes)" if dirty.strip() else "")


def render(bench: Bench, summary: dict, info: dict, started: dt.datetime, seconds: float, load: tuple) -> str:
    plan, med, step, ratios = bench.plan, summary["med"], summary["step"], summary["ratios"]
    by = summary["by"]
    machine = _machine()
    main, big = plan.main_month, plan.big_month
    src_main, kept_main = bench.source_rows(main), bench.kept_rows(main)

    def spread(scenario: str, attr: str) -> str:
        values = [getattr(m, attr) for m in by.get(scenario, [])]
        return f"{min(values):.1f}–{max(values):.1f}" if len(values) > 1 else "–"

    def rate(rows: float, seconds: float) -> str:
        return f"{rows / seconds:,.0f}" if seconds and not math.isnan(seconds) else "–"

    lines = [
        "# Benchmarks",
        "",
        "Generated by `python -m benchmarks.run" + (" --quick" if plan.runs == 1 else "") + "`: do not edit by hand.",
        "",
        f"- Date: {started:%Y-%m-%d %H:%M} UTC, {seconds / 60:.1f} minutes in all.",
        (
            f"- Machine: {machine['cores']} cores ({machine['cpu']}), {machine['memory_gb']:.1f} GB of memory, "
            f"{machine['os']}, Python {machine['python']}, Postgres {info['postgres']} (embedded, pgserver)."
        ),
        (
            f"- Load average at the start and at the end: {load[0]:.2f} and {load[1]:.2f} (other work on the machine "
            "shows up as noise in the times; memory figures do not depend on it)."
        ),
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in machine["versions"].items()) + f"; commit {_git()}.",
        (
            f"- Data: generated by `taxi-assets fake-source` (yellow): {main} with {src_main:,} rows "
            f"({kept_main:,} kept by the cleaning rules), {big} with {bench.source_rows(big):,} rows, and "
            f"{len(plan.backfill_months)} months of {plan.backfill_rows:,} rows for the backfill."
        ),
        (
            f"- Every figure is the median of {plan.runs} run(s); runs of the different ways are interleaved. Peak "
            "memory is the largest resident set of the measured process and of the processes it waited for, from the "
            "operating system (`wait4`), not from Python's allocator. The embedded Postgres server runs outside that "
            "process tree; its largest process is sampled and shown separately (its resident set includes the shared "
            "buffers it touches)."
        ),
        "",
        f"## One month: {SERVICE} {main}",
        "",
        "| Way | Rows | Time (s) | Range (s) | Rows/s | Peak memory (MB) | Postgres server peak (MB) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    rows_table = [
        ("Seed way: pandas 100k-row chunks + `to_sql` (load time)", "seed", "work_seconds", src_main),
        ("Bare Arrow → COPY: whole month read, ADBC COPY (read + COPY)", "arrow-copy", "work_seconds", src_main),
        ("`postgres_trips` from the clean parquet (Dagster step)", "postgres_trips", None, kept_main),
        (
            "`postgres_trips` alone, whole `dagster asset materialize` process",
            "postgres_trips",
            "wall_seconds",
            kept_main,
        ),
        ("All four assets, one `dagster asset materialize` (whole process)", "month", "wall_seconds", src_main),
    ]
    for label, scenario, attr, rows in rows_table:
        if attr is None:  # the Dagster step's duration
            seconds = step(scenario, "postgres_trips")
            values = [m.steps["postgres_trips"] for m in by.get(scenario, [])]
            rng = f"{min(values):.1f}–{max(values):.1f}" if len(values) > 1 else "–"
        else:
            seconds, rng = med(scenario, attr), spread(scenario, attr)
        lines.append(
            f"| {label} | {rows:,} | {seconds:.2f} | {rng} | {rate(rows, seconds)} "
            f"| {med(scenario, 'peak_rss_mb'):.0f} | {med(scenario, 'postgres_peak_rss_mb'):.0f} |"
        )
    arrow = by.get("arrow-copy", [])
    lines += [
        "",
        (
            f"The bare baseline's phases: read {_median([m.extra['read_seconds'] for m in arrow]):.2f} s, COPY "
            f"{_median([m.extra['copy_seconds'] for m in arrow]):.2f} s. The seed way's process took "
            f"{med('seed', 'wall_seconds'):.1f} s in all, the baseline's {med('arrow-copy', 'wall_seconds'):.1f} s "
            "(interpreter start and imports included)."
        ),
        "",
        "Steps of the four-asset run (Dagster's step durations):",
        "",
        "| Step | Time (s) | Rows | Rows/s |",
        "|---|---:|---:|---:|",
    ]
    for name in STEPS:
        rows = src_main if name in ("raw_trips", "clean_trips") else kept_main
        seconds = step("month", name)
        lines.append(f"| `{name}` | {seconds:.2f} | {rows:,} | {rate(rows, seconds)} |")
    if "warm-up" in by:
        warm = by["warm-up"][0]
        first_run = (
            f"The first run on a fresh data folder (tables created, caches cold) took {warm.wall_seconds:.1f} s "
            f"with a peak of {warm.peak_rss_mb:.0f} MB; it is not counted in the medians."
        )
        lines += ["", first_run]

    bigs = by.get("big-month", [])
    lines += [
        "",
        f"## Memory does not grow with the month: {SERVICE} {main} against {big}",
        "",
        "| Month | Rows | Four assets (s) | Rows/s | Peak memory (MB) | Postgres server peak (MB) |",
        "|---|---:|---:|---:|---:|---:|",
        (
            f"| {main} | {src_main:,} | {med('month', 'wall_seconds'):.1f} "
            f"| {rate(src_main, med('month', 'wall_seconds'))} | {med('month', 'peak_rss_mb'):.0f} "
            f"| {med('month', 'postgres_peak_rss_mb'):.0f} |"
        ),
        (
            f"| {big} | {bench.source_rows(big):,} | {med('big-month', 'wall_seconds'):.1f} | "
            f"{rate(bench.source_rows(big), med('big-month', 'wall_seconds'))} | {med('big-month', 'peak_rss_mb'):.0f} "
            f"| {med('big-month', 'postgres_peak_rss_mb'):.0f} |"
        ),
        "",
        f"Steps of the {big} runs: "
        + ", ".join(f"`{n}` {_median([m.steps.get(n, float('nan')) for m in bigs]):.1f} s" for n in STEPS)
        + ".",
        "",
        f"## Single-run backfill of {len(plan.backfill_months)} months against {len(plan.backfill_months)} single runs",
        "",
        (
            f"Months {plan.backfill_months[0]} to {plan.backfill_months[-1]}, {plan.backfill_rows:,} rows each "
            "(smaller than real months so that the runs stay short; Dagster's per-run overhead weighs more on small "
            "months, so this is the harder case for the ratio). A single month's work is the sum of its run's step "
            "durations; the backfill is one `dagster asset materialize --partition-range` process, start to end."
        ),
        "",
        "| Way | Time (s) | Peak memory (MB) |",
        "|---|---:|---:|",
        (
            f"| {len(plan.backfill_months)} single-month runs: the work (sum of step durations) "
            f"| {summary['twelve_work']:.1f} | {med('single-month', 'peak_rss_mb'):.0f} (each) |"
        ),
        f"| {len(plan.backfill_months)} single-month runs: whole processes | {summary['twelve_wall']:.1f} | |",
        (
            f"| One single-run backfill: whole process | {summary['backfill_wall']:.1f} "
            f"| {med('backfill', 'peak_rss_mb'):.0f} |"
        ),
        "",
        "## Targets",
        "",
        "| Target | Measured | Goal | Met |",
        "|---|---:|---:|:---:|",
    ]
    seed, arrow, month = ratios["postgres_vs_seed"], ratios["postgres_vs_arrow"], ratios["month_vs_seed"]
    goals = [
        ("`postgres_trips` faster than the seed way", "postgres_vs_seed", f"{seed:.1f}×", "≥ 15×", True),
        ("`postgres_trips` against the bare Arrow → COPY", "postgres_vs_arrow", f"{arrow:.2f}×", "≤ 1.5×", False),
        ("Four assets (whole process) faster than the seed way's load", "month_vs_seed", f"{month:.1f}×", "≥ 8×", True),
        (f"Peak memory, {main}", "peak_mb", f"{ratios['peak_mb']:.0f} MB", "≤ 450 MB", False),
        (f"Peak memory, {big} against {main}", "flat_memory", f"{ratios['flat_memory']:.3f}×", "≤ 1.10×", False),
        ("Backfill against the work of single runs", "backfill", f"{ratios['backfill']:.2f}×", "≤ 1.2×", False),
    ]  # fmt: skip
    for label, key, shown, goal, at_least in goals:
        value, target = ratios[key], TARGETS[key]
        met = value >= target if at_least else value <= target
        lines.append(f"| {label} | {shown} | {goal} | {'yes' if met else 'NO'} |")
    if plan.runs == 1:
        lines += ["", "Quick run: a few thousand rows per month, one run each; the targets are meant for the full run."]
    lines += [
        "",
        "## Every run",
        "",
        "| Scenario | Run | Wall (s) | Work (s) | Peak (MB) | Postgres server peak (MB) | Rows | Steps (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for m in bench.measures:
        if m.scenario.startswith(FHVHV):  # in the fhvhv section's own table
            continue
        steps = ", ".join(f"{k} {v:.2f}" for k, v in m.steps.items())
        lines.append(
            f"| {m.scenario} | {m.run} | {m.wall_seconds:.2f} | {m.work_seconds:.2f} | {m.peak_rss_mb:.0f} "
            f"| {m.postgres_peak_rss_mb:.0f} | {m.rows:,} | {steps} |"
        )
    lines += [
        "",
        "Generating the data (not measured): " + ", ".join(f"{k} {v:.1f} s" for k, v in bench.generation.items()) + ".",
    ]
    return "\n".join(lines) + "\n"


def fhvhv_ratio(bench: Bench) -> float:
    """The fhvhv-memory target: the big month's median peak over the small month's."""
    by: dict[str, list[Measure]] = {}
    for m in bench.measures:
        by.setdefault(m.scenario, []).append(m)
    small = _median([m.peak_rss_mb for m in by.get("fhvhv-small", [])])
    return _median([m.peak_rss_mb for m in by.get("fhvhv-big", [])]) / small


def render_fhvhv(bench: Bench, started: dt.datetime, seconds: float, load: tuple) -> str:
    """The report's fhvhv-memory section, between its markers (rewritten alone by ``--only fhvhv-memory``)."""
    plan, machine = bench.plan, _machine()
    small, big = plan.fhvhv_small_month, plan.fhvhv_big_month
    by: dict[str, list[Measure]] = {}
    for m in bench.measures:
        by.setdefault(m.scenario, []).append(m)
    months = (("fhvhv-small", small), ("fhvhv-big", big))
    ratio, target = fhvhv_ratio(bench), TARGETS["fhvhv_memory"]
    packages = ("dagster", "pyarrow", "duckdb", "adbc-driver-postgresql")
    versions = ", ".join(f"{k} {machine['versions'][k]}" for k in packages)

    def med(scenario: str, get) -> float:
        return _median([get(m) for m in by.get(scenario, [])])

    def spread(scenario: str, get, fmt: str = ".1f") -> str:
        values = [get(m) for m in by.get(scenario, [])]
        return f"{min(values):{fmt}}–{max(values):{fmt}}" if len(values) > 1 else "–"

    def entry(month: str) -> dict:
        return bench.fhvhv_entry(month)

    lines = [
        FHVHV_BEGIN,
        f"## Memory does not grow with the month: {FHVHV} {small} ({entry(small)['rows']:,} rows) against {big} "
        f"({entry(big)['rows']:,} rows), TLC parquet",
        "",
        "Generated by `python -m benchmarks.run --only fhvhv-memory"
        + (" --quick" if plan.runs == 1 else "")
        + "` (or by the full run): do not edit by hand.",
        "",
        f"- Date: {started:%Y-%m-%d %H:%M} UTC, {seconds / 60:.1f} minutes in all; commit {_git()}.",
        (
            f"- Machine: {machine['cores']} cores ({machine['cpu']}), {machine['memory_gb']:.1f} GB of memory, "
            f"{machine['os']}, Python {machine['python']}, Postgres {bench.fhvhv_info.get('postgres', '?')} "
            f"(embedded, pgserver); {versions}. Load average at the start and at the end: {load[0]:.2f} and "
            f"{load[1]:.2f}."
        ),
        (
            f"- Data: generated by `taxi-assets fake-source --services {FHVHV} --layout tlc` "
            f"(`trip-data/{FHVHV}_tripdata_YYYY-MM.parquet`, the TLC's 24 columns), served as a local folder "
            "through `TAXI_TLC_URL` (`TAXI_SOURCE=tlc`): "
            + " and ".join(
                f"{month} with {entry(month)['rows']:,} rows ({entry(month)['kept']:,} kept by the cleaning rules, "
                f"{entry(month)['bytes'] / 1e6:,.1f} MB of parquet)"
                for _, month in months
            )
            + ". The fake's random values compress worse than the TLC's (a real month of about 20M rows is about "
            "500 MB)."
        ),
        (
            f"- Each run is one `dagster asset materialize -m taxi_assets --select {','.join(FHVHV_ASSETS)} "
            f"--partition MONTH` process on the embedded default (lake folder, DuckDB, embedded Postgres), all four "
            f"steps in that one process (in-process executor); the months alternate, {plan.runs} run(s) each"
            + (", after a warm-up run of the small month (tables created; not counted)" if plan.runs > 1 else "")
            + ". Figures are medians. Peak memory is the largest resident set of the process and of the processes "
            "it waited for, from the operating system (`wait4`). The peak by step is the process's resident set "
            "sampled every 0.05 s by psutil, over each step's start and end in Dagster's event log (a sample can "
            "miss a short spike: the `wait4` peak cannot). The process tree (with Dagster's `tail -F` of the compute "
            "logs and their orphan watchers, each a separate small process) is summed separately. After every run "
            "the rows in Postgres and in DuckDB are counted and must equal the manifest's kept rows, or the "
            "benchmark fails."
        ),
        "",
        "| Month | Rows | Kept (in Postgres and DuckDB) | Parquet (MB) | Four assets (s) | Range (s) | Rows/s "
        "| Peak memory (MB) | Range (MB) | Postgres server peak (MB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for scenario, month in months:
        wall = med(scenario, lambda m: m.wall_seconds)
        rows = entry(month)["rows"]
        lines.append(
            f"| {month} | {rows:,} | {entry(month)['kept']:,} | {entry(month)['bytes'] / 1e6:,.1f} | {wall:.1f} "
            f"| {spread(scenario, lambda m: m.wall_seconds)} | {rows / wall:,.0f} "
            f"| {med(scenario, lambda m: m.peak_rss_mb):.0f} | {spread(scenario, lambda m: m.peak_rss_mb, '.0f')} "
            f"| {med(scenario, lambda m: m.postgres_peak_rss_mb):.0f} |"
        )
    phases = ("startup", *STEPS)
    lines += [
        "",
        "Where the memory goes (median over the runs of each month): each step's duration, and the largest sampled "
        "resident set while it ran (`startup`: interpreter, imports and definitions, before the first step).",
        "",
        f"| Step | {small} (s) | {big} (s) | {small} peak (MB) | {big} peak (MB) |",
        "|---|---:|---:|---:|---:|",
    ]
    for phase in phases:
        durations = [
            "–" if phase == "startup" else f"{med(scenario, lambda m, p=phase: m.steps.get(p, float('nan'))):.1f}"
            for scenario, _ in months
        ]
        peaks = [
            f"{med(scenario, lambda m, p=phase: m.extra.get(f'rss_{p}_mb', float('nan'))):.0f}"
            for scenario, _ in months
        ]
        lines.append(f"| `{phase}` | {' | '.join(durations)} | {' | '.join(peaks)} |")

    def peak_phase(scenario: str) -> str:
        counts: dict[str, int] = {}
        for m in by.get(scenario, []):
            values = {p: m.extra.get(f"rss_{p}_mb", 0.0) for p in phases}
            top = max(values, key=values.get)
            counts[top] = counts.get(top, 0) + 1
        return ", ".join(f"`{p}` ({n} of {len(by.get(scenario, []))})" for p, n in counts.items())

    lines += [
        "",
        f"The peak is reached in: {small}: {peak_phase('fhvhv-small')}; {big}: {peak_phase('fhvhv-big')}.",
        "",
        "| Target | Measured | Goal | Met |",
        "|---|---:|---:|:---:|",
        (
            f"| Peak memory, {FHVHV} {big} ({entry(big)['rows']:,} rows) against {small} ({entry(small)['rows']:,} "
            f"rows) | {ratio:.3f}× | ≤ {target:.2f}× | {'yes' if ratio <= target else 'NO'} |"
        ),
    ]
    if plan.runs == 1:
        lines += ["", "Quick run: a few thousand rows per month, one run each; the target is meant for the full run."]
    lines += [
        "",
        f"### Every {FHVHV} run",
        "",
        "| Scenario | Month | Run | Wall (s) | Peak (MB) | Sampled peak (MB) | Tree, summed (MB) "
        "| Postgres server peak (MB) | Rows | Steps (s) | Peak by step (MB) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    month_of = {"fhvhv-small": small, "fhvhv-big": big, "fhvhv-warm-up": small}
    for m in bench.measures:
        if m.scenario not in month_of:
            continue
        steps = ", ".join(f"{k} {v:.2f}" for k, v in m.steps.items())
        by_step = ", ".join(f"{p} {m.extra[f'rss_{p}_mb']:.0f}" for p in (*phases, "end") if f"rss_{p}_mb" in m.extra)
        lines.append(
            f"| {m.scenario} | {month_of[m.scenario]} | {m.run} | {m.wall_seconds:.2f} | {m.peak_rss_mb:.0f} "
            f"| {m.extra.get('rss_sampled_mb', float('nan')):.0f} | {m.extra.get('rss_tree_mb', float('nan')):.0f} "
            f"| {m.postgres_peak_rss_mb:.0f} | {m.rows:,} "
            f"| {steps} | {by_step} |"
        )
    lines += [
        "",
        "Generating the data (not measured in the figures above): "
        + ", ".join(
            f"{month} {g['seconds']:.1f} s with a peak of {g['peak_rss_mb']:.0f} MB"
            for month, g in bench.fhvhv_generation.items()
        )
        + ".",
        FHVHV_END,
    ]
    return "\n".join(lines) + "\n"


def split_report(text: str) -> tuple[str, str | None]:
    """A report's first-wave part and its fhvhv-memory section (None when it has none)."""
    begin, end = text.find(FHVHV_BEGIN), text.find(FHVHV_END)
    if begin < 0 or end < begin:
        return text, None
    end += len(FHVHV_END)
    return (text[:begin] + text[end:]).rstrip("\n") + "\n", text[begin:end] + "\n"


def _groups(value: str) -> tuple[str, ...]:
    groups = tuple(dict.fromkeys(g.strip() for g in value.split(",") if g.strip()))
    unknown = [g for g in groups if g not in GROUPS]
    if unknown or not groups:
        raise argparse.ArgumentTypeError(f"unknown group(s) {unknown} (choose from {', '.join(GROUPS)})")
    return groups


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few thousand rows, one run each (the smoke test)")
    parser.add_argument("--runs", type=int, help="runs of each measured thing (default: 3, quick: 1)")
    parser.add_argument(
        "--only",
        type=_groups,
        default=GROUPS,
        metavar="GROUP[,GROUP]",
        help=f"measure only these ({', '.join(GROUPS)}; default: all); the report's other sections are kept "
        "as they are in --out",
    )
    parser.add_argument(
        "--out", type=Path, help="the report (default: docs/BENCHMARKS.md; quick: beside the work folder)"
    )
    parser.add_argument("--json", type=Path, help="also write every measure as JSON here")
    parser.add_argument("--work-dir", type=Path, help="working folder (default: a new temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the working folder (data, lake, databases, logs)")
    args = parser.parse_args(argv)

    plan = QUICK if args.quick else FULL
    if args.runs:
        plan = Plan(**{**asdict(plan), "runs": args.runs})
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="taxi-bench-"))
    # A quick run's report goes beside the working folder, which is deleted at the end (unless --keep).
    out = args.out or (work.parent / f"{work.name}-BENCHMARKS.md" if args.quick else REPO / "docs" / "BENCHMARKS.md")
    started, clock, load_start = dt.datetime.now(dt.UTC), time.perf_counter(), os.getloadavg()[0]
    bench = Bench(plan, work)
    log(f"working in {work}; measuring {', '.join(args.only)}")
    info = None
    try:
        if "first-wave" in args.only:
            info = bench.run_all()
        first_done = (time.perf_counter(), dt.datetime.now(dt.UTC), os.getloadavg()[0])
        if "fhvhv-memory" in args.only:
            bench.run_fhvhv()
    finally:
        bench.stop_postgres()
    end_clock, load_end = time.perf_counter(), os.getloadavg()[0]
    # The sections not measured now are kept from the existing report, and so is the hand-written end.
    existing = out.read_text() if out.exists() else ""
    existing, by_hand = existing.split(BY_HAND, 1) if BY_HAND in existing else (existing, None)
    kept_first, kept_fhvhv = split_report(existing) if existing else (None, None)
    if info is not None:
        summary = summarize(bench)
        first = render(bench, summary, info, started, first_done[0] - clock, (load_start, first_done[2]))
    else:
        summary = None
        first = (
            kept_first or "# Benchmarks\n\nNo first-wave figures yet: `python -m benchmarks.run --only first-wave`.\n"
        )
    if "fhvhv-memory" in args.only:
        fhvhv = render_fhvhv(bench, first_done[1], end_clock - first_done[0], (first_done[2], load_end))
    else:
        fhvhv = kept_fhvhv
    report = first if fhvhv is None else first.rstrip("\n") + "\n\n" + fhvhv
    if by_hand is not None:
        report = report.rstrip("\n") + "\n\n" + BY_HAND + by_hand
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    if args.json:
        args.json.write_text(json.dumps([asdict(m) for m in bench.measures], indent=1))
    log(f"report: {out}")
    ratios = dict(summary["ratios"]) if summary else {}
    if "fhvhv-memory" in args.only:
        ratios["fhvhv_memory"] = fhvhv_ratio(bench)
    for key, value in ratios.items():
        log(f"  {key}: {value:.3f} (target {TARGETS[key]})")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
