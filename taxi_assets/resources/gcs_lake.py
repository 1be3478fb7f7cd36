"""The data lake in a Google Cloud Storage bucket, with the same object layout as the local lake.

Writes are staged in a local temporary file and uploaded only when the writer finishes without error: files
above 8 MiB by a resumable upload in chunks (each chunk retried on transient errors), smaller ones in one
request, every request with a timeout. GCS makes an object visible only when its upload is complete, so a failed
or interrupted upload never leaves a half-written object under the final name: the previous version stays.
"""

from __future__ import annotations

import mimetypes
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow.parquet as pq
from dagster_gcp import GCSResource
from google.api_core.exceptions import NotFound, RetryError
from google.cloud import storage
from google.cloud.storage.retry import DEFAULT_RETRY
from pydantic import Field, PrivateAttr

from taxi_assets.resources.gcp_config import (
    api_endpoint_field,
    client_options,
    credentials_field,
    load_credentials,
)
from taxi_assets.resources.lake import Lake, read_parquet_footer
from taxi_assets.settings import GCS_BUCKET, GCS_ENDPOINT

_MIB = 1024 * 1024
_CHUNK_UNIT = 256 * 1024  # GCS requires resumable chunks to be multiples of 256 KiB


class GCSClientResource(GCSResource):
    """dagster-gcp's ``GCSResource`` with an explicit key and an endpoint override.

    The stock resource only takes Application Default Credentials; this one also takes a key through
    ``dg.EnvVar("TAXI_GCP_CREDENTIALS")`` and, for tests, an emulator endpoint (then anonymous credentials).

    Example:
        .. code-block:: python

            gcs = GCSClientResource(
                project=dg.EnvVar("TAXI_GCP_PROJECT"), credentials=dg.EnvVar("TAXI_GCP_CREDENTIALS")
            )
    """

    credentials: str | None = credentials_field()
    api_endpoint: str | None = api_endpoint_field("Storage", GCS_ENDPOINT)

    def get_client(self) -> storage.Client:
        return storage.Client(
            # The library rejects project=None with anonymous credentials; an emulator ignores it anyway.
            project=self.project or ("emulator" if self.api_endpoint else None),
            credentials=load_credentials(self.credentials, self.api_endpoint),
            client_options=client_options(self.api_endpoint),
        )


class GCSLake(Lake):
    """A lake in a GCS bucket: ``raw/...`` and ``clean/{service}/...`` objects, as in ``LocalLake``.

    Example:
        .. code-block:: python

            lake = GCSLake(bucket=dg.EnvVar("TAXI_GCS_BUCKET"), gcs=GCSClientResource(project="my-project"))
            with lake.write("clean/yellow/yellow_tripdata_2021-01.parquet") as path:
                pq.write_table(table, path)  # uploaded when the block ends without error
    """

    # The client retries each request (``retry_timeout_s``); when that runs out, a step retry would only repeat it.
    permanent_errors = (FileNotFoundError, RetryError)

    bucket: str = Field(description="Bucket that holds the lake (TAXI_GCS_BUCKET); it must exist.")
    gcs: GCSResource = Field(description="The GCS client resource (project, credentials, endpoint).")
    chunk_size_mib: int = Field(
        default=16, ge=1, description="Size of each resumable-upload chunk in MiB; each chunk is retried on its own."
    )
    request_timeout_s: float = Field(default=120.0, gt=0, description="Timeout of each HTTP request to GCS.")
    retry_timeout_s: float = Field(
        default=600.0, gt=0, description="How long to keep retrying a request that fails with a transient error."
    )

    _client: storage.Client | None = PrivateAttr(default=None)

    def _storage(self) -> storage.Client:
        # One client per resource instance (per run): credentials are resolved once, connections reused.
        if self._client is None:
            self._client = self.gcs.get_client()
        return self._client

    def _bucket(self) -> storage.Bucket:
        # No request here: reading bucket metadata would need storage.buckets.get, which writers lack.
        return self._storage().bucket(self.bucket)

    def _retry(self):
        # DEFAULT_RETRY covers 408/429/5xx and dropped connections. Uploads are retried without a generation
        # precondition on purpose: retrying a write of the same bytes to the same name is harmless here.
        return DEFAULT_RETRY.with_timeout(self.retry_timeout_s)

    def uri(self, key: str) -> str:
        return f"gs://{self.bucket}/{key}"

    @contextmanager
    def write(self, key: str) -> Iterator[Path]:
        with tempfile.TemporaryDirectory(prefix="taxi-gcs-") as tmp:
            path = Path(tmp) / Path(key).name  # keeps the suffix, for writers that look at it
            yield path
            self._upload(path, key)

    def _upload(self, path: Path, key: str) -> None:
        chunk = self.chunk_size_mib * _MIB // _CHUNK_UNIT * _CHUNK_UNIT
        # Above 8 MiB the client uploads in resumable chunks of this size (each retried on its own, so a slow
        # link resumes instead of restarting); smaller files go in one multipart request. Either way GCS makes
        # the object visible only when the upload completes.
        blob = self._bucket().blob(key, chunk_size=chunk)
        try:
            blob.upload_from_filename(
                str(path),
                content_type=_content_type(key),
                timeout=self.request_timeout_s,
                retry=self._retry(),
            )
        except NotFound:
            raise FileNotFoundError(f"gs://{self.bucket}: bucket not found (check {GCS_BUCKET})") from None

    @contextmanager
    def read(self, key: str) -> Iterator[Path]:
        with tempfile.TemporaryDirectory(prefix="taxi-gcs-") as tmp:
            path = Path(tmp) / Path(key).name
            try:
                # Streams to the file (no whole object in memory) and verifies the CRC32C checksum.
                self._bucket().blob(key).download_to_filename(
                    str(path), timeout=self.request_timeout_s, retry=self._retry()
                )
            except NotFound:
                raise FileNotFoundError(f"{self.uri(key)}: not in the lake (materialize the upstream first)") from None
            yield path

    def exists(self, key: str) -> bool:
        return self._bucket().blob(key).exists(timeout=self.request_timeout_s, retry=self._retry())

    def size(self, key: str) -> int:
        blob = self._bucket().get_blob(key, timeout=self.request_timeout_s, retry=self._retry())
        if blob is None:
            raise FileNotFoundError(f"{self.uri(key)}: not in the lake")
        return blob.size

    def parquet_footer(self, key: str) -> pq.FileMetaData:
        blob = self._bucket().get_blob(key, timeout=self.request_timeout_s, retry=self._retry())
        if blob is None:
            raise FileNotFoundError(f"{self.uri(key)}: not in the lake (materialize the upstream first)")
        # Ranged reads of the footer only, pinned to the generation just looked up, instead of a download.
        with blob.open("rb", chunk_size=_CHUNK_UNIT, timeout=self.request_timeout_s, retry=self._retry()) as f:
            return read_parquet_footer(f, self.uri(key))

    def list_objects(self, prefix: str) -> dict[str, int]:
        blobs = self._storage().list_blobs(
            self.bucket, prefix=prefix, timeout=self.request_timeout_s, retry=self._retry()
        )
        # Skip "folder" placeholders (made by the console) and hidden names, as LocalLake does.
        sizes = {b.name: b.size for b in blobs if not b.name.endswith("/") and not Path(b.name).name.startswith(".")}
        return dict(sorted(sizes.items()))


def _content_type(key: str) -> str:
    if key.endswith(".parquet"):
        return "application/vnd.apache.parquet"
    if key.endswith(".gz"):
        return "application/gzip"  # the raw CSV.gz stays compressed: no Content-Encoding transcoding
    return mimetypes.guess_type(key)[0] or "application/octet-stream"
