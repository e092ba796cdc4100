"""Price and promotion overrides through the service class called directly.

A small simulated world (3 stores x 8 items, 430 days), the demand model fitted on it as the
assets chain it (features -> training set -> fit, fewer rounds), its next-horizon rows in a real
Delta table, the online state published under RETAIL_ML_HOME/online, and the booster in a
BentoML model store under a temp directory.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import bentoml
import numpy as np
import polars as pl
import pytest
from bentoml._internal.configuration.containers import BentoMLContainer
from bentoml._internal.models import ModelStore
from bentoml.exceptions import NotFound, UnprocessableEntity

from bentos.demand_forecaster.schemas import ForecastRequest
from bentos.demand_forecaster.service import MODEL_TAG, DemandForecaster, batch_answers
from bentos.demand_forecaster.state import FEATURES_TABLE, online_for
from ml_assets.features.transforms import SERIES, FeatureSpec, build_features
from ml_assets.forecasting.horizon import horizon_features
from ml_assets.forecasting.online import (
    CURRENT,
    OnlineState,
    build_state,
    request_features,
    save_state,
)
from ml_assets.forecasting.online_store import FolderStore
from ml_assets.simulation import World, WorldConfig
from ml_assets.training.dataset import (
    TARGET,
    canonical_order,
    category_levels,
    model_columns,
    split_by_time,
    to_matrix,
)
from ml_assets.training.model import fit, predict

SPEC = FeatureSpec()  # the simulated dataset's default: daily, horizon 28
START = dt.date(2024, 1, 1)
DAYS = 430


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    home = tmp_path_factory.mktemp("service_overrides")
    sim = World(WorldConfig(seed=5, n_stores=3, n_items=8, start_date=START))
    sales = sim.sales(START, START + dt.timedelta(days=DAYS))
    origin = sales.get_column("date").max()
    dims = {"stores": sim.stores, "items": sim.items,
            "calendar": sim.calendar(START, origin + dt.timedelta(days=2 * SPEC.horizon))}

    features = build_features(sales, SPEC, **dims)
    frame = split_by_time(features, SPEC.horizon, SPEC.period_days, 392)
    columns, levels = category_levels(frame, model_columns(frame.drop("split")))
    train, valid = (canonical_order(frame.filter(pl.col("split") == s), columns)
                    for s in ("train", "valid"))
    booster = fit(to_matrix(train, columns, levels), train.get_column(TARGET).to_numpy(),
                  to_matrix(valid, columns, levels), valid.get_column(TARGET).to_numpy(),
                  max_rounds=150, objectives=("tweedie",)).booster

    # what forecast_features and online_features read: the lookback, and first_sale
    lookback = origin + dt.timedelta(days=1 - SPEC.lookback_periods)
    first_sale = sales.group_by(SERIES).agg(pl.col("date").min().alias("first_sale_date"))
    window = sales.filter(pl.col("date") >= lookback)
    snapshot = horizon_features(window, origin, SPEC, **dims, first_sale=first_sale)
    snapshot.write_delta(str(home / "delta" / FEATURES_TABLE))
    state = build_state(window, origin, SPEC, **dims, first_sale=first_sale)
    save_state(state, home / "online")

    meta = {"numeric": columns.numeric, "categorical": columns.categorical,
            "category_levels": levels}
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RETAIL_ML_HOME", str(home))
        env.setenv("RETAIL_ML_DATASET", "simulated")
        # BentoML resolves the class's model reference once and caches it on the class: a
        # fresh reference for this module, so that no other module's service and this one share
        env.setattr(DemandForecaster.inner, "model_ref", bentoml.models.BentoModel(MODEL_TAG))
        BentoMLContainer.model_store.set(ModelStore(str(home / "bentoml" / "models")))
        try:
            bentoml.xgboost.save_model("demand_forecaster", booster,
                                       labels={"mlflow_version": "1"}, metadata=meta)
            yield SimpleNamespace(svc=DemandForecaster(), booster=booster, snapshot=snapshot,
                                  state=state, columns=columns, levels=levels, home=home)
        finally:
            BentoMLContainer.model_store.reset()


def _batch(world: SimpleNamespace, requests: list[dict]) -> np.ndarray:
    answers = batch_answers(asyncio.run(world.svc.forecast_batch(
        [ForecastRequest.model_validate(r) for r in requests])))
    return np.array([a.units for a in answers])


def _scored(world: SimpleNamespace, requests: list[dict]) -> np.ndarray:
    """What the service must answer: the online rows scored by the batch job's predict."""
    frame = pl.DataFrame(requests, schema={"store_id": pl.Utf8, "item_id": pl.Utf8,
                                           "date": pl.Date, "price": pl.Float64,
                                           "on_promo": pl.Int64})
    rows = request_features(world.state, frame)
    return predict(world.booster, to_matrix(rows, world.columns, world.levels))


def _keys(rows: pl.DataFrame) -> list[dict]:
    return [{**r, "price": None, "on_promo": None}
            for r in rows.select(*SERIES, "date").to_dicts()]


def test_override_answers_score_the_online_rows(world: SimpleNamespace) -> None:
    rows = world.snapshot.sample(n=12, seed=2)
    plain = _keys(rows)
    what_if = [{**r, "price": round(p * 0.8, 2)} if i % 3 == 0
               else {**r, "on_promo": 1} if i % 3 == 1 else r
               for i, (r, p) in enumerate(zip(plain, rows.get_column("price"), strict=True))]
    units = _batch(world, what_if)
    np.testing.assert_allclose(units, _scored(world, what_if), rtol=0, atol=1e-5)
    # requests without overrides in the same batch keep the snapshot's answer
    snapshot = predict(world.booster, to_matrix(rows, world.columns, world.levels))
    np.testing.assert_allclose(units[2::3], snapshot[2::3], rtol=0, atol=1e-5)
    # no override at all: the online rows equal the snapshot's, so the answers do too
    np.testing.assert_allclose(_scored(world, plain), snapshot, rtol=0, atol=1e-6)
    single = asyncio.run(world.svc.forecast(**what_if[1])).units
    assert single == pytest.approx(units[1], abs=1e-6)


def test_a_promotion_raises_the_forecast(world: SimpleNamespace) -> None:
    rows = world.snapshot.filter(pl.col("horizon") == 10)  # every series, one weekday
    plain = _keys(rows)
    base = _batch(world, plain)
    promo = _batch(world, [{**r, "on_promo": 1} for r in plain])
    assert promo.sum() > 1.05 * base.sum()
    assert (promo >= base - 1e-6).mean() >= 0.8


def test_overrides_keep_the_snapshot_errors(world: SimpleNamespace) -> None:
    request = _keys(world.snapshot.head(1))[0]
    with pytest.raises(NotFound, match=r"^requests\.1\.store_id: unknown store 'S999'"):
        _batch(world, [request, {**request, "store_id": "S999", "on_promo": 1}])
    late = world.snapshot.get_column("date").max() + dt.timedelta(days=1)
    with pytest.raises(UnprocessableEntity, match=r"^date: .* is outside the servable horizon"):
        asyncio.run(world.svc.forecast(**{**request, "date": late, "price": 2.0}))


def test_a_state_for_another_origin_is_not_used(world: SimpleNamespace, tmp_path: Path) -> None:
    day_before = world.state.origin - dt.timedelta(days=1)
    stale = OnlineState(day_before, SPEC, world.state.history.filter(pl.col("date") <= day_before),
                        world.state.dims)
    save_state(stale, tmp_path)
    name = (tmp_path / CURRENT).read_text().strip()
    state, reason = online_for(FolderStore(tmp_path), name, world.state.origin)
    assert state is None
    assert reason == (f"the online feature state at {tmp_path} is for origin {day_before}, the "
                      f"feature snapshot for origin {world.state.origin}")


def test_override_latency(world: SimpleNamespace) -> None:
    """Not a speed claim (benchmarks/ makes those): prints what one request costs here."""
    plain = _keys(world.snapshot.head(1))
    cases = {"snapshot": plain, "on_promo": [{**plain[0], "on_promo": 1}],
             "price": [{**plain[0], "price": 1.0}],
             "batch of 100 overrides": [{**r, "on_promo": 1} for r in _keys(
                 world.snapshot.sample(n=100, seed=3))]}
    for name, requests in cases.items():
        parsed = [ForecastRequest.model_validate(r) for r in requests]
        took = []
        for _ in range(20):
            start = time.perf_counter()
            world.svc._forecast(parsed, batch=True)
            took.append(time.perf_counter() - start)
        print(f"{name}: median {np.median(took) * 1e3:.2f} ms, max {max(took) * 1e3:.2f} ms")
