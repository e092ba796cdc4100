"""Training → evaluation → promotion gate → champion on a small world: a real Dagster instance,
Delta on a temporary folder, MLflow on sqlite. The gate must pass a good first model, block a
worse challenger, and move the aliases only when it passes."""

from __future__ import annotations

import base64
import datetime as dt
import html
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import mlflow
import polars as pl
import pytest

from ml_assets.definitions import build_definitions
from ml_assets.deployment.pointer import read_champion
from ml_assets.simulation.landing import land, landed_days
from ml_assets.training.registry import alias_version, load_version, registry_client
from ml_assets.training.reproduce import reproduce
from resources.settings import load_settings
from resources.tracking import REGISTERED_MODEL
from tests.conftest import TODAY, FeaturedWorld, small_world_env

ROOT = Path(__file__).resolve().parents[2]
SHIFT_DAY = TODAY - dt.timedelta(days=42)
PATH = ["training_set", "demand_model", "model_evaluation", "champion"]


def _retrain(world, trigger: str, max_rounds: int = 600) -> dg.ExecuteInProcessResult:
    result = dg.materialize(
        [world.defs.get_assets_def(a) for a in PATH], resources=world.defs.resources,
        instance=world.instance, tags={"retail_ml/trigger": trigger}, raise_on_error=False,
        # one objective: which one a 20-series world's validation window prefers is noise
        # (tests/unit covers the choice); the gate is what this story tests
        run_config={"ops": {"demand_model": {"config": {"max_rounds": max_rounds,
                                                        "objectives": ["tweedie"]}}}})
    mlflow.end_run()
    return result


def _gate(result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
    (gate,) = [c for c in result.get_asset_check_evaluations()
               if c.check_name == "promotion_gate"]
    return gate


def _aliases(client: mlflow.MlflowClient) -> dict[str, str | None]:
    return {a: alias_version(client, a) for a in ("challenger", "champion", "previous")}


def _features(world: FeaturedWorld, start: str, end: str) -> None:
    job = world.defs.resolve_job_def("features_job")
    done = job.execute_in_process(instance=world.instance, tags={
        "dagster/asset_partition_range_start": start,
        "dagster/asset_partition_range_end": end})
    assert done.success


def _world(home: Path, instance: dg.DagsterInstance, today: dt.date) -> FeaturedWorld:
    """The small world as seen on `today`: its 180-day history starts on the same day
    whatever `today` is, and days after the history are landed separately."""
    env = small_world_env(home, offset_days=(today - SHIFT_DAY).days,
                          RETAIL_ML_TODAY=today.isoformat())
    settings = load_settings(env)
    defs = build_definitions(settings, env["RETAIL_ML_DATASET"])
    return FeaturedWorld(settings, defs, instance, [], None, env)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory):
    """Four steps in one world, with the registry's aliases recorded after each: a first
    model, a worse challenger, `champion` alone, and, six weeks later, a challenger trained
    after the world's demand shifted up by half, which the stale champion has not seen."""
    home = tmp_path_factory.mktemp("promotion") / "home"
    instance = dg.DagsterInstance.ephemeral()
    world = _world(home, instance, SHIFT_DAY)
    land(world.settings)
    _features(world, *[d.isoformat() for d in landed_days(world.settings)[::179]])
    client = registry_client(world.settings.mlflow_tracking_uri)
    steps: dict[str, tuple[dg.ExecuteInProcessResult, dict]] = {}
    steps["first"] = _retrain(world, "first"), _aliases(client)
    steps["worse"] = _retrain(world, "worse", max_rounds=2), _aliases(client)
    alone = dg.materialize([world.defs.get_assets_def("champion")],
                           resources=world.defs.resources, instance=world.instance,
                           raise_on_error=False)
    steps["champion_alone"] = alone, _aliases(client)

    later = _world(home, instance, TODAY)
    new_days = land(later.settings, until=TODAY - dt.timedelta(days=1),
                    scenario=("level_shift", 1.5))
    _features(later, *[p.stem.removeprefix("sales_") for p in (new_days[0], new_days[-1])])
    steps["after_shift"] = _retrain(later, "after_shift"), _aliases(client)
    yield later, client, steps
    instance.dispose()


def test_first_model_passes_the_gate_and_becomes_champion(story) -> None:
    _, client, steps = story
    first, aliases = steps["first"]
    assert first.success
    gate = _gate(first)
    assert gate.passed and "no champion yet" in gate.description
    assert aliases == {"challenger": "1", "champion": "1", "previous": None}
    tags = client.get_model_version(REGISTERED_MODEL, "1").tags
    assert tags["promotion_trigger"] == "first" and tags["gate"] == "passed"
    assert float(tags["backtest_wape"]) < float(tags["seasonal_naive_wape"])
    assert tags["promoted_by_run"] == first.run_id


def test_report_has_every_scope_and_the_plots(story) -> None:
    world, client, steps = story
    first, _ = steps["first"]
    report = world.defs.resources["delta"].read("gold/model_evaluation")
    assert set(report.get_column("scope")) == {"overall", "horizon_bucket", "category", "store"}
    first_report = report.filter(pl.col("model_version") == "1")
    # the simulated world's noise floor (and the floor as of each origin) are scored as more
    # forecasters
    assert set(first_report.get_column("forecaster")) == {
        "challenger", "seasonal_naive", "moving_average_28", "oracle", "origin_oracle"}
    overall = first_report.filter(pl.col("scope") == "overall")
    metrics = overall.select("wape", "mae", "rmse", "bias", "mase", "rmspe")
    assert metrics.null_count().sum_horizontal().item() == 0
    assert not any(metrics.select(pl.all().is_nan().any()).row(0))
    (mat,) = first.asset_materializations_for_node("model_evaluation")
    # the report: one page per version under RETAIL_ML_HOME, linked from the materialization
    report = Path(mat.metadata["report"].value)
    assert report == (world.settings.home / "reports" / "model_evaluation" / "v1.html").resolve()
    assert mat.metadata["report_url"].value == report.resolve().as_uri()
    page = report.read_text(encoding="utf-8")
    for section in ("overall", "horizon_bucket", "store", "category", "intervals", "plots"):
        assert f'<h2 id="{section}">' in page
    assert html.escape(mat.metadata["gate"].value, quote=False) in page  # the gate, in full
    encoded = page.split("data:image/png;base64,")[1].split('"')[0]
    assert base64.b64decode(encoded).startswith(b"\x89PNG")
    run_id = client.get_model_version(REGISTERED_MODEL, "1").run_id
    artifacts = {Path(a.path).name for a in client.list_artifacts(run_id, "evaluation")}
    assert {"forecast_vs_actual.png", "error_by_horizon.png", "feature_importance.png",
            "report.html"} <= artifacts
    # every backtest metric, overall and by horizon bucket, for every forecaster scored
    logged = client.get_run(run_id).data.metrics
    for forecaster in ("challenger", "seasonal_naive", "moving_average_28", "oracle",
                       "origin_oracle"):
        for metric in ("wape", "mae", "rmse", "bias", "mase", "rmspe"):
            for bucket in ("", "_h1-7", "_h8-14", "_h15-28"):
                assert f"backtest_{metric}_{forecaster}{bucket}" in logged
    assert logged["backtest_wape_challenger"] == pytest.approx(mat.metadata[
        "wape_challenger"].value, abs=1e-4)
    # the backtest, the long step, says where it is: one line per origin
    progress = [e.user_message for e in world.instance.all_logs(first.run_id)
                if e.user_message.startswith("progress: ")]
    assert [m.split(" (")[0] for m in progress] == [
        f"progress: backtest origin {i}/3" for i in (1, 2, 3)]


def test_report_reads_the_challenger_against_the_simulated_oracle(story) -> None:
    _, _, steps = story
    (mat,) = steps["first"][0].asset_materializations_for_node("model_evaluation")
    meta = {k: v.value for k, v in mat.metadata.items()}
    assert meta["wape_ratio_challenger_oracle"] == pytest.approx(
        meta["wape_challenger"] / meta["wape_oracle"], abs=1e-3)
    # the true expected demand is the best forecast there is, up to noise
    assert meta["wape_oracle"] < meta["wape_challenger"]
    assert set(meta["wape_ratio_challenger_oracle_by_horizon_bucket"]) == {"1-7", "8-14",
                                                                          "15-28"}
    assert "| oracle |" in meta["metrics_overall"]
    # the oracle as of the origin knows less (this world's popularity does not wander, so it
    # knows as much here)
    assert meta["wape_oracle"] <= meta["wape_origin_oracle"] < meta["wape_challenger"]
    assert meta["wape_ratio_challenger_origin_oracle"] == pytest.approx(
        meta["wape_challenger"] / meta["wape_origin_oracle"], abs=1e-3)


def test_every_evaluated_version_carries_its_interval_calibration(story) -> None:
    world, client, steps = story
    (mat,) = steps["first"][0].asset_materializations_for_node("model_evaluation")
    meta = {k: v.value for k, v in mat.metadata.items()}
    assert meta["interval_level"] == 0.8
    assert meta["interval_coverage_measured"] == "leave one origin out (3 origins)"
    assert set(meta["interval_coverage"]) == {"1-7", "8-14", "15-28", "all"}
    # 24 series: a held-out origin's coverage is noisy, but near the level
    assert 0.65 <= meta["interval_coverage"]["all"] <= 0.95
    intervals = Path(meta["report"]).read_text(encoding="utf-8").split('id="intervals"')[1]
    assert '<td class="k">1-7</td>' in intervals.split("<h2")[0]
    models = {v: load_version(world.settings.mlflow_tracking_uri, v) for v in ("1", "2")}
    for model in models.values():  # the blocked challenger's too
        assert model.intervals is not None and model.intervals.level == 0.8
        assert model.intervals_missing == ""
    assert models["1"].intervals.coverage == meta["interval_coverage"]  # type: ignore[union-attr]


def test_worse_challenger_is_blocked_and_aliases_stay(story) -> None:
    _, client, steps = story
    worse, aliases = steps["worse"]
    assert not worse.success
    gate = _gate(worse)
    assert not gate.passed and gate.description.startswith("Blocked")
    assert gate.metadata["reason"].value == gate.description
    ran = {e.step_key for e in worse.all_events if e.event_type_value == "STEP_SUCCESS"}
    assert "champion" not in ran  # nothing downstream of the gate ran
    assert aliases == {"challenger": "2", "champion": "1", "previous": None}
    assert client.get_model_version(REGISTERED_MODEL, "2").tags["gate"] == "blocked"


def test_champion_alone_refuses_a_challenger_the_gate_blocked(story) -> None:
    _, _, steps = story
    alone, aliases = steps["champion_alone"]
    assert not alone.success
    assert aliases["champion"] == "1"


def test_challenger_after_a_shift_beats_the_stale_champion(story) -> None:
    _, client, steps = story
    after, aliases = steps["after_shift"]
    assert after.success, _gate(after).description
    assert aliases == {"challenger": "3", "champion": "3", "previous": "1"}
    tags = client.get_model_version(REGISTERED_MODEL, "3").tags
    assert tags["replaced_version"] == "1" and tags["promotion_trigger"] == "after_shift"
    (mat,) = after.asset_materializations_for_node("model_evaluation")
    assert mat.metadata["champion_staleness_days"].value >= 35
    assert float(tags["backtest_wape"]) <= float(tags["champion_wape"]) * 0.99


def test_champion_loads_in_a_fresh_process(story, tmp_path: Path) -> None:
    """What a `dagster dev` step does: no MLflow URI set in the process beforehand."""
    world, _, _ = story
    code = ("import sys; from ml_assets.training.registry import load_alias; "
            "print(load_alias(sys.argv[1], 'champion').version)")
    done = subprocess.run([sys.executable, "-c", code, world.settings.mlflow_tracking_uri],
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "3"


@pytest.mark.parametrize("version", ["1", "3"])
def test_reproduce_retrains_a_version_from_its_recorded_delta_versions(story, version) -> None:
    """Version 1's training set was overwritten twice since: Delta time travel reads it back."""
    world, client, _ = story
    tags = client.get_model_version(REGISTERED_MODEL, version).tags
    assert {"code_version", "config_hash", "trigger", "delta.training_set", "delta.features",
            "delta.bronze_sales"} <= set(tags)
    done = reproduce(world.settings, version)
    assert done.training_set_version == int(tags["delta.training_set"])
    assert done.rows > 0 and done.identical, done


def test_rollback_restores_the_previous_champion_and_serving_follows(story) -> None:
    """Last in this module: it moves the aliases. Version 1 was promoted without a Bento, so
    the rollback builds one for it before pointing serving at it."""
    world, client, _ = story
    job = world.defs.resolve_job_def("rollback")
    result = job.execute_in_process(instance=world.instance)
    assert result.success
    assert _aliases(client) == {"challenger": "3", "champion": "1", "previous": None}
    restored = client.get_model_version(REGISTERED_MODEL, "1").tags
    assert (restored["promotion_trigger"], restored["replaced_version"],
            restored["promoted_by_run"]) == ("rollback", "3", result.run_id)
    assert "rolled_back_at" in client.get_model_version(REGISTERED_MODEL, "3").tags
    pointer = read_champion(world.settings.serving_dir)
    assert (pointer.reason, pointer.mlflow_version) == ("rollback", "1")
    assert pointer.model_tag == restored["bento_model_tag"]
    name, _, version = pointer.model_tag.partition(":")
    assert (world.settings.bentoml_home / "models" / name / version / "model.yaml").exists()
    (observation,) = [e for e in result.all_events if e.is_asset_observation]
    meta = observation.asset_observation_data.asset_observation.metadata
    assert (meta["champion_version"].value, meta["rolled_back_from"].value) == ("1", "3")
    # nothing left to roll back to: a clear failure, and the aliases stay
    again = job.execute_in_process(instance=world.instance, raise_on_error=False)
    assert not again.success
    failure = next(e for e in again.all_events if e.is_step_failure)
    assert "has no previous version to roll back from or to" in \
        failure.step_failure_data.error.message
    assert _aliases(client)["champion"] == "1"
