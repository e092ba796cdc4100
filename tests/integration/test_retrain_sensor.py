"""`retrain_on_drift` on a real Dagster instance, through `build_sensor_context`: the monitoring
materializations it reads are real events in that instance, and so are the retrain runs that
start its cooldown."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import dagster as dg
import pytest

from ml_assets.definitions import build_definitions
from resources.platform import PlatformSettings
from resources.settings import load_settings
from sensors.retrain import TRIGGER, retrain_on_drift
from tests.conftest import small_world_env

DAY = dt.date(2025, 3, 10)
POLICY = ("drift: {share: 0.3, key_features: [units_sold], key_feature_psi: 0.25}\n"
          "performance: {wape_ratio: 1.3}\n"
          "limits: {consecutive_windows: 2, cooldown_hours: 24, max_retrains_per_day: 2}\n")


@pytest.fixture
def instance(tmp_path: Path):
    with dg.instance_for_test(temp_dir=str(tmp_path)) as inst:
        yield inst


@pytest.fixture
def platform(tmp_path: Path) -> PlatformSettings:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    return PlatformSettings(home=str(tmp_path / "home"), retrain_policy=str(policy))


def _drift(instance: dg.DagsterInstance, shares: list[float], psi: float = 0.0) -> None:
    windows = [{"end": str(DAY + dt.timedelta(days=i)), "drift_share": s,
                "key_psi": {"units_sold": psi}} for i, s in enumerate(shares)]
    instance.report_runless_asset_event(dg.AssetMaterialization(
        "feature_drift", partition=windows[-1]["end"],
        metadata={"windows": json.dumps(windows), "drift_share": shares[-1]}))


def _accuracy(instance: dg.DagsterInstance, day: dt.date, ratio: float) -> None:
    windows = [{"end": str(day - dt.timedelta(days=1)), "wape_ratio": 1.0},
               {"end": str(day), "wape_ratio": ratio}]
    instance.report_runless_asset_event(dg.AssetMaterialization(
        "forecast_accuracy", metadata={"evaluated_through": str(day), "wape_ratio": ratio,
                                       "windows": json.dumps(windows)}))


def _tick(instance: dg.DagsterInstance, platform: PlatformSettings, cursor: str | None = None
          ) -> tuple[dg.RunRequest | dg.SkipReason, str | None]:
    context = dg.build_sensor_context(instance=instance, cursor=cursor,
                                      resources={"platform": platform})
    result = retrain_on_drift(context)
    return result, context.cursor


def test_no_monitoring_yet_is_a_skip(instance, platform) -> None:
    result, _ = _tick(instance, platform)
    assert isinstance(result, dg.SkipReason)
    assert result.skip_message == "no evidence: no drift report yet"


def test_one_breaching_window_waits_for_a_second(instance, platform) -> None:
    _drift(instance, [0.1, 0.1, 0.5])
    result, cursor = _tick(instance, platform)
    assert isinstance(result, dg.SkipReason) and cursor is None
    assert result.skip_message.startswith("hysteresis: window 2025-03-12: drift share 0.50")


def test_a_drift_event_asks_for_one_retrain_with_its_evidence(instance, platform) -> None:
    _drift(instance, [0.1, 0.5, 0.6])
    _accuracy(instance, DAY + dt.timedelta(days=2), 1.45)
    result, cursor = _tick(instance, platform)
    assert isinstance(result, dg.RunRequest), result
    assert result.run_key == f"{TRIGGER}-2025-03-11"
    assert result.tags["retail_ml/trigger"] == TRIGGER
    assert json.loads(result.tags["retail_ml/evidence"]) == {
        "window": "2025-03-12", "drift_share": 0.6, "key_psi": {"units_sold": 0.0},
        "wape_ratio": 1.45, "bias": None, "event_start": "2025-03-11"}
    assert "drift share 0.60 >= 0.3; realized/expected WAPE 1.45 >= 1.3" in result.tags[
        "retail_ml/trigger_reason"]
    # the next tick, and the next day of the same event: no second retrain
    again, _ = _tick(instance, platform, cursor)
    assert isinstance(again, dg.SkipReason) and again.skip_message.startswith(
        "already retrained")
    _drift(instance, [0.1, 0.5, 0.6, 0.7])
    later, _ = _tick(instance, platform, cursor)
    assert isinstance(later, dg.SkipReason) and later.skip_message.startswith(
        "already retrained")
    # a lost cursor (a new instance of the daemon) asks with the same run key, which Dagster
    # launches once
    lost, _ = _tick(instance, platform, None)
    assert isinstance(lost, dg.RunRequest) and lost.run_key == result.run_key


def test_key_feature_psi_alone_triggers(instance, platform) -> None:
    _drift(instance, [0.0, 0.1, 0.1], psi=0.4)
    result, _ = _tick(instance, platform)
    assert isinstance(result, dg.RunRequest)
    assert result.tags["retail_ml/trigger_rule"] == "PSI of units_sold 0.40 >= 0.25"


def test_cooldown_after_a_retrain_run(instance, platform, tmp_path: Path) -> None:
    defs = build_definitions(load_settings(small_world_env(tmp_path / "world")))
    instance.create_run_for_job(defs.resolve_job_def("retrain"), run_config={})
    _drift(instance, [0.5, 0.5])
    result, _ = _tick(instance, platform)
    assert isinstance(result, dg.SkipReason)
    assert result.skip_message.startswith("cooldown: drift share 0.50 >= 0.3, but the last "
                                          "retrain was at")


def test_an_event_whose_retrain_was_not_promoted_asks_again_after_the_cooldown(
        instance, platform, tmp_path: Path) -> None:
    """Days into a shift the backtest cannot see it yet, so the gate blocks the first retrain;
    the event must not stay `already retrained` for as long as the shift lasts."""
    policy = Path(platform.retrain_policy)  # type: ignore[arg-type]
    policy.write_text(POLICY.replace("cooldown_hours: 24", "cooldown_hours: 0"))
    defs = build_definitions(load_settings(small_world_env(tmp_path / "world")))
    _drift(instance, [0.1, 0.5, 0.6])
    first, cursor = _tick(instance, platform)
    assert isinstance(first, dg.RunRequest), first
    run = instance.create_run_for_job(defs.resolve_job_def("retrain"), run_config={},
                                      tags={**first.tags, "dagster/run_key": first.run_key})
    held, _ = _tick(instance, platform, cursor)  # still running: the event is acted on
    assert isinstance(held, dg.SkipReason) and held.skip_message.startswith("already retrained")
    instance.report_run_failed(run)  # as a run does when the promotion gate blocks
    retry, cursor = _tick(instance, platform, cursor)
    assert isinstance(retry, dg.RunRequest), retry
    assert retry.run_key == f"{first.run_key}-2"
    assert "attempt 2: the event's last retrain was not promoted" in \
        retry.tags["retail_ml/trigger_reason"]
    assert json.loads(cursor)["acted_on"] == "2025-03-11"
