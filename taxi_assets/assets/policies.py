"""Policies shared by the assets."""

import dagster as dg

# Steps that talk to a server (the source, GCS, BigQuery, Postgres) retry after 15 s, then 30 s. Every step
# replaces its month atomically, so a retry never duplicates anything; the source client fails permanent
# errors (404, HTML, corrupt file) past this policy with dg.Failure(allow_retries=False).
NETWORK_RETRY = dg.RetryPolicy(max_retries=2, delay=15, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)
