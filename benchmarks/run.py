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
  measured process's resident set, sampled, over each step's start and end in Dagster's event log);
- ``backfill-speed``: six yellow months of TLC-layout parquet. Downloads: the single-run backfill of ``raw_trips``
  from ``benchmarks.throttled_source`` (a fixed rate per connection) against one connection downloading the six
  files one after another (``benchmarks.baselines download``). Both cores: the four assets of the six months as one
  single-run backfill (first step start to last step end, from Dagster's event log) against the summed step
  durations of six single-month runs; and a picture of the backfill's timeline (``draw_timeline``), drawn from
  the run's events into a folder named after the report (``docs/benchmarks/`` for ``docs/BENCHMARKS.md``).

``--only GROUP[,GROUP]`` runs some groups alone: the report's other sections are kept as they are in the ``--out``
file (the fhvhv and backfill-speed sections sit between ``<!-- fhvhv-memory -->`` and ``<!-- backfill-speed -->``
markers at the end).

Every measured thing runs ``--runs`` times (3 by default), interleaved, and the report gives medians. Loaded rows
are read back from Postgres and DuckDB and checked against the generated files' manifest: a wrong count fails the
benchmark. The report goes to ``docs/BENCHMARKS.md`` (``--out``); ``--quick`` runs every code path on a few thousand
rows in well under a minute (the smoke test does that) and writes nothing under ``docs/`` unless asked.

The embedded Postgres the benchmark starts is stopped at the end, and the working folder (generated data, lake,
databases) is deleted unless ``--keep``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import platform
import re
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
    # backfill-speed (issue 12)
    "downloads": 0.4,  # raw_trips' step of a 6-month backfill at most 0.4x one connection downloading the 6 files
    "both_cores": 0.6,  # a 6-month backfill, first step start to last step end, at most 0.6x 6 single runs' steps
    "both_cores_peak_mb": 450.0,  # ... with a peak of at most 450 MB (the largest process, as in the first wave)
    "both_cores_tree_mb": 450.0,  # ... and the run's processes together (PSS summed) at most 450 MB
    "month_vs_seed_v2": 12.0,  # the four assets of the month at least 12x faster than the seed way's load
    "postgres_vs_arrow_v2": 1.0,  # postgres_trips no slower than the bare Arrow-to-COPY baseline
}

GROUPS = ("first-wave", "fhvhv-memory", "backfill-speed")  # what --only can name
FHVHV = "fhvhv"
FHVHV_ASSETS = tuple(f"{FHVHV}/{step}" for step in STEPS)
FHVHV_BEGIN, FHVHV_END = "<!-- fhvhv-memory -->", "<!-- /fhvhv-memory -->"  # the fhvhv section of the report
SPEED_BEGIN, SPEED_END = "<!-- backfill-speed -->", "<!-- /backfill-speed -->"  # the backfill-speed section
TIMELINE, DOWNLOAD_TIMELINE = "backfill-timeline.png", "download-timeline.png"  # its pictures
SPEED_SCENARIOS = ("range-warm-up", "one-connection", "download-range", "range-single", "range-backfill")
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
    # backfill-speed: yellow months of TLC-layout parquet (~34 MB each at 1.37M rows), and the source's rate
    speed_months: tuple[str, ...] = tuple(f"2021-{m:02d}" for m in range(1, 7))
    speed_rows: int = 1_369_765
    speed_rate_mb: float = 10.0  # megabytes per second per connection


FULL = Plan("2021-01", None, "2019-03", None, tuple(f"2020-{m:02d}" for m in range(1, 13)), 200_000, 3)
QUICK = Plan(
    "2021-01", 3_000, "2019-03", 6_000, ("2020-01", "2020-02"), 2_000, 1, fhvhv_small_rows=3_000, fhvhv_big_rows=12_000,
    # 10,000 rows: ~0.3 MB, several of the throttled server's 64 KiB pieces, 0.3 s each at 1 MB/s
    speed_months=("2021-01", "2021-02"), speed_rows=10_000, speed_rate_mb=1.0,
)  # fmt: skip


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
    nothing). Dagster's children (``tail -F`` of the compute logs, their orphan watchers) are small but many.

    The tree's sum is of proportional set sizes (PSS: a page shared by n processes counts 1/n in each), so the
    pages that forked step processes share with their forkserver are counted once, as the machine holds them.
    Reading a process's PSS walks its page tables (about 0.4 ms for 400 MB), so the tree is summed every
    ``tree_every``-th sample only: every 0.25 s, about 1% of a core for a run of eight processes."""

    def __init__(self, pid: int, interval: float = 0.05, tree_every: int = 5):
        super().__init__(daemon=True)
        self.pid, self.interval, self.tree_every, self.samples = pid, interval, tree_every, []
        self._halt = threading.Event()

    def run(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        tree, count = 0, 0
        while not self._halt.is_set():
            try:
                own = root.memory_info().rss
                if count % self.tree_every == 0:
                    tree = sum(p.memory_full_info().pss for p in (root, *root.children(recursive=True)))
                self.samples.append((time.time(), own, tree))
                count += 1
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
    largest of all, ``tree_pss`` the largest sum of the proportional set sizes of the process and its children."""
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
    peaks["tree_pss_mb"] = max(tree for _, _, tree in trace) / 2**20
    return peaks


@contextlib.contextmanager
def served_throttled(folder: Path, rate_mb: float, env: dict):
    """``benchmarks.throttled_source`` serving ``folder`` at ``rate_mb`` MB/s per connection, in a process of its
    own (not competing with the measuring process for its interpreter); yields its URL."""
    cmd = [sys.executable, "-m", "benchmarks.throttled_source", str(folder), "--rate-mb", str(rate_mb)]
    # Its stderr is not ours: a server that outlived this process must not hold the caller's pipe open.
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=REPO)
    try:
        url = server.stdout.readline().strip()
        if not url.startswith("http://"):
            raise RuntimeError(f"{' '.join(cmd)} printed {url!r}, not its URL (exit code {server.poll()})")
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
        server.stdout.close()


# --------------------------------------------------------------------------------------------------------------
# A run's event log: step durations, its span, and its timeline (whatever steps and months the pipeline has)

_MONTH = re.compile(r"(?<!\d)(\d{4}-\d{2})(?![\d-])")
# "... in 3.4s ..." or "(3.4s)": how long the month took, in the message that says it is done
_TOOK = re.compile(r"\bin (\d+(?:\.\d+)?) ?s\b|\((\d+(?:\.\d+)?) ?s\)")


def _short(step_key: str) -> str:
    return step_key.split("__", 1)[-1]  # yellow__raw_trips -> raw_trips


def step_durations(records) -> dict[str, float]:
    """Each step's duration (seconds, Dagster's own), by short step name, from a run's event log records."""
    import dagster as dg

    return {
        _short(r.step_key): r.dagster_event.event_specific_data.duration_ms / 1000
        for r in records
        if r.dagster_event is not None and r.dagster_event.event_type == dg.DagsterEventType.STEP_SUCCESS
    }


def step_windows(records) -> dict[str, tuple[float, float]]:
    """Each step's (start, end), epoch seconds: its first STEP_START and its last STEP_SUCCESS or STEP_FAILURE
    event (a retried step: from its first attempt's start)."""
    import dagster as dg

    kinds = {dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE}
    windows: dict[str, list[float]] = {}
    for r in records:
        if r.dagster_event is None or not r.step_key or r.dagster_event.event_type not in kinds:
            continue
        window = windows.setdefault(r.step_key, [r.timestamp, r.timestamp])
        window[0], window[1] = min(window[0], r.timestamp), max(window[1], r.timestamp)
    return {step: (start, end) for step, (start, end) in windows.items()}


def run_span(records) -> float:
    """A run's first step start to its last step end, seconds."""
    windows = step_windows(records).values()
    return max(end for _, end in windows) - min(start for start, _ in windows)


def month_windows(records) -> dict[str, dict[str, tuple[float, float]]]:
    """Within each step, each month's (start, end), epoch seconds, from the step's log messages that name a month
    of the run (``YYYY-MM`` anywhere in the message, e.g. ``2021-01: kept ...`` or a URL's file name; the run's
    months are the partitions it materialized). A month ends at its last such message; it starts that message's
    duration (``in 3.4s`` or ``(3.4s)``) before, or, without one, at its first message or the step's previous
    month's end, whichever is earlier (months done one after another)."""
    import dagster as dg

    steps = step_windows(records)
    partitions = {
        r.dagster_event.partition
        for r in records
        if r.dagster_event is not None
        and r.dagster_event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION
        and r.dagster_event.partition
    }
    said: dict[str, dict[str, list[tuple[float, float | None]]]] = {}
    for r in records:
        if r.dagster_event is not None or r.step_key not in steps:  # the step's own log messages only
            continue
        message = r.user_message or ""
        named = [m.group(1) for m in _MONTH.finditer(message) if not partitions or m.group(1) in partitions]
        if not named:  # e.g. a check's message about other months
            continue
        took = _TOOK.search(message)
        seconds = float(took.group(1) or took.group(2)) if took else None
        said.setdefault(r.step_key, {}).setdefault(named[0], []).append((r.timestamp, seconds))
    result: dict[str, dict[str, tuple[float, float]]] = {}
    for step, months in said.items():
        step_start, previous = steps[step][0], steps[step][0]
        for month, messages in sorted(months.items(), key=lambda item: item[1][-1][0]):
            end, seconds = messages[-1]
            start = end - seconds if seconds is not None else min(messages[0][0], previous)
            result.setdefault(step, {})[month] = (max(start, step_start), end)
            previous = end
    return result


def draw_timeline(records, path: Path, title: str) -> Path:
    """A PNG of a run's timeline from its event log records: one row per step (its start to its end, grey), and in
    it a bar per month (``month_windows``), one lane and one color per month; seconds since the first step began."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state (Agg draws the PNG)

    steps, months = step_windows(records), month_windows(records)
    if not steps:
        raise ValueError(f"{title}: no steps in the event log")
    origin = min(start for start, _ in steps.values())
    order = sorted(steps, key=lambda step: steps[step])
    names = sorted({month for by_month in months.values() for month in by_month})
    colors = colormaps["tab10"]
    figure = Figure(figsize=(11, 1.4 + 0.75 * len(order)))
    axes = figure.add_subplot()
    lane = 0.72 / max(len(names), 1)
    for row, step in enumerate(order):
        y = len(order) - 1 - row  # the first step at the top
        start, end = steps[step]
        axes.barh(y, end - start, left=start - origin, height=0.86, color="0.9", edgecolor="0.55", linewidth=0.8)
        for i, month in enumerate(names):
            if month in months.get(step, {}):
                m_start, m_end = months[step][month]
                axes.barh(
                    y + 0.36 - (i + 0.5) * lane, max(m_end - m_start, 0.005), left=m_start - origin,
                    height=lane * 0.85, color=colors(i % 10), label=month,
                )  # fmt: skip
    axes.set_yticks(range(len(order)), [_short(step) for step in reversed(order)])
    axes.set_xlabel("seconds since the first step started")
    axes.set_xlim(left=0)
    axes.grid(axis="x", color="0.85", linewidth=0.6)
    axes.set_axisbelow(True)
    handles, labels = axes.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    if unique:
        axes.legend(unique.values(), unique.keys(), loc="upper left", bbox_to_anchor=(1.005, 1), title="month",
                    frameon=False, fontsize="small")  # fmt: skip
    axes.set_title(title, fontsize="medium", loc="left")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path


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
        self.speed = work / "speed"  # backfill-speed's months, in the TLC's layout
        self.speed_manifest: dict = {}
        self.speed_generation: float = 0.0
        self.speed_info: dict = {}
        self.speed_events: dict[tuple[str, int], list] = {}  # (scenario, run): the run's event log records
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
        from taxi_assets.resources.postgres import EMBEDDED_SETTINGS, start_embedded_postgres

        # With the settings the store gives the embedded server it starts (wal_level=minimal): the assets' runs
        # find it as they would have set it up, and the baselines run on the same server.
        return start_embedded_postgres(self.pg_dir, EMBEDDED_SETTINGS)

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

    # --- backfill-speed ---

    def _speed_path(self, month: str) -> str:
        return f"trip-data/{SERVICE}_tripdata_{month}.parquet"

    def speed_entry(self, month: str) -> dict:
        return self.speed_manifest["files"][self._speed_path(month)]

    def speed_env(self, url: str) -> dict:
        """The TLC source at ``url`` (the throttled server, or the local folder itself)."""
        return {**self.tlc_env, "TAXI_TLC_URL": url}

    def generate_speed(self) -> None:
        plan = self.plan
        cmd = [sys.executable, "-m", "taxi_assets.cli", "fake-source", "--out", str(self.speed), "--services",
               SERVICE, "--months", ",".join(plan.speed_months), "--rows", str(plan.speed_rows),
               "--layout", "tlc"]  # fmt: skip
        log(f"generating {SERVICE} {','.join(plan.speed_months)} ({plan.speed_rows:,} rows each, TLC parquet)")
        started = time.perf_counter()
        subprocess.run(cmd, check=True, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.speed_generation = time.perf_counter() - started
        self.speed_manifest = json.loads((self.speed / "manifest.json").read_text())

    def _parquet_rows(self, files: list[Path]) -> int:
        """Rows of downloaded files (their parquet footers); each must be the source's file, byte for byte in size."""
        import pyarrow.parquet as pq

        rows = 0
        for path, month in zip(files, self.plan.speed_months, strict=True):
            entry = self.speed_entry(month)
            if path.stat().st_size != entry["bytes"]:
                raise AssertionError(f"{path}: {path.stat().st_size:,} bytes, the source's file has {entry['bytes']:,}")
            rows += pq.ParquetFile(path).metadata.num_rows
        return rows

    def _materialize(self, scenario: str, selection: tuple[str, ...], months: list[str], env: dict, trace=None):
        """One measured ``dagster asset materialize`` process: (wall, peak, Postgres peak, the run's event records)."""
        cmd = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "taxi_assets", "--select",
               ",".join(selection)]  # fmt: skip
        cmd += ["--partition", months[0]] if len(months) == 1 else ["--partition-range", f"{months[0]}...{months[-1]}"]
        self._forget_materializations()
        wall, peak, pg_peak, _ = run_measured(
            cmd, env, self.work, self._log_file(scenario), self.pg_dir / "postmaster.pid", trace
        )
        status, _ = self._instance_steps()  # also: no month skipped as unchanged
        if status != "SUCCESS":
            raise AssertionError(f"{scenario}: the Dagster run ended {status}")
        (run,) = self._dagster().get_runs(limit=1)
        return wall, peak, pg_peak, list(self._dagster().all_logs(run.run_id))

    def download_baseline(self, url: str, run: int) -> Measure:
        """One connection at a time downloads the months' files one after another (a plain requests loop)."""
        out = self.work / "one-connection"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        paths = [self._speed_path(m) for m in self.plan.speed_months]
        cmd = [sys.executable, "-m", "benchmarks.baselines", "download", "--url", url, "--paths", ",".join(paths),
               "--out", str(out)]  # fmt: skip
        wall, peak, pg_peak, stdout = run_measured(
            cmd, self.env, REPO, self._log_file("one-connection"), self.pg_dir / "postmaster.pid"
        )
        result = json.loads(stdout.strip().splitlines()[-1])
        rows = self._parquet_rows([out / Path(p).name for p in paths])
        extra = {"bytes": float(result["bytes"])}
        return self._keep(Measure("one-connection", run, wall, peak, pg_peak, result["seconds"], rows, extra=extra))

    def download_range(self, url: str, run: int) -> Measure:
        """The single-run backfill of ``raw_trips`` for the months, from the throttled source."""
        months, scenario = list(self.plan.speed_months), "download-range"
        lake = self.data / "lake" / "raw" / SERVICE
        for month in months:  # the files checked below must be this run's downloads
            (lake / Path(self._speed_path(month)).name).unlink(missing_ok=True)
        wall, peak, pg_peak, records = self._materialize(
            scenario, (f"{SERVICE}/raw_trips",), months, self.speed_env(url)
        )
        self.speed_events[scenario, run] = records
        steps = step_durations(records)
        rows = self._parquet_rows([lake / Path(self._speed_path(m)).name for m in months])
        span = run_span(records)
        extra = {"bytes": float(sum(self.speed_entry(m)["bytes"] for m in months)), "span_seconds": span}
        # The step's own duration; should the pipeline split the downloads into several steps, the run's span.
        work = steps["raw_trips"] if set(steps) == {"raw_trips"} else span
        return self._keep(Measure(scenario, run, wall, peak, pg_peak, work, rows, steps, extra))

    def speed_assets(self, scenario: str, months: list[str], run: int) -> Measure:
        """The four assets of ``months`` from the local (unthrottled) source; work: the run's span, first step start
        to last step end (``extra``: the sum of its step durations, the process tree's sampled peak)."""
        trace: list[tuple[float, int, int]] = []
        wall, peak, pg_peak, records = self._materialize(
            scenario, ASSETS, months, self.speed_env(str(self.speed)), trace
        )
        self.speed_events[scenario, run] = records
        steps = step_durations(records)
        rows = self._store_rows(months, SERVICE, sum(self.speed_entry(m)["kept"] for m in months))
        peaks = _peaks_by_step(trace, {})  # no windows: the whole run's sampled peak, and the tree's summed
        extra = {"steps_sum_seconds": sum(steps.values())}
        extra.update({k: peaks[k] for k in ("rss_sampled_mb", "tree_pss_mb") if k in peaks})
        return self._keep(Measure(scenario, run, wall, peak, pg_peak, run_span(records), rows, steps, extra))

    def run_backfill_speed(self) -> dict:
        plan = self.plan
        months = list(plan.speed_months)
        self.generate_speed()
        url = self.start_postgres()
        self.speed_info = {"postgres": self.postgres_version(url)}
        with served_throttled(self.speed, plan.speed_rate_mb, self.env) as source_url:
            if plan.runs > 1:  # the months' first run: their tables and partitions created, caches cold (not counted)
                self.speed_assets("range-warm-up", months, 0)
            for run in range(1, plan.runs + 1):  # interleaved, so that drift on the machine hits every way alike
                self.download_baseline(source_url, run)
                self.download_range(source_url, run)
                for month in months:
                    self.speed_assets("range-single", [month], run)
                self.speed_assets("range-backfill", months, run)
        return self.speed_info

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
        if m.scenario.startswith(FHVHV) or m.scenario in SPEED_SCENARIOS:  # in their sections' own tables
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
            "logs and their orphan watchers, each a separate small process) is summed separately (proportional set "
            "sizes: shared pages counted once). After every run the rows in Postgres and in DuckDB are counted and "
            "must equal the manifest's kept rows, or the benchmark fails."
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
        "| Scenario | Month | Run | Wall (s) | Peak (MB) | Sampled peak (MB) | Processes together, PSS (MB) "
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
            f"| {m.extra.get('rss_sampled_mb', float('nan')):.0f} | {m.extra.get('tree_pss_mb', float('nan')):.0f} "
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


def speed_ratios(bench: Bench, one_month: dict | None = None) -> dict[str, float]:
    """The backfill-speed targets from the medians: the downloads step against one connection, the backfill's
    span against six single runs' summed steps, its peak; with ``one_month`` (the first-wave ratios of this
    run), the one-month targets of issue 12."""
    by: dict[str, list[Measure]] = {}
    for m in bench.measures:
        by.setdefault(m.scenario, []).append(m)
    runs = range(1, bench.plan.runs + 1)
    singles = _median([sum(m.extra["steps_sum_seconds"] for m in by["range-single"] if m.run == r) for r in runs])
    ratios = {
        "downloads": _median([m.work_seconds for m in by["download-range"]])
        / _median([m.work_seconds for m in by["one-connection"]]),
        "both_cores": _median([m.work_seconds for m in by["range-backfill"]]) / singles,
        "both_cores_peak_mb": _median([m.peak_rss_mb for m in by["range-backfill"]]),
        "both_cores_tree_mb": _median([m.extra["tree_pss_mb"] for m in by["range-backfill"]]),
    }
    if one_month is not None:
        ratios["month_vs_seed_v2"] = one_month["month_vs_seed"]
        ratios["postgres_vs_arrow_v2"] = one_month["postgres_vs_arrow"]
    return ratios


def render_speed(
    bench: Bench,
    started: dt.datetime,
    seconds: float,
    load: tuple,
    pictures: dict[str, str],
    one_month: dict | None,
) -> str:
    """The report's backfill-speed section, between its markers (rewritten alone by ``--only backfill-speed``).
    ``pictures``: the timelines' links, relative to the report; ``one_month``: this run's first-wave ratios."""
    plan, machine = bench.plan, _machine()
    months, n = plan.speed_months, len(plan.speed_months)
    by: dict[str, list[Measure]] = {}
    for m in bench.measures:
        by.setdefault(m.scenario, []).append(m)
    ratios = speed_ratios(bench, one_month)
    runs = range(1, plan.runs + 1)
    entries = [bench.speed_entry(m) for m in months]
    total_bytes = sum(e["bytes"] for e in entries)
    packages = ("dagster", "pyarrow", "duckdb", "adbc-driver-postgresql")
    versions = ", ".join(f"{k} {machine['versions'][k]}" for k in packages)

    def values(scenario: str, get) -> list[float]:
        return [get(m) for m in by.get(scenario, [])]

    def row(label: str, got: list[float], peak: list[float] | None = None, tree: list[float] | None = None) -> str:
        rng = f"{min(got):.1f}–{max(got):.1f}" if len(got) > 1 else "–"
        cells = [label, f"{_median(got):.2f}", rng]
        cells.append(f"{_median(peak):.0f}" if peak else "")
        cells.append(f"{_median(tree):.0f}" if tree else "")
        return "| " + " | ".join(cells) + " |"

    def mb_per_s(seconds: float) -> str:
        return f"{total_bytes / 1e6 / seconds:.1f}" if seconds > 0 else "–"

    per_run_singles = [sum(m.extra["steps_sum_seconds"] for m in by["range-single"] if m.run == r) for r in runs]
    per_run_single_walls = [sum(m.wall_seconds for m in by["range-single"] if m.run == r) for r in runs]
    baseline = values("one-connection", lambda m: m.work_seconds)
    step = values("download-range", lambda m: m.work_seconds)
    lines = [
        SPEED_BEGIN,
        f"## Backfills at the speed of the link and both cores: {SERVICE} {months[0]} to {months[-1]}",
        "",
        "Generated by `python -m benchmarks.run --only backfill-speed"
        + (" --quick" if plan.runs == 1 else "")
        + "` (or by the full run): do not edit by hand.",
        "",
        f"- Date: {started:%Y-%m-%d %H:%M} UTC, {seconds / 60:.1f} minutes in all; commit {_git()}.",
        (
            f"- Machine: {machine['cores']} cores ({machine['cpu']}), {machine['memory_gb']:.1f} GB of memory, "
            f"{machine['os']}, Python {machine['python']}, Postgres {bench.speed_info.get('postgres', '?')} "
            f"(embedded, pgserver); {versions}. Load average at the start and at the end: {load[0]:.2f} and "
            f"{load[1]:.2f}."
        ),
        (
            f"- Data: {n} months generated by `taxi-assets fake-source --services {SERVICE} --layout tlc --rows "
            f"{plan.speed_rows}` (`trip-data/{SERVICE}_tripdata_YYYY-MM.parquet`): {plan.speed_rows:,} rows each, "
            f"{sum(e['kept'] for e in entries):,} kept by the cleaning rules in all, "
            f"{total_bytes / 1e6:,.1f} MB of parquet in all."
        ),
        (
            f"- Every run is a `dagster asset materialize -m taxi_assets` process on the embedded default (lake "
            f"folder, DuckDB, embedded Postgres), with the Dagster instance wiped before it (no month skipped as "
            f"unchanged). {plan.runs} run(s) of each way, interleaved"
            + (", after a warm-up backfill (tables and partitions created; not counted)" if plan.runs > 1 else "")
            + ". Figures are medians. Step times and spans come from the run's event log (STEP_START, STEP_SUCCESS); "
            "peak memory is the largest resident set of the process and of the processes it waited for (`wait4`); "
            "the memory of the run's processes together is the largest sum of their proportional set sizes (PSS: a "
            "page that n processes share counts 1/n in each, so the step processes' pages shared with their "
            "forkserver count once), sampled every 0.25 s (psutil). Every downloaded file must "
            "have the source file's size and rows; every run's months must have the manifest's kept rows in "
            "Postgres and in DuckDB, or the benchmark fails."
        ),
        "",
        f"### Downloads: {n} months from a source that sends each connection at {plan.speed_rate_mb:g} MB/s",
        "",
        (
            f"The source is `benchmarks.throttled_source` on the loopback interface (its own process), pacing every "
            f"response to {plan.speed_rate_mb:g} MB/s per connection. The baseline downloads the {n} files one after "
            "another, one connection at a time, with a plain `requests` loop (`benchmarks.baselines download`); the "
            f"backfill is `--select {SERVICE}/raw_trips --partition-range {months[0]}...{months[-1]}`."
        ),
        "",
        "| Way | Time (s) | Range (s) | Peak memory (MB) | MB/s |",
        "|---|---:|---:|---:|---:|",
    ]
    download_rows = [
        ("One connection, the files one after another (timed inside the process)", baseline, "one-connection"),
        ("`raw_trips` single-run backfill: the step (Dagster's duration)", step, "download-range"),
        (
            "`raw_trips` single-run backfill: whole process",
            values("download-range", lambda m: m.wall_seconds),
            "download-range",
        ),
    ]
    for label, got, scenario in download_rows:
        rng = f"{min(got):.1f}–{max(got):.1f}" if len(got) > 1 else "–"
        peak = _median(values(scenario, lambda m: m.peak_rss_mb))
        lines.append(f"| {label} | {_median(got):.2f} | {rng} | {peak:.0f} | {mb_per_s(_median(got))} |")
    lines += [
        "",
        f"### Both cores: the four assets of {n} months, one single-run backfill against {n} single-month runs",
        "",
        (
            f"The backfill is one process, `--partition-range {months[0]}...{months[-1]}`, from the local folder (no "
            f"rate limit), measured from its first step's start to its last step's end; against it, the step "
            f"durations of {n} single-month runs (`--partition YYYY-MM`) of the same months, summed."
        ),
        "",
        "| Way | Time (s) | Range (s) | Peak memory (MB) | Processes together, PSS (MB) |",
        "|---|---:|---:|---:|---:|",
        row(f"{n} single-month runs: step durations, summed", per_run_singles),
        row(f"{n} single-month runs: whole processes, summed", per_run_single_walls),
        row(
            "One single-run backfill: first step start to last step end",
            values("range-backfill", lambda m: m.work_seconds),
            values("range-backfill", lambda m: m.peak_rss_mb),
            values("range-backfill", lambda m: m.extra.get("tree_pss_mb", float("nan"))),
        ),
        row(
            "One single-run backfill: whole process",
            values("range-backfill", lambda m: m.wall_seconds),
            values("range-backfill", lambda m: m.peak_rss_mb),
            values("range-backfill", lambda m: m.extra.get("tree_pss_mb", float("nan"))),
        ),
        "",
        "Steps of the backfill (median durations): "
        + ", ".join(
            f"`{name}` {_median([m.steps.get(name, float('nan')) for m in by['range-backfill']]):.1f} s"
            for name in by["range-backfill"][0].steps
        )
        + ".",
    ]
    if TIMELINE in pictures:
        lines += [
            "",
            f"![Timeline of a {n}-month single-run backfill: steps and months over time]({pictures[TIMELINE]})",
            "",
            (
                "The timeline of the backfill run whose span is the median (drawn by `benchmarks.run.draw_timeline` "
                "from the run's event log): a grey bar per step, its start to its end; in it, a bar per month, from "
                "the step's log messages that name the month (its end, and the duration the message gives). Bars "
                "that overlap ran at the same time."
            ),
        ]
    if DOWNLOAD_TIMELINE in pictures:
        lines += ["", f"The downloads' backfill the same way: [{DOWNLOAD_TIMELINE}]({pictures[DOWNLOAD_TIMELINE]})."]
    lines += ["", "### Targets (issue 12)", "", "| Target | Measured | Goal | Met |", "|---|---:|---:|:---:|"]
    goals = [
        (f"Downloads: `raw_trips` step of the {n}-month backfill against one connection", "downloads", "×", False),
        (f"Both cores: the {n}-month backfill's span against {n} single runs' steps", "both_cores", "×", False),
        (f"Peak memory of the {n}-month backfill: its largest process", "both_cores_peak_mb", " MB", False),
        (f"Memory of the {n}-month backfill: its processes together (PSS)", "both_cores_tree_mb", " MB", False),
        ("Four assets (whole process) faster than the seed way's load, one month", "month_vs_seed_v2", "×", True),
        ("`postgres_trips` against the bare Arrow → COPY, one month", "postgres_vs_arrow_v2", "×", False),
    ]
    for label, key, unit, at_least in goals:
        target = TARGETS[key]
        goal = f"{'≥' if at_least else '≤'} {target:g}{unit}"
        if key not in ratios:  # the one-month figures come from the first-wave group of the same run
            lines.append(f"| {label} | – (run with `first-wave`) | {goal} | – |")
            continue
        value = ratios[key]
        shown = f"{value:.0f}{unit}" if unit == " MB" else f"{value:.{1 if at_least else 2}f}{unit}"
        met = value >= target if at_least else value <= target
        lines.append(f"| {label} | {shown} | {goal} | {'yes' if met else 'NO'} |")
    if one_month is not None:
        lines += ["", "The one-month figures are the first-wave group's of the same run (its section above)."]
    if plan.runs == 1:
        lines += ["", "Quick run: a few thousand rows per month, one run each; the targets are meant for the full run."]
    lines += [
        "",
        "### Every backfill-speed run",
        "",
        "| Scenario | Run | Wall (s) | Work (s) | Peak (MB) | Processes together, PSS (MB) "
        "| Postgres server peak (MB) | Rows | Steps (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for m in bench.measures:
        if m.scenario not in SPEED_SCENARIOS:
            continue
        steps = ", ".join(f"{k} {v:.2f}" for k, v in m.steps.items())
        tree = m.extra.get("tree_pss_mb")
        lines.append(
            f"| {m.scenario} | {m.run} | {m.wall_seconds:.2f} | {m.work_seconds:.2f} | {m.peak_rss_mb:.0f} "
            f"| {'' if tree is None else f'{tree:.0f}'} | {m.postgres_peak_rss_mb:.0f} | {m.rows:,} | {steps} |"
        )
    lines += [
        "",
        "Work: the one connection's download time; the `raw_trips` step's duration; a four-asset run's first step "
        f"start to last step end. Generating the data (not measured): {bench.speed_generation:.1f} s.",
        SPEED_END,
    ]
    return "\n".join(lines) + "\n"


def draw_speed_timelines(bench: Bench, folder: Path, report: Path) -> dict[str, str]:
    """The backfill's and the downloads' timelines (the run of median span of each) as PNGs in ``folder``; their
    links relative to ``report``."""
    plan, links = bench.plan, {}
    for scenario, name, what in (
        ("range-backfill", TIMELINE, "the four assets"),
        ("download-range", DOWNLOAD_TIMELINE, f"raw_trips at {plan.speed_rate_mb:g} MB/s per connection"),
    ):
        runs = sorted(
            (run_span(records), run) for (s, run), records in bench.speed_events.items() if s == scenario and run > 0
        )
        if not runs:
            continue
        _, run = runs[(len(runs) - 1) // 2]
        title = (
            f"{SERVICE} {plan.speed_months[0]}...{plan.speed_months[-1]}, one single-run backfill of {what} "
            f"(run {run} of {plan.runs}, {plan.speed_rows:,} rows a month)"
        )
        path = draw_timeline(bench.speed_events[scenario, run], folder / name, title)
        links[name] = os.path.relpath(path, report.parent)
    return links


def split_section(text: str, begin: str, end: str) -> tuple[str, str | None]:
    """A report without the section between ``begin`` and ``end`` markers, and that section (None when none)."""
    first, last = text.find(begin), text.find(end)
    if first < 0 or last < first:
        return text, None
    last += len(end)
    return (text[:first] + text[last:]).rstrip("\n") + "\n", text[first:last] + "\n"


def split_report(text: str) -> tuple[str, str | None]:
    """A report's first-wave part and its fhvhv-memory section (None when it has none)."""
    return split_section(text, FHVHV_BEGIN, FHVHV_END)


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
        end_clock, load_end = time.perf_counter(), os.getloadavg()[0]
        speed_started = (time.perf_counter(), dt.datetime.now(dt.UTC), os.getloadavg()[0])
        if "backfill-speed" in args.only:
            bench.run_backfill_speed()
        speed_done = (time.perf_counter(), os.getloadavg()[0])
    finally:
        bench.stop_postgres()
    # The sections not measured now are kept from the existing report, and so is the hand-written end.
    existing = out.read_text() if out.exists() else ""
    existing, by_hand = existing.split(BY_HAND, 1) if BY_HAND in existing else (existing, None)
    existing, kept_speed = split_section(existing, SPEED_BEGIN, SPEED_END)
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
    if "backfill-speed" in args.only:
        # The pictures go into a folder named after the report: docs/benchmarks/ for docs/BENCHMARKS.md.
        pictures = draw_speed_timelines(bench, out.parent / out.stem.lower(), out)
        one_month = summary["ratios"] if summary else None
        speed = render_speed(
            bench, speed_started[1], speed_done[0] - speed_started[0], (speed_started[2], speed_done[1]), pictures,
            one_month,
        )  # fmt: skip
    else:
        speed = kept_speed
    report = first
    for section in (fhvhv, speed):
        if section is not None:
            report = report.rstrip("\n") + "\n\n" + section
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
    if "backfill-speed" in args.only:
        ratios.update(speed_ratios(bench, summary["ratios"] if summary else None))
    for key, value in ratios.items():
        log(f"  {key}: {value:.3f} (target {TARGETS[key]})")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
