"""A full disk under the lake: the step fails at once with an error naming the file and the space left, and the
lake keeps its good months and no staging file."""

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from taxi_assets.definitions import build_defs
from taxi_assets.services import SERVICES
from taxi_assets.targets import load_target
from taxi_assets_tests.faults.kill_support import step_events

FS_BYTES = 2 * 1024 * 1024
LEFT_FREE = 16 * 1024  # less than a month's clean parquet needs
RAW, CLEAN = dg.AssetKey(["yellow", "raw_trips"]), dg.AssetKey(["yellow", "clean_trips"])


@pytest.fixture
def small_lake(local_env) -> Iterator[Path]:
    """The lake folder on its own 2 MB filesystem (tmpfs; mounting needs root): skipped where it cannot be mounted."""
    lake = local_env / "lake"
    lake.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={FS_BYTES}", "tmpfs", str(lake)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs for the lake here (needs root): {mounted.stderr.strip()}")
    try:
        yield lake
    finally:
        subprocess.run(["umount", "-l", str(lake)], check=True)


def _materialize(defs: dg.Definitions, instance, month: str, asset: dg.AssetKey) -> dg.ExecuteInProcessResult:
    job = defs.resolve_job_def("yellow_trips_job")
    return job.execute_in_process(partition_key=month, instance=instance, asset_selection=[asset], raise_on_error=False)


def _fill(folder: Path, leave: int) -> None:
    """Fill ``folder``'s filesystem up to ``leave`` bytes free."""
    with open(folder / "filler", "wb") as out:
        out.write(b"\0" * (shutil.disk_usage(folder).free - leave))


@pytest.mark.fault_case("Lake disk full")
def test_a_full_lake_fails_the_step_at_once_naming_the_file_and_keeps_the_good_month(small_lake, tmp_path):
    defs = build_defs(load_target())
    good = small_lake / SERVICES["yellow"].clean_key("2021-01")
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        for asset in (RAW, CLEAN):
            assert _materialize(defs, instance, "2021-01", asset).success
        assert _materialize(defs, instance, "2021-02", RAW).success
        good_bytes = good.read_bytes()
        _fill(small_lake, LEFT_FREE)

        result = _materialize(defs, instance, "2021-02", CLEAN)

        assert not result.success
        (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
        message = failure.step_failure_data.error.message
        target = small_lake / SERVICES["yellow"].clean_key("2021-02")
        assert f"{target}: no space left on the lake's filesystem after writing " in message
        assert f"bytes free in {target.parent})" in message
        # One attempt: a full disk is not retried.
        assert step_events(instance, result.run_id, "yellow__clean_trips").count("STEP_START") == 1
        assert "STEP_UP_FOR_RETRY" not in step_events(instance, result.run_id, "yellow__clean_trips")
    assert good.read_bytes() == good_bytes and pq.ParquetFile(good).metadata.num_rows > 0
    assert not target.exists()
    assert sorted(p.name for p in small_lake.rglob(".*")) == []
