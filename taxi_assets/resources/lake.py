"""The data lake: where raw source files and cleaned parquet live, addressed by keys like
``clean/yellow/yellow_tripdata_2021-01.parquet``.

``Lake`` is the interface the assets use; ``LocalLake`` keeps the lake in a folder (the embedded default) and
``GCSLake`` in a Google Cloud Storage bucket. Every write is staged in a local temporary file and published
under its final key only when complete, so a reader never sees a half-written object and a failed attempt
leaves the previous version in place. A full disk while writing is a ``LakeFullError`` naming the file and the free
space, never retried.
"""

from __future__ import annotations

import errno
import glob
import os
import shutil
import socket
import tempfile
import time
from abc import abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import ClassVar

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field


class LakeFullError(OSError):
    """The filesystem that holds the lake is full (or the user's quota is used up): a retry would fail the same."""


# Errors of a full filesystem: no space, or no quota left.
_OUT_OF_SPACE = {errno.ENOSPC, errno.EDQUOT}
# A staging file whose writer cannot be checked (another host, an older name) is a leftover after this long: no run
# lasts longer (run monitoring's max_runtime_seconds in dagster.yaml is 6 hours).
STALE_STAGING_SECONDS = 6 * 3600


def process_start(pid: int) -> str | None:
    """When process ``pid`` of this host started (clock ticks since boot, from /proc), so a reused pid is told
    apart; ``None`` when no such process runs (gone, or a zombie that only waits to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the name in parentheses may hold spaces
    state, start = fields[0], fields[19]  # fields 3 and 22 of proc(5)
    return None if state in ("Z", "X") else start


def can_see_processes() -> bool:
    """Whether this host shows its processes in /proc (Linux): elsewhere no writer is ever judged gone."""
    return Path("/proc/self/stat").is_file()


def is_out_of_space(error: BaseException) -> bool:
    """Whether ``error`` (or an error it was raised from) says the filesystem is full. Arrow's errors carry the
    text, not the errno."""
    seen: BaseException | None = error
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, OSError) and (
            seen.errno in _OUT_OF_SPACE or any(os.strerror(code) in str(seen) for code in _OUT_OF_SPACE)
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class Lake(dg.ConfigurableResource):
    """Interface of the data lake. Subclasses implement storage; assets only call these methods."""

    # Errors a step retry cannot fix: a missing object, a full disk, or (remote lakes) a request whose own retries
    # ran out.
    permanent_errors: ClassVar[tuple[type[BaseException], ...]] = (FileNotFoundError, LakeFullError)

    @abstractmethod
    def uri(self, key: str) -> str:
        """Where ``key`` lives, as a URI a reader understands (a local path or ``gs://bucket/key``)."""

    @abstractmethod
    def write(self, key: str) -> AbstractContextManager[Path]:
        """A local path to write ``key``'s new content to; published atomically when the block succeeds."""

    @abstractmethod
    def read(self, key: str) -> AbstractContextManager[Path]:
        """A local file holding ``key``'s content (downloaded first if the lake is remote)."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def size(self, key: str) -> int: ...

    @abstractmethod
    def list_objects(self, prefix: str) -> dict[str, int]:
        """The keys under ``prefix`` with their sizes in bytes, in key order (one listing, no request per key)."""

    def parquet_footer(self, key: str) -> pq.FileMetaData:
        """The footer of the parquet object ``key`` (rows, schema); a file that is not parquet is an error naming
        it. Remote lakes override this to read the footer only, instead of downloading the object."""
        with self.read(key) as path:
            return read_parquet_footer(str(path), self.uri(key))

    def parquet_row_count(self, key: str) -> int:
        return self.parquet_footer(key).num_rows

    def parquet_schema(self, key: str) -> pa.Schema:
        return self.parquet_footer(key).schema.to_arrow_schema()


def _staging_prefix(final: Path) -> str:
    return f".{final.name}."


def _writer_id() -> str:
    """This process, as staging file names record it: ``<host>.<pid>.<start>.``."""
    pid = os.getpid()
    return f"{socket.gethostname()}.{pid}.{process_start(pid) or 0}."


def _writer_is_gone(staging: Path, final: Path) -> bool:
    """Whether the process that wrote ``staging`` (a staging file of ``final``) no longer runs: judged by its
    pid when it ran on this host, else (another host, or a name without a writer) by the file's age."""
    middle = staging.name.removeprefix(_staging_prefix(final)).removesuffix(".partial")
    host, pid, start, _random = ([None] * 4 + middle.rsplit(".", 3))[-4:]
    if host == socket.gethostname() and pid and pid.isdigit() and can_see_processes():
        return process_start(int(pid)) != start
    try:
        return time.time() - staging.stat().st_mtime > STALE_STAGING_SECONDS
    except FileNotFoundError:  # removed meanwhile
        return False


def remove_dead_staging_files(final: Path) -> list[Path]:
    """Remove the staging files of ``final`` whose writers are gone (killed mid-write); a live writer's stays."""
    removed = []
    for staging in final.parent.glob(f"{glob.escape(_staging_prefix(final))}*.partial"):
        if _writer_is_gone(staging, final):
            staging.unlink(missing_ok=True)
            removed.append(staging)
    return removed


def _full_message(final: Path, staging: Path | None) -> str:
    """What a full disk tells the user: the file, what was written of it, the space left there."""
    written = staging.stat().st_size if staging is not None and staging.exists() else 0
    try:
        free = f"{shutil.disk_usage(final.parent).free:,} bytes free"
    except OSError:
        free = "free space unknown"
    return (
        f"{final}: no space left on the lake's filesystem after writing {written:,} bytes of this file "
        f"({free} in {final.parent}); any previous version of the file is kept. Free space there (or give the lake "
        "a larger disk) and materialize the month again."
    )


def read_parquet_footer(file, uri: str) -> pq.FileMetaData:
    """The footer of a parquet ``file`` (a path or a binary file object); not parquet, or a footer cut short or
    overwritten: ``ArrowInvalid`` naming ``uri``."""
    try:
        return pq.ParquetFile(file).metadata
    except pa.ArrowInvalid as error:  # no magic bytes
        raise pa.ArrowInvalid(f"{uri}: {error}") from None
    except OSError as error:
        # A footer pyarrow cannot parse ("Couldn't deserialize thrift") is a bare OSError; its subclasses (a
        # connection reset, a timeout, a missing file) are not about the file's content.
        if type(error) is not OSError:
            raise
        raise pa.ArrowInvalid(f"{uri}: not a readable parquet file ({error})") from None


class LocalLake(Lake):
    """A lake in a local folder.

    Example:
        .. code-block:: python

            lake = LocalLake(root="data/lake")
            with lake.write("clean/yellow/yellow_tripdata_2021-01.parquet") as path:
                pq.write_table(table, path)
    """

    root: str = Field(description="Folder that holds the lake (created when missing).")

    def _path(self, key: str) -> Path:
        return Path(self.root).resolve() / key

    def uri(self, key: str) -> str:
        return str(self._path(key))

    @contextmanager
    def write(self, key: str) -> Iterator[Path]:
        """A staging file beside ``key``'s file, renamed over it when the block succeeds. Staging files that
        earlier writers of ``key`` left behind (a killed run) are removed first; this one is removed on any
        error, an interrupt included. A full disk raises ``LakeFullError``."""
        final = self._path(key)
        tmp: Path | None = None
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            remove_dead_staging_files(final)
            # Stage beside the final file: same filesystem, so os.replace is an atomic rename. The name says who
            # writes it (host, pid, process start), so a later writer can tell a dead writer's file from a live one.
            fd, tmp_name = tempfile.mkstemp(
                prefix=_staging_prefix(final) + _writer_id(), suffix=".partial", dir=final.parent
            )
            os.close(fd)
            tmp = Path(tmp_name)
            yield tmp
            os.replace(tmp, final)
        except OSError as error:
            if is_out_of_space(error):
                raise LakeFullError(_full_message(final, tmp)) from error
            raise
        finally:
            if tmp is not None:
                tmp.unlink(missing_ok=True)

    @contextmanager
    def read(self, key: str) -> Iterator[Path]:
        path = self._path(key)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not in the lake (materialize the upstream asset first)")
        yield path

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        return self._path(key).stat().st_size

    def list_objects(self, prefix: str) -> dict[str, int]:
        base = Path(self.root).resolve()
        start = self._path(prefix)
        folder = start if prefix.endswith("/") else start.parent
        if not folder.is_dir():
            return {}
        files = {p.relative_to(base).as_posix(): p for p in folder.rglob("*") if p.is_file()}
        # Staging files of writes in progress start with a dot: never listed.
        keys = sorted(k for k in files if k.startswith(prefix) and not Path(k).name.startswith("."))
        return {k: files[k].stat().st_size for k in keys}
