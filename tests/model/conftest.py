"""A simulated world, the global demand model fitted on it, and its next-horizon rows.

The chain mirrors the Dagster assets (features -> training_set -> demand_model ->
forecast_features) through their pure functions only: no Dagster, no Delta, no MLflow. The
model is fitted once for the whole package (fixture scope "package"), with the default `fit`:
both objectives, early stopping on the last horizon.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import polars as pl
import pytest

from ml_assets.features.recent import level_column, with_recent
from ml_assets.features.transforms import SERIES, FeatureSpec, build_features
from ml_assets.forecasting.horizon import (
    active_series,
    finish_rows,
    future_rows,
    horizon_features,
)
from ml_assets.simulation import Scenario, World, WorldConfig
from ml_assets.training.dataset import (
    TARGET,
    Columns,
    canonical_order,
    category_levels,
    model_columns,
    split_by_time,
    to_matrix,
)
from ml_assets.training.model import FitResult, fit, predict

SPEC = FeatureSpec()  # the default daily dataset: horizon 28 days
TRAINING_WINDOW = 392  # the daily default of DatasetConfig.training_window_periods
START = dt.date(2024, 1, 1)
DAYS = 600  # 20 months: lag_364 has values and the training window is full
N_STORES, N_ITEMS = 10, 40
STORE_IDS = [f"S{i:03d}" for i in range(1, N_STORES + 1)]
# The default world changes a regular price only by a +-3% drift every 4 weeks; the one big price
# change it knows is the promotion's discount, always together with the promotion flag. A model
# trained on that has never seen a regular price move and could only extrapolate. Three
# store-wide price changes (two rises, one cut, each in a third of the stores, all inside the
# training window) let it learn each item's elasticity, as a real retailer's price history would.
PRICE_CHANGES = (
    Scenario("price_shock", START + dt.timedelta(days=240), 1.2, tuple(STORE_IDS[0::3])),
    Scenario("price_shock", START + dt.timedelta(days=360), 1.25, tuple(STORE_IDS[1::3])),
    Scenario("price_shock", START + dt.timedelta(days=470), 0.85, tuple(STORE_IDS[2::3])),
)
WORLD = WorldConfig(seed=7, n_stores=N_STORES, n_items=N_ITEMS, start_date=START,
                    scenarios=PRICE_CHANGES)


@dataclass(frozen=True)
class Data:
    """Raw contract frames: bronze sales up to the origin and the dimensions."""

    sales: pl.DataFrame
    stores: pl.DataFrame
    items: pl.DataFrame
    calendar: pl.DataFrame

    @property
    def origin(self) -> dt.date:
        return self.sales.get_column("date").max()  # type: ignore[return-value]

    @property
    def dims(self) -> dict[str, pl.DataFrame]:
        return {"stores": self.stores, "items": self.items, "calendar": self.calendar}


@dataclass(frozen=True)
class Trained:
    data: Data
    columns: Columns
    levels: dict[str, list[str]]
    result: FitResult
    horizon: pl.DataFrame  # the rows forecast_features would write for the origin

    def forecast(self, rows: pl.DataFrame) -> np.ndarray:
        """What the batch job and the service return for these feature rows."""
        return predict(self.result.booster, to_matrix(rows, self.columns, self.levels))

    def horizon_forecast(self) -> pl.DataFrame:
        return self.horizon.select("date", *SERIES).with_columns(
            forecast=pl.Series(self.forecast(self.horizon), dtype=pl.Float64))


def simulate() -> Data:
    world = World(WORLD)
    sales = world.sales(START, START + dt.timedelta(days=DAYS))
    calendar = world.calendar(START, START + dt.timedelta(days=DAYS + 2 * SPEC.horizon))
    return Data(sales=sales, stores=world.stores, items=world.items, calendar=calendar)


def train(data: Data) -> Trained:
    """features -> training_set -> demand_model -> forecast_features, as the assets chain them."""
    features = build_features(data.sales, SPEC, **data.dims)
    frame = split_by_time(features, SPEC.horizon, SPEC.period_days, TRAINING_WINDOW)
    frame = with_recent(frame, data.sales, SPEC)
    columns, levels = category_levels(frame, model_columns(frame.drop("split")))
    train_rows, valid_rows = (canonical_order(frame.filter(pl.col("split") == s), columns)
                              for s in ("train", "valid"))
    result = fit(to_matrix(train_rows, columns, levels), train_rows.get_column(TARGET).to_numpy(),
                 to_matrix(valid_rows, columns, levels), valid_rows.get_column(TARGET).to_numpy(),
                 scale_column=level_column(SPEC))
    horizon = horizon_features(data.sales, data.origin, SPEC, **data.dims)
    return Trained(data, columns, levels, result, horizon)


def what_if_rows(data: Data, price_factor: float = 1.0, on_promo: int = 0) -> pl.DataFrame:
    """The next-horizon feature rows if every active series sold at `price_factor` times the
    price the horizon carries (its last regular price), with the promotion flag `on_promo`, on
    every day of the horizon.

    Built from `future_rows`, as `horizon_features` builds them (same series, dates, price),
    with these known-in-advance inputs changed. The transforms then derive everything that
    depends on them, as in production: `promo_prev` (the flag one day earlier: the origin's
    real flag on the first day, the what-if flag after), `price_rel` and `discount` (the new
    price against the price history up to the origin). With the defaults the rows equal
    `horizon_features`' (tests/model/test_behaviour.py).
    """
    history = data.sales.filter(pl.col("date") <= data.origin)
    future = future_rows(active_series(history, data.origin, SPEC), data.origin, SPEC, history)
    future = future.with_columns(price=pl.col("price") * price_factor,
                                 on_promo=pl.lit(on_promo, history.schema["on_promo"]))
    table = build_features(pl.concat([history, future]), SPEC, **data.dims)
    return finish_rows(table, history, data.origin, SPEC).sort([*SERIES, "date"])


@pytest.fixture(scope="package")
def data() -> Data:
    return simulate()


@pytest.fixture(scope="package")
def trained(data: Data) -> Trained:
    return train(data)
