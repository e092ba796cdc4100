"""The demand forecaster's service class called directly, without a server.

A small hand-made snapshot (3 stores x 4 items, one series missing, an unseen category level,
missing lags) in a real Delta table, and a real booster in a BentoML model store under a temp
directory. The booster learns a target that goes negative, so the clipping at 0 is exercised.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
from collections.abc import Iterator
from http import HTTPStatus
from types import SimpleNamespace

import bentoml
import numpy as np
import polars as pl
import pytest
import xgboost as xgb
from bentoml._internal.configuration.containers import BentoMLContainer
from bentoml._internal.models import ModelStore
from bentoml.exceptions import BentoMLException, NotFound, UnprocessableEntity

from bentos.demand_forecaster.schemas import ForecastRequest
from bentos.demand_forecaster.service import MAX_BATCH_ENV, DemandForecaster, batch_answers
from bentos.demand_forecaster.state import FEATURES_TABLE
from ml_assets.deployment.pointer import publish_champion
from ml_assets.evaluation.intervals import Calibration, bounds, no_calibration
from ml_assets.monitoring.prediction_log import read_log_files
from ml_assets.training.dataset import Columns, to_matrix
from ml_assets.training.model import fit, predict

ORIGIN = dt.date(2025, 2, 28)
HORIZON = 28
COLUMNS = Columns(numeric=["price", "on_promo", "lag_28", "day_of_week"],
                  categorical=["category"])
LEVELS = {"category": ["A", "B"]}


def _features(rng: np.random.Generator, n: int) -> dict[str, object]:
    lag = rng.uniform(0, 20, n)
    lag[rng.random(n) < 0.1] = np.nan
    return {"price": rng.uniform(1, 10, n), "on_promo": rng.integers(0, 2, n),
            "lag_28": lag, "day_of_week": rng.integers(0, 7, n),
            "category": rng.choice(["A", "B", "Z"], n)}  # Z: a level unseen in training


def _snapshot(rng: np.random.Generator) -> pl.DataFrame:
    series = [(s, i) for s in ("S1", "S2", "S3") for i in ("I1", "I2", "I3", "I4")
              if (s, i) != ("S3", "I4")]  # S3 and I4 exist, their pair does not
    keys = pl.DataFrame(series, schema=["store_id", "item_id"], orient="row").join(
        pl.DataFrame({"horizon": range(1, HORIZON + 1)}), how="cross").with_columns(
        date=pl.lit(ORIGIN) + pl.duration(days=pl.col("horizon")), origin=pl.lit(ORIGIN))
    features = pl.DataFrame(_features(rng, keys.height)).with_columns(
        pl.col("lag_28").fill_nan(None))
    return pl.concat([keys.select("date", "store_id", "item_id", "origin", "horizon"),
                      features], how="horizontal")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    home = tmp_path_factory.mktemp("service_direct")
    rng = np.random.default_rng(11)
    train = pl.DataFrame(_features(rng, 3000)).with_columns(pl.col("lag_28").fill_nan(None))
    target = (2 * train["lag_28"].fill_null(5) - 3 * train["price"] + 4 * train["on_promo"])
    x = to_matrix(train, COLUMNS, LEVELS)
    booster = fit(x, target.to_numpy(), x, target.to_numpy(), max_rounds=20,
                  objectives=("squared_error",)).booster

    snapshot = _snapshot(rng)
    table = str(home / "delta" / FEATURES_TABLE)
    for _ in range(2):  # version 1: the service must report the version, not assume 0
        snapshot.write_delta(table, mode="overwrite")

    labels = {"mlflow_version": "7", "mlflow_run_id": "run-1", "delta_features": "3",
              "delta_training_set": "2", "metric_backtest_wape": "0.41"}
    meta = {"numeric": COLUMNS.numeric, "categorical": COLUMNS.categorical,
            "category_levels": LEVELS}
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RETAIL_ML_HOME", str(home))
        env.setenv("RETAIL_ML_DATASET", "simulated")
        env.setenv(MAX_BATCH_ENV, "50")
        # BentoML's DI container holds the model store: point it at the temp dir, then back
        BentoMLContainer.model_store.set(ModelStore(str(home / "bentoml" / "models")))
        try:
            model = bentoml.xgboost.save_model("demand_forecaster", booster, labels=labels,
                                               metadata=meta)
            yield SimpleNamespace(svc=DemandForecaster(), booster=booster, snapshot=snapshot,
                                  model_tag=str(model.tag), home=home, meta=meta,
                                  labels=labels)
        finally:
            BentoMLContainer.model_store.reset()


def _expected(world: SimpleNamespace, rows: pl.DataFrame) -> np.ndarray:
    return predict(world.booster, to_matrix(rows, COLUMNS, LEVELS))


def _forecast(world: SimpleNamespace, **fields: object) -> dict:
    return asyncio.run(world.svc.forecast(**fields)).model_dump()


def _batch(world: SimpleNamespace, requests: list[dict]) -> list[dict]:
    answers = batch_answers(asyncio.run(world.svc.forecast_batch(
        [ForecastRequest.model_validate(r) for r in requests])))
    return [a.model_dump() for a in answers]


def _requests(rows: pl.DataFrame) -> list[dict]:
    return rows.select("store_id", "item_id", "date").to_dicts()


def test_forecast_is_the_batch_scoring_of_its_snapshot_row(world: SimpleNamespace) -> None:
    row = world.snapshot.filter(pl.col("horizon") == 5).head(1)
    answer = _forecast(world, **_requests(row)[0])
    assert answer["units"] == pytest.approx(float(_expected(world, row)[0]), abs=1e-6)
    # this model has no interval calibration (registered before intervals): null intervals
    assert answer | {"units": None} == {
        **_requests(row)[0], "units": None, "model_version": "7", "model_tag": world.model_tag,
        "features_origin": ORIGIN, "features_version": 1, "horizon": 5, "lower": None,
        "upper": None, "interval_level": None}


def test_batch_equals_single_forecasts_and_batch_scoring(world: SimpleNamespace) -> None:
    rows = world.snapshot.sample(fraction=1.0, shuffle=True, seed=1).head(50)  # the limit
    raw = world.booster.predict(xgb.DMatrix(to_matrix(rows, COLUMNS, LEVELS),
                                            enable_categorical=True))
    assert (raw < 0).any() and (rows["category"] == "Z").any()  # both cases are in the batch
    answers = _batch(world, _requests(rows))
    assert [(a["store_id"], a["item_id"], a["date"]) for a in answers] == rows.select(
        "store_id", "item_id", "date").rows()
    units = np.array([a["units"] for a in answers])
    np.testing.assert_allclose(units, _expected(world, rows), rtol=0, atol=1e-6)
    assert units.min() == 0.0
    singles = [_forecast(world, **r)["units"] for r in _requests(rows)]
    assert units.tolist() == singles


def test_empty_batch_is_empty(world: SimpleNamespace) -> None:
    assert _batch(world, []) == []


@pytest.mark.parametrize(("store", "item", "message"), [
    ("S9", "I1", "store_id: unknown store 'S9'"),
    ("S1", "I9", "item_id: unknown item 'I9'"),
    ("S3", "I4", "item_id: no active series store_id='S3' item_id='I4'")])
def test_unknown_series_is_not_found(world: SimpleNamespace, store: str, item: str,
                                     message: str) -> None:
    date = ORIGIN + dt.timedelta(days=1)
    with pytest.raises(NotFound) as caught:
        _forecast(world, store_id=store, item_id=item, date=date)
    assert str(caught.value).startswith(message)
    assert f"origin {ORIGIN}" in str(caught.value)


@pytest.mark.parametrize("days_ahead", [0, HORIZON + 1, -30])
def test_date_outside_the_horizon_is_unprocessable(world: SimpleNamespace,
                                                   days_ahead: int) -> None:
    date = ORIGIN + dt.timedelta(days=days_ahead)
    with pytest.raises(UnprocessableEntity) as caught:
        _forecast(world, store_id="S1", item_id="I1", date=date)
    last = ORIGIN + dt.timedelta(days=HORIZON)
    assert str(caught.value) == (
        f"date: {date} is outside the servable horizon: valid dates are "
        f"{ORIGIN + dt.timedelta(days=1)} .. {last} (origin {ORIGIN})")


def test_a_bad_request_fails_the_batch_naming_its_index(world: SimpleNamespace) -> None:
    good = _requests(world.snapshot.head(3))
    bad = {**good[1], "date": ORIGIN}
    with pytest.raises(UnprocessableEntity, match=r"^requests\.2\.date: .* is outside"):
        _batch(world, [*good[:2], bad])
    with pytest.raises(NotFound, match=r"^requests\.1\.item_id: unknown item 'nope'"):
        _batch(world, [good[0], {**good[0], "item_id": "nope"}])


@pytest.mark.parametrize("override", [{"price": 2.5}, {"on_promo": 1}, {"on_promo": 0}])
def test_overrides_are_refused_without_an_online_state(world: SimpleNamespace,
                                                       override: dict) -> None:
    request = _requests(world.snapshot.head(1))[0]
    field = next(iter(override))
    with pytest.raises(UnprocessableEntity,
                       match=f"^{field}: .*need the online feature state, and no online feature "
                             "state is published at .*online: materialize `online_features`"):
        _forecast(world, **request, **override)
    with pytest.raises(UnprocessableEntity, match=rf"^requests\.1\.{field}: "):
        _batch(world, [request, {**request, **override}])


def test_oversized_batch_names_the_limit(world: SimpleNamespace) -> None:
    requests = _requests(world.snapshot.head(51))
    with pytest.raises(BentoMLException) as caught:
        _batch(world, requests)
    assert caught.value.error_code == HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    assert "51 forecasts in one batch, the limit is 50 (RETAIL_ML_MAX_BATCH)" in str(caught.value)


def test_model_info_reports_versions_metrics_and_snapshot(world: SimpleNamespace) -> None:
    info = asyncio.run(world.svc.model_info()).model_dump()
    assert info.pop("created_at").tzinfo is not None
    assert info.pop("loaded_at").tzinfo is not None
    assert info.pop("reload") == {"interval_seconds": 5.0, "swaps": 0, "failures": 0,
                                  "last_error": None}
    samples = {k: info["features"].pop(k) for k in ("sample_series", "example_request")}
    example = samples["example_request"]
    assert example["date"] == ORIGIN + dt.timedelta(days=2)
    assert {"store_id": example["store_id"], "item_id": example["item_id"]} in samples[
        "sample_series"] and len(samples["sample_series"]) == 5
    assert asyncio.run(world.svc.forecast(**example)).units >= 0  # servable as it is
    assert info == {
        "model_version": "7", "model_tag": world.model_tag, "mlflow_run_id": "run-1",
        "metrics": {"backtest_wape": 0.41},
        "training_data": {"features": 3, "training_set": 2},
        "feature_columns": COLUMNS.all, "kind": "xgboost", "covariates": [],
        "intervals": {"level": None, "coverage": {}, "measured": None, "method": None,
                      "missing": no_calibration("7")},
        "features": {"table": FEATURES_TABLE, "version": 1, "origin": ORIGIN,
                     "first_date": ORIGIN + dt.timedelta(days=1),
                     "last_date": ORIGIN + dt.timedelta(days=HORIZON), "period_days": 1,
                     "series": 11, "rows": 11 * HORIZON}}


def test_served_forecasts_are_in_the_prediction_log_after_close(
        world: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    svc = DemandForecaster()  # its own log, so closing it leaves the shared service's alone
    rows = world.snapshot.head(3)
    one = _requests(rows)[0]
    single = asyncio.run(svc.forecast(**one)).model_dump()
    batch = [a.model_dump() for a in batch_answers(asyncio.run(svc.forecast_batch(
        [ForecastRequest(**r) for r in _requests(rows)[1:]])))]
    svc.close_prediction_log()
    logged, bad = read_log_files([svc.prediction_log.current_path])
    assert bad == [] and logged.get_column("endpoint").to_list() == ["forecast"] + [
        "forecast_batch"] * 2
    assert logged.select("store_id", "item_id", "date", "units", "model_version",
                         "features_version", "horizon").to_dicts() == [
        {k: a[k] for k in ("store_id", "item_id", "date", "units", "model_version",
                           "features_version", "horizon")} for a in [single, *batch]]
    assert (logged.get_column("latency_ms") >= 0).all()

    monkeypatch.setenv("RETAIL_ML_PREDICTION_LOG", "off")
    assert DemandForecaster().prediction_log is None


def test_hot_swap_to_a_published_champion_and_a_new_snapshot(world: SimpleNamespace) -> None:
    svc = DemandForecaster()
    row = world.snapshot.filter(pl.col("horizon") == 2).head(1)
    request = _requests(row)[0]
    assert svc.reloader.check() is False  # nothing moved
    newer = world.booster[:4]
    # the new champion has intervals: a hand-made calibration, wider for later horizons
    buckets = ("1-7", "8-14", "15-28", "29+", "all")
    calibration = Calibration(
        level=0.8, period_days=1, edges=[5.0], rows=dict.fromkeys(buckets, 500),
        lower={b: [-1.0 - i, -2.0 - i] for i, b in enumerate(buckets)},
        upper={b: [1.5 + i, 2.5 + i] for i, b in enumerate(buckets)},
        coverage={"1-7": 0.79, "all": 0.8}, measured="leave one origin out (3 origins)")
    model = bentoml.xgboost.save_model(
        "demand_forecaster", newer, metadata={**world.meta, "intervals": calibration.to_json()},
        labels={**world.labels, "mlflow_version": "8"})
    serving = world.home / "serving"
    try:
        publish_champion(serving, str(model.tag), "8", "demand_forecaster:b8", "promoted")
        before = _forecast_with(svc, request)
        assert svc.reloader.check() is True
        after = _forecast_with(svc, request)
        assert (before["model_version"], after["model_version"]) == ("7", "8")
        assert after["model_tag"] == str(model.tag)
        assert after["units"] == pytest.approx(float(predict(newer, to_matrix(
            row, COLUMNS, LEVELS))[0]), abs=1e-6)
        assert before["units"] != after["units"]
        # and its intervals, from the calibration it was saved with
        assert before["lower"] is None
        low, high = bounds(calibration, np.array([after["units"]]), np.array([2]))
        assert (after["lower"], after["upper"], after["interval_level"]) == pytest.approx(
            (low[0], high[0], 0.8))
        assert after["lower"] <= after["units"] <= after["upper"]
        info = asyncio.run(svc.model_info()).intervals
        assert (info.level, info.coverage, info.missing) == (0.8, {"1-7": 0.79, "all": 0.8},
                                                             None)

        version = after["features_version"]
        world.snapshot.write_delta(str(world.home / "delta" / FEATURES_TABLE), mode="overwrite")
        assert svc.reloader.check() is True
        assert _forecast_with(svc, request)["features_version"] == version + 1

        # a pointer to a model the store lacks: logged and counted, the old model answers on,
        # and the same broken pointer is not retried every poll
        publish_champion(serving, "demand_forecaster:nosuchmodel", "9", "x:y", "promoted")
        assert svc.reloader.check() is False and svc.reloader.check() is False
        assert svc.reloader.failures == 1 and "nosuchmodel" in svc.reloader.last_error
        assert _forecast_with(svc, request)["model_version"] == "8"
        info = asyncio.run(svc.model_info())
        assert (info.model_version, info.reload.swaps, info.reload.failures) == ("8", 2, 1)
    finally:
        shutil.rmtree(serving, ignore_errors=True)
        svc.reloader.stop()


def _forecast_with(svc: DemandForecaster, request: dict) -> dict:
    return asyncio.run(svc.forecast(**request)).model_dump()
