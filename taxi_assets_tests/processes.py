"""Servers the tests start as subprocesses (emulators, dagster dev, the daemon): a free port for them, and how they
are stopped."""

import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, for a server the test starts next."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def default_interrupts() -> None:
    """``preexec_fn`` of a server the tests stop: SIGINT and SIGQUIT back to their default. A shell starts a
    background job with them ignored, and an ignored signal stays ignored across exec; ``dagster dev`` maps SIGTERM
    to its SIGINT handler, so started under ``./.ci/run &`` it would ignore SIGTERM as well."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)


def stop_process_group(process: subprocess.Popen, timeout: float = 20) -> None:
    """Stop ``process`` and everything it started (code servers, run workers): its whole process group,
    SIGTERM first, then SIGKILL for whatever is left. The process must have been started in a new session."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=timeout)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # children that outlived their parent are still in the group
    process.wait(timeout=10)


@contextlib.contextmanager
def running(cmd: list[str], log: Path, cwd: Path | None = None, env: dict | None = None) -> Iterator[subprocess.Popen]:
    """Run ``cmd`` in its own process group with its output in ``log``; stop the whole group on exit."""
    with open(log, "wb") as out:
        process = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env or dict(os.environ),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=default_interrupts,
        )
        try:
            yield process
        finally:
            stop_process_group(process)
