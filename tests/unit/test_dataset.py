"""`to_array` (the serving form) against `to_matrix` (the training form): same predictions."""

from __future__ import annotations

import numpy as np
import polars as pl

from ml_assets.training.dataset import Columns, to_array, to_matrix
from ml_assets.training.model import fit, predict, predict_inplace

COLUMNS = Columns(numeric=["price", "lag_7", "on_promo"], categorical=["category", "weather"])
LEVELS = {"category": ["food", "home", "toys"], "weather": ["dry", "wet"]}


def _frame(rng: np.random.Generator, n: int) -> pl.DataFrame:
    lag = pl.Series(rng.uniform(0, 30, n))
    lag = lag.scatter(np.flatnonzero(rng.random(n) < 0.1), None)
    return pl.DataFrame({
        "price": rng.uniform(1, 9, n), "lag_7": lag,
        "on_promo": rng.integers(0, 2, n),
        # "garden": a level unseen in training; None: a missing value
        "category": rng.choice(["food", "home", "toys", "garden", None], n),
        "weather": rng.choice(["dry", "wet"], n)}, strict=False)


def test_array_gives_the_same_predictions_as_the_pandas_matrix() -> None:
    rng = np.random.default_rng(5)
    train = _frame(rng, 4000).filter(pl.col("category") != "garden")
    y = (train["lag_7"].fill_null(10) + 8 * (train["category"] == "toys").cast(pl.Float64)
         - train["price"] + 3 * train["on_promo"]).to_numpy()
    x = to_matrix(train, COLUMNS, LEVELS)
    booster = fit(x, y, x, y, max_rounds=40, objectives=("squared_error",)).booster
    served = _frame(rng, 2000)
    array = to_array(served, COLUMNS, LEVELS)
    assert array.dtype == np.float32 and array.shape == (2000, 5)
    assert np.isnan(array[(served["category"] == "garden").fill_null(False).to_numpy(), 3]).all()
    assert np.isnan(array[served["category"].is_null().to_numpy(), 3]).all()
    expected = predict(booster, to_matrix(served, COLUMNS, LEVELS))
    np.testing.assert_allclose(predict_inplace(booster, array), expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(predict_inplace(booster, array[[7]]), expected[[7]], atol=1e-5)
