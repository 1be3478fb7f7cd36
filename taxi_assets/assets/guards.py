"""Guards that keep a good month from being replaced by a bad one, as plain functions (no Dagster context).

A source file that holds only its header, or whose every pickup lies outside its month, cleans "successfully"
into 0 rows; published, it would replace a good month in the lake and then in every store. ``check_month_size``
refuses such a month before its clean file is published, unless the run is tagged ``taxi/allow_shrink=true``.
``parquet_footer`` tells a clean file in the lake that is cut short or overwritten (permanent, named) from a read
that failed on the way (left to the retries), before a store is touched.
"""

from __future__ import annotations

from collections.abc import Mapping

import pyarrow as pa
import pyarrow.parquet as pq

from taxi_assets.resources.lake import Lake
from taxi_assets.services import ContractError

# A run tagged so may publish a month that shrinks to nothing or below MIN_SHARE_OF_PREVIOUS of the month it replaces.
ALLOW_SHRINK_TAG = "taxi/allow_shrink"
# A month may not shrink below this share of the rows the lake's current clean file holds for it. A re-issued month
# corrects some trips (or only their physical types), and the mirror and the TLC hold the same trips: the count
# moves by little. A file cut short, another month's file, or a source gone wrong loses most of a month. Half lies far
# from both: no correction comes near it, and the losses that matter (to nothing, to a fraction) fall below it.
MIN_SHARE_OF_PREVIOUS = 0.5
_TRUE = ("true", "1", "yes")


class MonthShrinkError(ValueError):
    """A month would shrink to nothing, or far below the month it replaces; retrying cannot change that."""


def shrink_allowed(tags: Mapping[str, str]) -> bool:
    """Whether the run's ``tags`` allow a month to shrink (``taxi/allow_shrink=true``)."""
    return tags.get(ALLOW_SHRINK_TAG, "").strip().lower() in _TRUE


def shrink_refusal(rows: int, previous_rows: int | None) -> str | None:
    """Why a month of ``rows`` may not replace one of ``previous_rows`` (``None``: no month before), or ``None``."""
    if rows == 0:
        return "an empty month is never what the source means"  # also a first load: nothing to replace
    if previous_rows is not None and rows < MIN_SHARE_OF_PREVIOUS * previous_rows:
        return f"fewer than {MIN_SHARE_OF_PREVIOUS:.0%} of the rows of the month it replaces"
    return None


def check_month_size(
    source: str, target: str, month: str, rows: int, rows_read: int, previous_rows: int | None, *, allowed: bool = False
) -> str | None:
    """Refuse (``MonthShrinkError``) a ``month`` cleaned from the file ``source`` into ``rows`` rows (of ``rows_read``)
    that would replace ``target``, holding ``previous_rows`` (``None``: not there), and shrink the month to nothing or
    below ``MIN_SHARE_OF_PREVIOUS``. With ``allowed`` it returns the reason instead (for a warning); ``None``: no
    shrink."""
    reason = shrink_refusal(rows, previous_rows)
    if reason is None or allowed:
        return reason
    held = "is not in the lake yet" if previous_rows is None else f"holds {previous_rows:,} rows"
    raise MonthShrinkError(
        f"{source}: cleaning kept {rows:,} rows for {month} (of {rows_read:,} read), and {target} {held}: {reason}. "
        "Refused: the previous clean file and every store keep their month. If the source really holds this, "
        f"materialize the month again with the run tag {ALLOW_SHRINK_TAG}=true (the launchpad's Add tags, or "
        "dagster job execute --tags)."
    )


def parquet_footer(lake: Lake, key: str) -> pq.FileMetaData:
    """The footer of the lake's parquet ``key``; one cut short or overwritten is a ``ContractError`` naming it
    (permanent: the file, not the read, is at fault)."""
    try:
        return lake.parquet_footer(key)
    except pa.ArrowInvalid as error:  # the lake names the file
        raise ContractError(str(error)) from error
