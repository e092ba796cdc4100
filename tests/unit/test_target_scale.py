"""The per-series scaled target (training/model.py): chosen when series differ in scale, recorded
in the booster so every prediction path multiplies back, and kept through a saved model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import xgboost as xgb

from ml_assets.training.model import fit, predict, predict_inplace, refit, scale_of

LEVEL = "recent_mean_28"


def _stores(rng: np.random.Generator, n_series: int, days: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Store sales from 50 to 20,000 a day: level x weekday shape x promotion lift."""
    level = np.exp(rng.uniform(np.log(50), np.log(20_000), n_series))
    series = np.repeat(np.arange(n_series), days)
    weekday = np.tile(np.arange(days) % 7, n_series)
    promo = rng.integers(0, 2, n_series * days)
    mean = level[series] * (1 + 0.1 * weekday) * np.where(promo == 1, 1.4, 1.0)
    y = rng.gamma(400.0, mean / 400.0)  # 5 % noise: the fit, not the noise, decides
    noisy_level = level[series] * rng.uniform(0.98, 1.02, len(series))
    x = pd.DataFrame({LEVEL: noisy_level, "day_of_week": weekday.astype(float),
                      "on_promo": promo.astype(float)})
    return x, y


def test_scaled_target_wins_on_series_of_different_scales_and_multiplies_back() -> None:
    rng = np.random.default_rng(3)
    x, y = _stores(rng, 60, 120)
    x_valid, y_valid = _stores(np.random.default_rng(4), 60, 28)
    result = fit(x, y, x_valid, y_valid, max_rounds=200, objectives=("squared_error",),
                 scale_column=LEVEL)
    assert set(result.valid_wape) == {"squared_error", "squared_error_scaled"}
    assert result.scale_column == LEVEL
    assert result.valid_wape["squared_error_scaled"] < 0.9 * result.valid_wape["squared_error"]
    booster = result.booster
    assert booster.attr("target_scale") == LEVEL
    raw = booster.predict(xgb.DMatrix(x_valid))
    np.testing.assert_allclose(predict(booster, x_valid),
                               np.clip(raw * (x_valid[LEVEL].to_numpy() + 1), 0, None),
                               rtol=1e-6)


def test_a_saved_scaled_model_predicts_the_same_from_pandas_and_from_an_array(
        tmp_path: Path) -> None:
    x, y = _stores(np.random.default_rng(5), 20, 60)
    booster = refit(x, y, "tweedie", 30, scale_column=LEVEL)
    booster.save_model(tmp_path / "model.ubj")
    loaded = xgb.Booster(model_file=str(tmp_path / "model.ubj"))
    assert loaded.attr("target_scale") == LEVEL
    expected = predict(booster, x)
    np.testing.assert_allclose(predict(loaded, x), expected, rtol=1e-6)
    array = x.to_numpy(np.float32)
    np.testing.assert_allclose(predict_inplace(loaded, array), expected, rtol=1e-4)


def test_a_missing_or_negative_level_scales_by_one() -> None:
    x = pd.DataFrame({LEVEL: [np.nan, -3.0, 0.0, 9.0]})
    np.testing.assert_array_equal(scale_of(x, LEVEL, [LEVEL]), [1.0, 1.0, 1.0, 10.0])
