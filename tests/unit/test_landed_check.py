"""A day with no landed file is named: the run's `landed` check warns with the day, and the
materialization counts the partitions without rows."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from ml_assets.definitions import build_definitions
from ml_assets.simulation.landing import land
from resources.settings import load_settings
from tests.conftest import small_world_env


def test_a_day_without_a_file_fails_landed_naming_it(tmp_path: Path) -> None:
    env = small_world_env(tmp_path / "home")
    settings = load_settings(env)
    files = land(settings)
    missing = files[len(files) // 2]
    missing.unlink()
    day = missing.stem.removeprefix("sales_")
    defs = build_definitions(settings, env["RETAIL_ML_DATASET"])
    keys = defs.resolve_job_def("ingest_job").partitions_def.get_partition_keys()
    with dg.DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def("ingest_job").execute_in_process(
            instance=instance, tags={"dagster/asset_partition_range_start": keys[0],
                                     "dagster/asset_partition_range_end": keys[-1]})
        assert result.success  # a warning, not a failure: history may have closed days
        landed = [e for e in result.get_asset_check_evaluations() if e.check_name == "landed"]
        assert [e.passed for e in landed] == [False]
        assert landed[0].severity == dg.AssetCheckSeverity.WARN
        assert f"1 of {len(keys)} partitions" in landed[0].description
        assert landed[0].metadata["missing"].value == day
        observed = [e.asset_observation_data.asset_observation for e in result.all_events
                    if e.is_asset_observation]
        assert [(o.partition, o.metadata["row_count"].value) for o in observed] == [(day, 0)]
        (sales,) = result.asset_materializations_for_node("sales")[-1:]
        assert sales.metadata["partitions_without_rows"].value == 1
        assert sales.metadata["rows_per_partition_min"].value == 0


def test_a_short_range_observes_each_partitions_own_row_count(tmp_path: Path) -> None:
    env = small_world_env(tmp_path / "home")
    settings = load_settings(env)
    land(settings)
    defs = build_definitions(settings, env["RETAIL_ML_DATASET"])
    keys = defs.resolve_job_def("ingest_job").partitions_def.get_partition_keys()[-5:]
    with dg.DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def("ingest_job").execute_in_process(
            instance=instance, tags={"dagster/asset_partition_range_start": keys[0],
                                     "dagster/asset_partition_range_end": keys[-1]})
    landed = {p.stem.removeprefix("sales_"): sum(1 for _ in p.open()) - 1
              for p in (settings.landing_dir / "sales").glob("sales_*.csv")}
    observed = {o.partition: o.metadata["row_count"].value for o in (
        e.asset_observation_data.asset_observation for e in result.all_events
        if e.is_asset_observation)}
    assert observed == {k: landed[k] for k in keys} and min(observed.values()) > 0
