"""The data lake in a Google Cloud Storage bucket, with the same object layout as the local lake.

Writes are staged in a local temporary file and uploaded only when the writer finishes without error: files
above 8 MiB by a resumable upload in chunks (each chunk retried on transient errors), smaller ones in one
request, every request with a timeout. GCS makes an object visible only when its upload is complete, so a failed
or interrupted upload never leaves a half-written object under the final name: the previous version stays.

The final name changes only on success. The file goes up under a unique staging name (``_uploads/<id>/...``)
with its CRC32C, which GCS checks before it accepts the object; the staging object is then copied server-side
(``rewrite``, no bytes through this process) to the final name with ``if_generation_match`` set to the
generation seen before the upload (0: the name must still be free), and removed. Why not upload to the final
name directly: when the client finds that the object GCS stored does not match its checksum, it deletes that
object; under the final name that would be the new version that had just replaced the good one, leaving
nothing. Under a staging name the delete only removes the staging object. The generation precondition keeps a
write that raced with another writer from silently replacing that writer's object. A staging object left by a
killed process is outside ``raw/`` and ``clean/`` (no sensor or external table sees it); a lifecycle rule
deleting ``_uploads/`` after a day removes it (docs/GCP.md).
"""

from __future__ import annotations

import base64
import mimetypes
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import google_crc32c
import pyarrow.parquet as pq
from dagster_gcp import GCSResource
from google.api_core.exceptions import BadRequest, Forbidden, NotFound, PreconditionFailed, RetryError
from google.cloud import storage
from google.cloud.storage.exceptions import DataCorruption
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
UPLOAD_PREFIX = "_uploads/"  # staging names of uploads in progress: outside raw/ and clean/


class UploadError(RuntimeError):
    """An upload that did not replace the object: a checksum mismatch, or another writer got there first.

    Retryable (a step retry uploads again); the previous version of the object is untouched."""


def file_crc32c(path: Path) -> str:
    """The CRC32C of a file, base64 as GCS reports it (``crc32c`` of an object), read in 1 MiB blocks."""
    checksum = google_crc32c.Checksum()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_MIB), b""):
            checksum.update(block)
    return base64.b64encode(checksum.digest()).decode("ascii")


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
    # A missing bucket or object (404) and no access (403: GCS reports rate limits as 429, retried) are permanent.
    permanent_errors = (FileNotFoundError, NotFound, Forbidden, RetryError)

    bucket: str = Field(description="Bucket that holds the lake (TAXI_GCS_BUCKET); it must exist.")
    prefix: str = Field(
        default="",
        pattern=r"^([A-Za-z0-9._-]+/)*$",
        description="Folder of the bucket that holds the lake ('' = the bucket's root; else ending in '/').",
    )
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
        # DEFAULT_RETRY covers 408/429/5xx and dropped connections. Given explicitly, it also retries the requests
        # that carry a generation precondition: a retry whose first attempt had succeeded gets a 412, which
        # _upload recognizes (the object then holds this very file).
        return DEFAULT_RETRY.with_timeout(self.retry_timeout_s)

    def _name(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def uri(self, key: str) -> str:
        return f"gs://{self.bucket}/{self._name(key)}"

    @contextmanager
    def write(self, key: str) -> Iterator[Path]:
        with tempfile.TemporaryDirectory(prefix="taxi-gcs-") as tmp:
            path = Path(tmp) / Path(key).name  # keeps the suffix, for writers that look at it
            yield path
            self._upload(path, key)

    def _upload(self, path: Path, key: str) -> None:
        """Upload ``path`` to a staging name, then copy it to ``key`` server-side: ``key`` changes only if the
        upload arrived intact and nobody else wrote ``key`` meanwhile (see the module docstring)."""
        chunk = self.chunk_size_mib * _MIB // _CHUNK_UNIT * _CHUNK_UNIT
        bucket, uri, crc = self._bucket(), self.uri(key), file_crc32c(path)
        opts = {"timeout": self.request_timeout_s, "retry": self._retry()}
        try:
            current = bucket.get_blob(self._name(key), **opts)
            generation = current.generation if current is not None else 0  # 0: the name must still be free
            # Above 8 MiB the client uploads in resumable chunks of this size (each retried on its own, so a slow
            # link resumes instead of restarting); smaller files go in one multipart request. Either way GCS
            # checks the CRC32C sent with the upload before it makes the object visible.
            staging_name = f"{self.prefix}{UPLOAD_PREFIX}{uuid.uuid4().hex}/{Path(key).name}"
            staging = bucket.blob(staging_name, chunk_size=chunk)
            try:
                try:
                    staging.upload_from_filename(
                        str(path),
                        content_type=_content_type(key),
                        checksum="crc32c",
                        crc32c_checksum_value=crc,
                        **opts,
                    )
                except DataCorruption:  # the client has deleted the staging object it just wrote; key is untouched
                    raise UploadError(
                        f"{uri}: the uploaded bytes failed the CRC32C check; the object was not replaced"
                    ) from None
                except BadRequest as error:  # e.g. GCS found that the bytes do not match the CRC32C sent with them
                    raise UploadError(
                        f"{uri}: GCS refused the upload ({error.message}); the object was not replaced"
                    ) from None
                final = bucket.blob(self._name(key))
                final.content_type = _content_type(key)
                self._copy(staging, final, generation, crc, uri, opts)
            finally:
                try:
                    staging.delete(**opts)
                except NotFound:
                    pass  # never created (a failed upload), or deleted by the client after a checksum mismatch
        except NotFound:
            raise FileNotFoundError(f"gs://{self.bucket}: bucket not found (check {GCS_BUCKET})") from None

    def _copy(self, staging: storage.Blob, final: storage.Blob, generation: int, crc: str, uri: str, opts) -> None:
        """Server-side copy of ``staging`` (its generation pinned) to ``final`` if ``final`` is still at
        ``generation``; a metadata-only operation within one bucket, looped on the rewrite token for the rest."""
        try:
            token = None
            while True:
                token, _, _ = final.rewrite(staging, token=token, if_generation_match=generation, **opts)
                if token is None:
                    break
        except PreconditionFailed:
            now = final.bucket.get_blob(final.name, **opts)
            if now is not None and now.crc32c == crc and now.size == staging.size:
                return  # a retried request whose first attempt had succeeded: the object is this file
            seen = f"generation {generation}" if generation else "no object"
            raise UploadError(
                f"{uri}: written by another writer during this upload (expected {seen}); not replaced by this one"
            ) from None
        if final.crc32c != crc:  # GCS copies verified bytes; a mismatch here would be a bug worth stopping on
            raise UploadError(f"{uri}: the copy's CRC32C {final.crc32c} differs from the file's {crc}")

    @contextmanager
    def read(self, key: str) -> Iterator[Path]:
        with tempfile.TemporaryDirectory(prefix="taxi-gcs-") as tmp:
            path = Path(tmp) / Path(key).name
            try:
                # Streams to the file (no whole object in memory) and verifies the CRC32C checksum.
                self._bucket().blob(self._name(key)).download_to_filename(
                    str(path), timeout=self.request_timeout_s, retry=self._retry()
                )
            except NotFound:
                raise FileNotFoundError(f"{self.uri(key)}: not in the lake (materialize the upstream first)") from None
            yield path

    def exists(self, key: str) -> bool:
        return self._bucket().blob(self._name(key)).exists(timeout=self.request_timeout_s, retry=self._retry())

    def size(self, key: str) -> int:
        blob = self._bucket().get_blob(self._name(key), timeout=self.request_timeout_s, retry=self._retry())
        if blob is None:
            raise FileNotFoundError(f"{self.uri(key)}: not in the lake")
        return blob.size

    def parquet_footer(self, key: str) -> pq.FileMetaData:
        blob = self._bucket().get_blob(self._name(key), timeout=self.request_timeout_s, retry=self._retry())
        if blob is None:
            raise FileNotFoundError(f"{self.uri(key)}: not in the lake (materialize the upstream first)")
        # Ranged reads of the footer only, pinned to the generation just looked up, instead of a download.
        with blob.open("rb", chunk_size=_CHUNK_UNIT, timeout=self.request_timeout_s, retry=self._retry()) as f:
            return read_parquet_footer(f, self.uri(key))

    def list_objects(self, prefix: str) -> dict[str, int]:
        blobs = self._storage().list_blobs(
            self.bucket, prefix=self._name(prefix), timeout=self.request_timeout_s, retry=self._retry()
        )
        # Skip "folder" placeholders (made by the console) and hidden names, as LocalLake does; keys are relative
        # to the lake's prefix.
        sizes = {
            b.name[len(self.prefix) :]: b.size
            for b in blobs
            if not b.name.endswith("/") and not Path(b.name).name.startswith(".")
        }
        return dict(sorted(sizes.items()))


def _content_type(key: str) -> str:
    if key.endswith(".parquet"):
        return "application/vnd.apache.parquet"
    if key.endswith(".gz"):
        return "application/gzip"  # the raw CSV.gz stays compressed: no Content-Encoding transcoding
    return mimetypes.guess_type(key)[0] or "application/octet-stream"
