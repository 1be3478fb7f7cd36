"""Policies shared by the assets: retries for steps that talk to a server, and which errors skip them."""

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

# Steps that talk to a server (the source, GCS, BigQuery, Postgres) retry after 15 s, then 30 s. Every step
# replaces its month atomically, so a retry never duplicates anything.
NETWORK_RETRY = dg.RetryPolicy(max_retries=2, delay=15, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


@contextmanager
def fail_fast_on(*permanent: type[BaseException], about: str | None = None) -> Iterator[None]:
    """Errors of the ``permanent`` types (a 404, a corrupt file, rows that break a constraint) fail the step at
    once, past ``NETWORK_RETRY``: retrying cannot fix them. The message names ``about`` (the file or URL) when
    the error does not already. Any other error, or one that says it is ``transient`` (a 5xx after the
    client's own retries), goes to the retry policy."""
    try:
        yield
    except permanent as error:
        if getattr(error, "transient", False):
            raise
        message = str(error) if about is None or about in str(error) else f"{about}: {error}"
        raise dg.Failure(description=message, allow_retries=False) from error
