"""The loop the platform is named for, on a real instance, MLflow on sqlite, Delta on a temp
folder and a real `bentoml serve`:

1. a world with 18 months of history runs `full_pipeline`: champion v1, served;
2. two normal weeks land and run the daily cycle: the retrain sensor stays quiet;
3. six weeks with demand doubled land (more than a horizon, so the backtest can see the
   shift): the sensor asks for exactly one retrain, tagged with its evidence; the gate
   promotes the new model, and the running server answers with it;
4. the next tick does not retrain again; a rollback brings v1 back, in the server too.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import mlflow
import pytest
import requests

from ml_assets.definitions import build_definitions
from ml_assets.simulation.landing import land
from ml_assets.training.registry import alias_version, registry_client
from resources.settings import load_settings
from resources.tracking import REGISTERED_MODEL
from tests.conftest import TODAY
from tests.e2e.bento_world import bento_server
from tests.e2e.servers import wait_for_bento

pytestmark = pytest.mark.timeout(900)


START = TODAY - dt.timedelta(days=28)  # the day after the history
# Looser statistics than the default policy's: 60 series make a week's pooled demand noisy
# (measured: the defaults call a third to half of the features drifted in normal weeks here,
# against at most a quarter on the default 2,000-series world), and this policy calls 0.1-0.3.
POLICY = """
drift:
  share: 0.4
  statistics: {psi: 0.25, ks: 0.15, wasserstein: 0.25, js: 0.15}
  key_features: [units_sold]
  key_feature_psi: 0.25
performance: {wape_ratio: 1.3, abs_bias: 0.3}
limits: {consecutive_windows: 2, cooldown_hours: 24, max_retrains_per_day: 2}
"""


def _env(home: Path, today: dt.date) -> dict[str, str]:
    """The world as seen on `today`: the same 540-day history whatever the day (its end is
    START - 1), and the days after it landed as the test goes."""
    dataset = home / "dataset.yaml"
    dataset.parent.mkdir(parents=True, exist_ok=True)
    dataset.write_text("source: simulated\nsimulation: {seed: 5, n_stores: 6, n_items: 10, "
                       f"history_days: 540, history_end_offset_days: {(today - START).days}}}\n")
    policy = home / "retrain_policy.yaml"
    policy.write_text(POLICY)
    return {"RETAIL_ML_HOME": str(home), "RETAIL_ML_DATASET": str(dataset),
            "RETAIL_ML_TODAY": today.isoformat(), "RETAIL_ML_BACKTEST_ORIGINS": "2",
            "RETAIL_ML_RETRAIN_POLICY": str(policy)}


def _at(loop: dict, today: dt.date) -> None:
    """Moves the loop's clock: settings and definitions as of `today`."""
    env = _env(loop["home"], today)
    loop["settings"] = load_settings(env)
    loop["defs"] = build_definitions(loop["settings"], env["RETAIL_ML_DATASET"])


def _run(defs: dg.Definitions, instance: dg.DagsterInstance, job: str, first: dt.date,
         last: dt.date, tags: dict[str, str] | None = None) -> dg.ExecuteInProcessResult:
    result = defs.resolve_job_def(job).execute_in_process(
        instance=instance, raise_on_error=False, tags={
            "dagster/asset_partition_range_start": first.isoformat(),
            "dagster/asset_partition_range_end": last.isoformat(), **(tags or {})})
    mlflow.end_run()
    return result


def _tick(defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None):
    sensor = defs.resolve_sensor_def("retrain_on_drift")
    with dg.build_sensor_context(instance=instance, definitions=defs, cursor=cursor,
                                 resources={"platform": defs.resources["platform"]}) as context:
        result = sensor(context)
        return result, context.cursor


def _served_version(url: str, want: str, timeout: float = 60) -> str:
    """The model version the server answers with, once it is `want` (or the timeout)."""
    deadline = time.monotonic() + timeout
    version = ""
    while time.monotonic() < deadline:
        version = requests.get(f"{url}/model", timeout=30).json()["model_version"]
        if version == want:
            break
        time.sleep(0.5)
    return version


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    home = tmp_path_factory.mktemp("loop") / "home"
    env = _env(home, START)
    settings = load_settings(env)
    defs = build_definitions(settings, env["RETAIL_ML_DATASET"])
    instance = dg.DagsterInstance.ephemeral()
    history = land(settings)
    first_day = dt.date.fromisoformat(history[0].stem.removeprefix("sales_"))
    full = _run(defs, instance, "full_pipeline", first_day, START - dt.timedelta(days=1))
    assert full.success, [e.message for e in full.all_events if e.is_failure]
    serve_env = {**os.environ, **env, "BENTOML_HOME": str(settings.bentoml_home),
                 "BENTOML_DO_NOT_TRACK": "true", "RETAIL_ML_RELOAD_SECONDS": "0.5"}
    log = home / "serve.log"
    with bento_server("demand_forecaster:latest", serve_env, home, log) as (url, proc):
        wait_for_bento(url, proc, log)
        yield {"home": home, "defs": defs, "instance": instance, "settings": settings, "url": url,
               "client": registry_client(settings.mlflow_tracking_uri), "steps": {}}
    instance.dispose()


def _land_and_refresh(loop: dict, days: int, scenario: tuple[str, float] | None) -> None:
    _at(loop, loop["settings"].today + dt.timedelta(days=days))
    files = land(loop["settings"], days=days, scenario=scenario)
    assert len(files) == days
    span = [dt.date.fromisoformat(f.stem.removeprefix("sales_")) for f in (files[0], files[-1])]
    daily = _run(loop["defs"], loop["instance"], "daily_forecast", *span)
    assert daily.success, [e.message for e in daily.all_events if e.is_failure]
    loop["steps"][scenario[0] if scenario else "normal"] = daily


def test_the_first_champion_is_served(loop: dict) -> None:
    assert alias_version(loop["client"], "champion") == "1"
    assert _served_version(loop["url"], "1") == "1"


def test_two_normal_weeks_do_not_retrain(loop: dict) -> None:
    _land_and_refresh(loop, 14, None)
    result, cursor = _tick(loop["defs"], loop["instance"], None)
    print(f"normal weeks: {getattr(result, 'skip_message', result)}")
    assert isinstance(result, dg.SkipReason), result
    assert result.skip_message.startswith(("no breach", "hysteresis")), result.skip_message
    (drift,) = loop["steps"]["normal"].asset_materializations_for_node("feature_drift")[-1:]
    assert drift.metadata["reference_rule"].value == "last_year"
    (acc,) = loop["steps"]["normal"].asset_materializations_for_node("forecast_accuracy")
    assert acc.metadata["forecasts_matched"].value > 0
    assert acc.metadata["wape_ratio"].value < 1.3


def test_a_demand_shift_retrains_once_and_serving_follows_the_better_model(loop: dict) -> None:
    defs, instance, client = loop["defs"], loop["instance"], loop["client"]
    _land_and_refresh(loop, 42, ("level_shift", 2.0))
    request, cursor = _tick(defs, instance, None)
    assert isinstance(request, dg.RunRequest), request
    evidence = json.loads(request.tags["retail_ml/evidence"])
    print(f"retrain requested: {request.tags['retail_ml/trigger_reason']}")
    started = time.monotonic()
    retrain = defs.resolve_job_def("retrain").execute_in_process(
        instance=instance, tags=request.tags, raise_on_error=False)
    mlflow.end_run()
    assert retrain.success, [e.message for e in retrain.all_events if e.is_failure]
    assert alias_version(client, "champion") == "2"
    tags = client.get_model_version(REGISTERED_MODEL, "2").tags
    assert tags["trigger"] == "retrain_on_drift"
    assert json.loads(tags["trigger_evidence"]) == evidence
    assert float(tags["backtest_wape"]) < float(tags["champion_wape"])
    assert _served_version(loop["url"], "2") == "2"
    print(f"retrain run to new champion served: {time.monotonic() - started:.1f} s")
    # the same drift event, next tick: no second retrain
    again, _ = _tick(defs, instance, cursor)
    assert isinstance(again, dg.SkipReason) and again.skip_message.startswith(
        ("already retrained", "cooldown")), again.skip_message


def test_rollback_restores_the_old_champion_in_serving(loop: dict) -> None:
    done = loop["defs"].resolve_job_def("rollback").execute_in_process(
        instance=loop["instance"])
    assert done.success
    assert alias_version(loop["client"], "champion") == "1"
    assert _served_version(loop["url"], "1") == "1"
