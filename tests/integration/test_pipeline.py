"""Ingest and features materialized by a real Dagster instance on a small simulated world."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from ml_assets.deployment.pointer import POINTER, publish_champion
from tests.conftest import featured_world, small_world_env

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    w = featured_world(tmp_path_factory.mktemp("pipeline") / "home")
    yield {"settings": w.settings, "defs": w.defs, "instance": w.instance, "keys": w.keys,
           "result": w.result, "env": w.env}
    w.instance.dispose()


def test_one_run_materializes_every_partition(world) -> None:
    assert world["result"].success
    # single-run backfill: one run, every partition materialized
    assert len(world["instance"].get_runs()) == 1
    materialized = world["instance"].get_materialized_partitions(dg.AssetKey("features"))
    assert materialized == set(world["keys"])


def test_bronze_and_features_hold_the_landed_rows(world) -> None:
    delta = world["defs"].resources["delta"]
    landed = pl.read_csv(str(world["settings"].landing_dir / "sales" / "*.csv"))
    bronze = delta.read("bronze/sales")
    features = delta.read("silver/features")
    assert bronze.height == landed.height > 0
    assert features.height == bronze.height
    assert features.select("date", "store_id", "item_id").is_duplicated().sum() == 0


def test_checks_pass_and_metadata_is_readable(world) -> None:
    evaluations = world["result"].get_asset_check_evaluations()
    assert {e.check_name: e.passed for e in evaluations} == {
        "quarantine_share": True, "freshness": True, "landed": True}
    event = world["instance"].get_latest_materialization_event(dg.AssetKey("features"))
    metadata = event.asset_materialization.metadata
    assert metadata["dagster/row_count"].value > 0
    assert "lag_28" in metadata["null_share_per_feature"].value
    assert metadata["delta_version"].value == 0


def test_rerunning_a_partition_replaces_it(world) -> None:
    delta = world["defs"].resources["delta"]
    before = delta.read("silver/features").sort("date", "store_id", "item_id")
    key = world["keys"][-5]
    result = world["defs"].resolve_job_def("features_job").execute_in_process(
        instance=world["instance"], partition_key=key)
    assert result.success
    after = delta.read("silver/features").sort("date", "store_id", "item_id")
    assert after.equals(before)
    assert delta.version("silver/features") == 1


def _requests(result) -> list:
    return [result] if isinstance(result, dg.RunRequest | dg.SkipReason) else list(result)


def test_landing_sensor_requests_one_run_for_new_files(world) -> None:
    defs = world["defs"]
    sensor = defs.resolve_sensor_def("landing_sensor")
    resources = {"platform": defs.resources["platform"]}
    with dg.DagsterInstance.ephemeral() as fresh, dg.build_sensor_context(
            instance=fresh, definitions=defs, resources=resources) as context:
        first = _requests(sensor(context))
    assert len(first) == 1 and isinstance(first[0], dg.RunRequest)
    assert first[0].job_name == "ingest_job"  # no champion is served yet: ingest only
    tags = first[0].tags
    assert tags["dagster/asset_partition_range_start"] == world["keys"][0]
    assert tags["dagster/asset_partition_range_end"] == world["keys"][-1]
    # In the instance that ingested them, the same files are already seen at the first tick
    # (`make dev` after `make demo` must not re-run the whole history).
    instance = world["instance"]
    with dg.build_sensor_context(instance=instance, definitions=defs,
                                 resources=resources) as context:
        again = sensor(context)
    assert isinstance(again, dg.SkipReason), again
    cursor = context.cursor
    # compact however many files have landed: the newest modification time and its names
    assert cursor is not None and len(cursor) < 1024 and json.loads(cursor)["after"] > 0
    # a corrected re-delivery of one day triggers a run for that day only; with a champion
    # served, that run is the daily cycle through monitoring
    pointer = publish_champion(world["settings"].serving_dir, "demand_forecaster:x", "1", "b:x",
                               reason="promoted")
    assert pointer.model_tag == "demand_forecaster:x"
    day_file = sorted((world["settings"].landing_dir / "sales").glob("*.csv"))[10]
    day_file.write_text(day_file.read_text())
    os.utime(day_file, ns=(day_file.stat().st_atime_ns, day_file.stat().st_mtime_ns + 10**9))
    with dg.build_sensor_context(instance=instance, definitions=defs, cursor=cursor,
                                 resources=resources) as context:
        redelivered = _requests(sensor(context))
    (world["settings"].serving_dir / POINTER).unlink()
    day = day_file.stem.removeprefix("sales_")
    assert [r.tags["dagster/asset_partition_range_start"] for r in redelivered] == [day]
    assert redelivered[0].job_name == "daily_forecast"


def test_asset_graph_snapshot(world) -> None:
    """A refactor that changes keys, deps, groups or checks shows up here as a diff."""
    graph = world["defs"].resolve_asset_graph()
    snapshot = {
        key.to_user_string(): {
            "group": graph.get(key).group_name,
            "deps": sorted(d.to_user_string() for d in graph.get(key).parent_keys),
            "partitioned": graph.get(key).is_partitioned,
            "checks": sorted(c.name for c in graph.get(key).check_keys),
        }
        for key in sorted(graph.get_all_asset_keys())
    }
    expected = json.loads((Path(__file__).parent / "asset_graph.json").read_text())
    assert snapshot == expected


def test_definitions_validate_through_the_workspace(tmp_path: Path) -> None:
    env = {**os.environ, **small_world_env(tmp_path / "home")}
    done = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "All code locations passed validation" in done.stderr + done.stdout
