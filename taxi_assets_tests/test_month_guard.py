"""The guard that keeps a month from shrinking to nothing or far below the month it replaces, on its own."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from taxi_assets.assets.guards import (
    ALLOW_SHRINK_TAG,
    MIN_SHARE_OF_PREVIOUS,
    MonthShrinkError,
    check_month_size,
    parquet_footer,
    shrink_allowed,
    shrink_refusal,
)
from taxi_assets.resources.lake import LocalLake
from taxi_assets.services import ContractError

SOURCE, TARGET = "raw/green/green_tripdata_2021-01.parquet", "clean/green/green_tripdata_2021-01.parquet"


def test_half_of_the_previous_month_is_the_threshold():
    assert MIN_SHARE_OF_PREVIOUS == 0.5
    assert shrink_refusal(500, 1_000) is None
    assert shrink_refusal(499, 1_000) == "fewer than 50% of the rows of the month it replaces"
    assert shrink_refusal(1_000_000, 1_000) is None  # growing is never refused
    assert shrink_refusal(1, None) is None  # a first load of any rows


@pytest.mark.parametrize("previous", [None, 0, 3_000])
def test_an_empty_month_is_refused_whatever_it_replaces(previous):
    assert shrink_refusal(0, previous) == "an empty month is never what the source means"


def test_the_refusal_names_the_files_both_counts_and_the_tag():
    with pytest.raises(MonthShrinkError) as refused:
        check_month_size(SOURCE, TARGET, "2021-01", 1_200, 1_210, 2_981)
    assert str(refused.value) == (
        f"{SOURCE}: cleaning kept 1,200 rows for 2021-01 (of 1,210 read), and {TARGET} holds 2,981 rows: fewer than "
        "50% of the rows of the month it replaces. Refused: the previous clean file and every store keep their "
        "month. If the source really holds this, materialize the month again with the run tag taxi/allow_shrink=true "
        "(the launchpad's Add tags, or dagster job execute --tags)."
    )
    with pytest.raises(MonthShrinkError, match=f"and {TARGET} is not in the lake yet: an empty month"):
        check_month_size(SOURCE, TARGET, "2021-01", 0, 0, None)


def test_the_tag_lets_the_shrink_through_and_says_why():
    assert check_month_size(SOURCE, TARGET, "2021-01", 0, 0, 2_981, allowed=True) == (
        "an empty month is never what the source means"
    )
    assert check_month_size(SOURCE, TARGET, "2021-01", 2_000, 2_000, 2_981) is None


@pytest.mark.parametrize(
    "tags, allowed",
    [({ALLOW_SHRINK_TAG: "true"}, True), ({ALLOW_SHRINK_TAG: " Yes "}, True), ({ALLOW_SHRINK_TAG: "1"}, True),
     ({ALLOW_SHRINK_TAG: "false"}, False), ({"taxi/refresh": "true"}, False), ({}, False)],
)  # fmt: skip
def test_only_the_allow_shrink_tag_allows_a_shrink(tags, allowed):
    assert ALLOW_SHRINK_TAG == "taxi/allow_shrink"
    assert shrink_allowed(tags) is allowed


def test_a_clean_file_cut_short_or_with_a_garbage_footer_is_a_contract_error_naming_it(tmp_path):
    lake = LocalLake(root=str(tmp_path))
    with lake.write(TARGET) as path:
        pq.write_table(pa.table({"a": list(range(1_000))}), path)
    assert parquet_footer(lake, TARGET).num_rows == 1_000
    path, data = tmp_path / TARGET, (tmp_path / TARGET).read_bytes()
    length = int.from_bytes(data[-8:-4], "little")

    path.write_bytes(data[: -8 - length] + b"\x8f" * length + data[-8:])
    with pytest.raises(ContractError, match=f"^{path}: not a readable parquet file"):
        parquet_footer(lake, TARGET)
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ContractError, match=f"^{path}: Parquet magic bytes not found"):
        parquet_footer(lake, TARGET)
    path.unlink()
    with pytest.raises(FileNotFoundError):  # not about the content: left to the caller's own handling
        parquet_footer(lake, TARGET)
