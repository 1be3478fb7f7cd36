"""The data lake: where raw source files and cleaned parquet live, addressed by keys like
``clean/yellow/yellow_tripdata_2021-01.parquet``.

``Lake`` is the interface the assets use; ``LocalLake`` keeps the lake in a folder (the embedded default) and
``GCSLake`` in a Google Cloud Storage bucket. Every write is staged in a local temporary file and published
under its final key only when complete, so a reader never sees a half-written object and a failed attempt
leaves the previous version in place.
"""

from __future__ import annotations

import os
import tempfile
from abc import abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import ClassVar

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field


class Lake(dg.ConfigurableResource):
    """Interface of the data lake. Subclasses implement storage; assets only call these methods."""

    # Errors a step retry cannot fix: a missing object, or (remote lakes) a request whose own retries ran out.
    permanent_errors: ClassVar[tuple[type[BaseException], ...]] = (FileNotFoundError,)

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


def read_parquet_footer(file, uri: str) -> pq.FileMetaData:
    """The footer of a parquet ``file`` (a path or a binary file object); not parquet: an error naming ``uri``."""
    try:
        return pq.ParquetFile(file).metadata
    except pa.ArrowInvalid as error:
        raise pa.ArrowInvalid(f"{uri}: {error}") from None


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
        final = self._path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        # Stage beside the final file: same filesystem, so os.replace is an atomic rename.
        fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            yield tmp
            os.replace(tmp, final)
        finally:
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
