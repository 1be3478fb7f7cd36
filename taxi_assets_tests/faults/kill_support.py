"""Killing `dagster asset materialize` in the middle of a step, at a chosen point.

The command runs as a user runs it, in its own process group, through this module: ``python -m
taxi_assets_tests.faults.kill_support --pause-at-log REGEX --marker FILE -- <dagster args>`` runs the real Dagster
command line and, at the first log line matching REGEX (any logger: a store's "COPY into", "INSERT into"), or after
the first call of a named function (``--pause-after module:Class.method``), writes FILE and waits there, inside the
step, until ``FILE.resume`` exists. The test then SIGKILLs the process group, or resumes it. Nothing else changes:
the step's own code ran up to that point.

Also: a dagster.yaml for a test instance with the repository's policies (pools of 1 slot), a source that stalls
half-way through a file, and readers of the instance's runs, events and pool slots.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import importlib
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import yaml

from taxi_assets_tests.conftest import serve

REPO = Path(__file__).resolve().parents[2]
SELECT = "yellow/raw_trips,yellow/clean_trips,yellow/warehouse_trips,yellow/postgres_trips"
PAUSE_LIMIT_SECONDS = 120  # a paused run nobody kills goes on by itself after this


def write_instance_yaml(dagster_home: Path) -> Path:
    """``dagster_home``/dagster.yaml: the repository root's instance (run queue, pools of 1 slot, monitoring), with
    Dagster's default storage in ``dagster_home`` instead of the repository's .dagster_home/."""
    config = yaml.safe_load((REPO / "dagster.yaml").read_text())
    for key in ("storage", "compute_logs", "local_artifact_storage"):
        config.pop(key, None)
    dagster_home.mkdir(parents=True, exist_ok=True)
    path = dagster_home / "dagster.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def materialize_command(
    month: str, *, pause_at_log: str | None = None, pause_after: str | None = None, marker: Path | None = None
) -> list[str]:
    """The command line that materializes the four yellow assets of ``month``, paused where asked."""
    pause = []
    if pause_at_log:
        pause += ["--pause-at-log", pause_at_log]
    if pause_after:
        pause += ["--pause-after", pause_after]
    if marker:
        pause += ["--marker", str(marker)]
    dagster = ["asset", "materialize", "-m", "taxi_assets", "--select", SELECT, "--partition", month]
    return [sys.executable, "-m", "taxi_assets_tests.faults.kill_support", *pause, "--", *dagster]


def start(command: list[str], env: dict, log: Path) -> subprocess.Popen:
    """Start ``command`` in its own process group (so a kill reaches everything it started)."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL ``process`` and its group, as the OOM killer or `kill -9` would, and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def wait_for(condition, timeout: float, what: str, process: subprocess.Popen | None = None, log: Path | None = None):
    """Poll ``condition`` until it returns something true; fail naming ``what`` (and the process's output)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            break
        time.sleep(0.02)
    output = log.read_text()[-3000:] if log is not None and log.exists() else ""
    raise AssertionError(f"{what}: not seen within {timeout}s (exit code {process and process.poll()})\n{output}")


def run_and_time(command: list[str], env: dict, log: Path, timeout: float) -> tuple[int, float]:
    """Run ``command`` to its end (or SIGKILL its group after ``timeout``: a run waiting for a pool slot ignores
    SIGTERM); its exit code (None when killed) and seconds."""
    started = time.monotonic()
    process = start(command, env, log)
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(process)
        code = None
    return code, time.monotonic() - started


def runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    return list(reversed(instance.get_runs()))  # oldest first


def step_events(instance: dg.DagsterInstance, run_id: str, step_key: str) -> list[str]:
    """The types of ``step_key``'s step events in run ``run_id``, in order."""
    records = instance.get_records_for_run(run_id).records
    return [
        r.event_log_entry.dagster_event.event_type_value
        for r in records
        if r.event_log_entry.dagster_event is not None and r.event_log_entry.dagster_event.step_key == step_key
    ]


def claimed_slots(instance: dg.DagsterInstance, pool: str) -> list[tuple[str, str]]:
    """(run id, step key) of each slot of ``pool`` that is claimed now."""
    info = instance.event_log_storage.get_concurrency_info(pool)
    return [(slot.run_id, slot.step_key) for slot in info.claimed_slots]


class StallingSource(http.server.SimpleHTTPRequestHandler):
    """Serves a folder; while ``stall`` is set, sends half of each file and then waits (a stalled download)."""

    stall = threading.Event()
    release = threading.Event()

    def log_message(self, format, *args):
        pass

    def copyfile(self, source, outputfile):
        if not self.stall.is_set():
            return super().copyfile(source, outputfile)
        data = source.read()
        outputfile.write(data[: len(data) // 2])
        outputfile.flush()
        self.release.wait(timeout=PAUSE_LIMIT_SECONDS)


@contextlib.contextmanager
def stalling_source(folder: Path) -> Iterator[type[StallingSource]]:
    """A source serving ``folder`` that stalls half-way while its ``stall`` event is set; yields the handler class
    (its ``url`` attribute is the base URL)."""
    handler = type("Stalling", (StallingSource,), {"stall": threading.Event(), "release": threading.Event()})
    with serve(functools.partial(handler, directory=str(folder))) as url:
        handler.url = url
        try:
            yield handler
        finally:
            handler.release.set()


def _pause(marker: Path | None) -> None:
    """Say so in ``marker``, then wait until ``marker``.resume exists (or the limit): killed here by the test."""
    if marker is None:
        return
    marker.write_text(str(os.getpid()))
    resume = Path(f"{marker}.resume")
    deadline = time.monotonic() + PAUSE_LIMIT_SECONDS
    while not resume.exists() and time.monotonic() < deadline:
        time.sleep(0.02)


def _install_pauses(pause_at_log: str | None, pause_after: str | None, marker: Path | None) -> None:
    paused = threading.Event()

    def pause_once() -> None:
        if not paused.is_set():
            paused.set()
            _pause(marker)

    if pause_at_log:
        pattern = re.compile(pause_at_log)
        handle = logging.Handler.handle

        def handle_then_pause(self, record):
            result = handle(self, record)
            if pattern.search(str(record.getMessage())):
                pause_once()
            return result

        logging.Handler.handle = handle_then_pause
    if pause_after:
        module_name, _, qualname = pause_after.partition(":")
        owner = importlib.import_module(module_name)
        *path, name = qualname.split(".")
        for part in path:
            owner = getattr(owner, part)
        original = getattr(owner, name)

        @functools.wraps(original)
        def call_then_pause(*args, **kwargs):
            result = original(*args, **kwargs)
            pause_once()
            return result

        setattr(owner, name, call_then_pause)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pause-at-log")
    parser.add_argument("--pause-after")
    parser.add_argument("--marker", type=Path)
    parser.add_argument("dagster_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    _install_pauses(args.pause_at_log, args.pause_after, args.marker)
    from dagster._cli import main as dagster_main

    sys.argv = ["dagster", *[a for a in args.dagster_args if a != "--"]]
    return dagster_main()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
