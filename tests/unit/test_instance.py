"""The laptop instance: deploy/dagster.local.yaml becomes DAGSTER_HOME/dagster.yaml, and a real
Dagster instance built from it queues runs the way the monitoring loop relies on."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from dagster._core.run_coordinator import QueuedRunCoordinator

from ml_assets.instance import LOCAL_CONFIG, prepare_dagster_home
from resources.settings import load_settings


def test_a_new_home_gets_the_local_config_and_a_real_instance_reads_it(tmp_path: Path,
                                                                        monkeypatch) -> None:
    monkeypatch.setenv("DAGSTER_HOME", "unset-below")  # so that monkeypatch restores it
    monkeypatch.delenv("DAGSTER_HOME")
    home = prepare_dagster_home(load_settings({"RETAIL_ML_HOME": str(tmp_path)}))
    assert home == tmp_path / "dagster"
    assert (home / "dagster.yaml").read_text() == LOCAL_CONFIG.read_text()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        coordinator = instance.run_coordinator
        assert isinstance(coordinator, QueuedRunCoordinator)
        assert coordinator.dequeue_interval_seconds == 1
        concurrency = instance.get_concurrency_config()  # what the daemon dequeues by
        assert concurrency.run_queue_config is not None
        assert concurrency.run_queue_config.max_concurrent_runs == 2
        limits = concurrency.run_queue_config.tag_concurrency_limits
        assert {"key": "dagster/job_name", "value": "retrain", "limit": 1} in limits
        assert not instance.telemetry_enabled
        # the writers of one table (their pool) run one step at a time across runs
        assert concurrency.pool_config.default_pool_limit == 1


def test_the_writers_of_a_table_share_a_pool(tmp_path: Path) -> None:
    from ml_assets.definitions import build_definitions

    defs = build_definitions(load_settings({"RETAIL_ML_HOME": str(tmp_path)}), "simulated")
    pools = {key: defs.get_assets_def(key).op.pool for key in ("sales", "features")}
    assert pools == {"sales": "delta/bronze/sales", "features": "delta/silver/features"}


def test_a_users_own_dagster_yaml_is_kept(tmp_path: Path, monkeypatch) -> None:
    own = tmp_path / "mine"
    own.mkdir()
    (own / "dagster.yaml").write_text("run_queue:\n  max_concurrent_runs: 7\n")
    monkeypatch.setenv("DAGSTER_HOME", str(own))
    assert prepare_dagster_home(load_settings({"RETAIL_ML_HOME": str(tmp_path)})) == own
    assert (own / "dagster.yaml").read_text() == "run_queue:\n  max_concurrent_runs: 7\n"


def test_a_ranged_run_records_one_planned_event_per_asset(tmp_path: Path, monkeypatch) -> None:
    """retail-ml's instance setup asks Dagster for one "planned" event per asset of a run over
    a partition range; by default it writes one per partition, before the first step runs."""
    from ml_assets.instance import PLANNED_SUBSET

    monkeypatch.delenv(PLANNED_SUBSET, raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    prepare_dagster_home(load_settings({"RETAIL_ML_HOME": str(tmp_path)}))
    days = dg.DailyPartitionsDefinition(start_date="2026-01-01", end_date="2026-03-02")

    @dg.asset(partitions_def=days, backfill_policy=dg.BackfillPolicy.single_run())
    def daily(context) -> None:  # noqa: ANN001 (a string annotation, which Dagster rejects)
        context.log.info(f"{len(context.partition_keys)} days")

    keys = days.get_partition_keys()
    with dg.DagsterInstance.get() as instance:
        result = dg.materialize([daily], instance=instance, tags={
            "dagster/asset_partition_range_start": keys[0],
            "dagster/asset_partition_range_end": keys[-1]})
        kinds = [e.dagster_event.event_type_value for e in instance.all_logs(result.run_id)
                 if e.dagster_event is not None]
    assert kinds.count("ASSET_MATERIALIZATION") == len(keys) == 60
    assert kinds.count("ASSET_MATERIALIZATION_PLANNED") == 1
