"""The worker processes a range run's ``clean_trips`` step cleans months in. Plain (no Dagster): a worker imports
only this module and what unpickling its task needs (``taxi_assets.cleaning``, pyarrow), so it starts in about
half a second and holds about 75 MB before its first month.

Workers are spawned, not forked: forking a process that runs threads (Dagster's, the step's) is unsafe. A worker
ends with the process that started it, whatever ends that one (even SIGKILL), so a killed run leaves no worker
behind writing a month nobody will publish.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

# What one worker may hold at its peak: measured 255-265 MB (RSS) cleaning a 1.37M-row yellow month of the TLC
# (75 MB of imports, the rest Arrow's read and write buffers); rounded up.
WORKER_BYTES = 300 << 20


def available_memory() -> int | None:
    """Bytes this process may still use: the system's MemAvailable, or less when a cgroup (a container) limits it;
    ``None`` when neither can be read."""
    found = []
    try:
        meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        found.append(int(meminfo["MemAvailable"].split()[0]) * 1024)
    except (OSError, KeyError, ValueError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            found.append(int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return min(found) if found else None


def affordable_processes(wanted: int) -> int:
    """``wanted`` workers, or as many as the available memory holds (at least 1: then the step cleans alone)."""
    available = available_memory()
    return wanted if available is None else max(1, min(wanted, available // WORKER_BYTES))


def _end_with_parent() -> None:
    """Exit as soon as the parent process ends (its sentinel becomes readable), from a daemon thread."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        parent.join()
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def clean_pool(processes: int) -> ProcessPoolExecutor:
    """A pool of ``processes`` spawned workers, each ending with this process."""
    return ProcessPoolExecutor(
        max_workers=processes, mp_context=multiprocessing.get_context("spawn"), initializer=_end_with_parent
    )
