"""Prediction intervals: conformal quantiles, calibration per horizon bucket and forecast size,
the bounds applied, and coverage measured leaving one origin out, on hand-made backtests."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import polars as pl
import pytest

from ml_assets.evaluation.intervals import (
    ALL,
    Bounds,
    Calibration,
    bounds,
    calibrate,
    conformal_bounds,
    coverage_by_bucket,
    quantile_names,
)

ORIGINS = [dt.date(2025, 1, 1), dt.date(2025, 1, 29), dt.date(2025, 2, 26)]
F = 999.0  # the forecast: its scale F + 1 is 1000


def _backtest(scores_by_origin: dict[dt.date, np.ndarray], horizon: int = 1,
              forecast: float | np.ndarray = F) -> pl.DataFrame:
    """Rows whose scaled residuals (actual - forecast) / (forecast + 1) are the given scores,
    at each origin, plus one row forced to 0 that must count nowhere."""
    parts = []
    for origin, scores in scores_by_origin.items():
        scores = np.asarray(scores, dtype=float)
        f = np.broadcast_to(np.asarray(forecast, dtype=float), scores.shape)
        actual = f + scores * (f + 1)
        parts.append(pl.DataFrame({
            "origin": [origin] * (actual.size + 1), "horizon": [horizon] * (actual.size + 1),
            "units_sold": [*actual, 5.0], "challenger": [*f, 0.0],
            "forced_zero": [False] * actual.size + [True]}))
    return pl.concat(parts)


def test_conformal_quantiles_take_the_finite_sample_ranks() -> None:
    # n = 99 at 80 %: the floor(100 * 0.1) = 10th and ceil(100 * 0.9) = 90th smallest
    assert conformal_bounds(np.arange(99, 0, -1, dtype=float), 0.8) == (10.0, 90.0)
    # too few scores for those ranks: the extremes
    assert conformal_bounds(np.array([3.0, 1.0, 2.0]), 0.8) == (1.0, 3.0)
    assert quantile_names(0.8) == ("p10", "p90") and quantile_names(0.9) == ("p5", "p95")


def test_coverage_on_a_known_case_leaves_each_origin_out() -> None:
    # every origin scores -0.49..0.50: calibrated on the other two (200 scores: each twice),
    # the bounds are the 20th and 181st smallest, -0.40 and 0.41, which hold 82 of the 100
    scores = (np.arange(1, 101) - 50) / 100
    table, how = coverage_by_bucket(_backtest(dict.fromkeys(ORIGINS, scores)), "challenger",
                                    0.8, 1)
    assert how == "leave one origin out (3 origins)"
    rows = {r["bucket"]: r for r in table.iter_rows(named=True)}
    assert set(rows) == {"1-7", ALL}
    assert rows["1-7"]["rows"] == 300  # the forced row is not scored
    assert rows["1-7"]["coverage"] == pytest.approx(0.82)
    assert (rows["1-7"]["below"], rows["1-7"]["above"]) == pytest.approx((0.09, 0.09))
    assert rows["1-7"]["mean_width"] == pytest.approx(0.81 * 1000)


def test_coverage_is_out_of_sample_not_in_sample() -> None:
    # the second origin errs ten times as widely as the first: in sample, both would look
    # 80 % covered; held out, the first is covered by the second's wide bounds (100 %) and the
    # second by the first's narrow ones only for its 9 scores within [-0.040, 0.041]
    scores = (np.arange(1, 101) - 50.0) / 1000
    table, _ = coverage_by_bucket(
        _backtest({ORIGINS[0]: scores, ORIGINS[1]: scores * 10}), "challenger", 0.8, 1)
    overall = table.filter(pl.col("bucket") == ALL).row(0, named=True)
    assert overall["coverage"] == pytest.approx((100 + 9) / 200)
    assert (overall["below"], overall["above"]) == pytest.approx((45 / 200, 46 / 200))


def test_a_single_origin_is_measured_in_sample_and_says_so() -> None:
    table, how = coverage_by_bucket(_backtest({ORIGINS[0]: (np.arange(1, 101) - 50) / 100}),
                                    "challenger", 0.8, 1)
    assert how.startswith("in sample")
    assert table.filter(pl.col("bucket") == ALL).item(0, "coverage") == pytest.approx(0.8,
                                                                                       abs=0.02)


def test_buckets_and_forecast_sizes_get_their_own_quantiles() -> None:
    rng = np.random.default_rng(3)
    # near horizons err by +-10 % of the forecast, far ones by +-30 %; small ones skew high
    parts = []
    for origin in ORIGINS:
        for horizon, spread in ((2, 0.1), (20, 0.3)):
            for size, shift in ((20.0, 0.05), (400.0, 0.0)):
                forecast = rng.uniform(size * 0.5, size * 1.5, 400)
                scores = rng.uniform(-spread, spread, 400) + shift
                parts.append(_backtest({origin: scores}, horizon, forecast)
                             .filter(~pl.col("forced_zero")))
    backtest = pl.concat(parts)
    cal = calibrate(backtest, "challenger", 0.8, 1)
    assert cal.rows == {"1-7": 2400, "8-14": 0, "15-28": 2400, "29+": 0, ALL: 4800}
    assert len(cal.edges) == 15  # 16 bins: the most, as 2400 rows per bucket allow

    def interval(f: float, h: int) -> tuple[float, float]:  # in units of the scale
        low, high = bounds(cal, np.array([f]), np.array([h]))
        return (low[0] - f) / (f + 1), (high[0] - f) / (f + 1)

    assert interval(20.0, 2) == pytest.approx((-0.03, 0.13), abs=0.015)  # small ones skew
    assert interval(400.0, 2) == pytest.approx((-0.08, 0.08), abs=0.02)
    assert interval(400.0, 20) == pytest.approx((-0.24, 0.24), abs=0.04)
    # buckets without rows of their own (8-14, 29+) take the quantiles of every row
    assert interval(400.0, 10) == interval(400.0, 40) != interval(400.0, 20)
    # the held-out coverage of each bucket is the level's
    table, _ = coverage_by_bucket(backtest, "challenger", 0.8, 1)
    for coverage in table.get_column("coverage"):
        assert 0.77 <= coverage <= 0.83


def test_bounds_hold_the_forecast_are_never_negative_and_zero_when_forced() -> None:
    cal = Calibration(level=0.8, period_days=1, edges=[10.0],
                      lower={b: [0.5, -2.0] for b in ("1-7", "8-14", "15-28", "29+", ALL)},
                      upper={b: [1.0, 2.0] for b in ("1-7", "8-14", "15-28", "29+", ALL)},
                      rows=dict.fromkeys(("1-7", "8-14", "15-28", "29+", ALL), 1000))
    forecast = np.array([3.0, 99.0, 0.5, 99.0])
    low, high = Bounds(cal)(forecast, np.array([1, 9, 30, 2]),
                            np.array([False, False, False, True]))
    # a cell whose errors all lie above its forecasts still holds the forecast itself
    assert low[0] == 3.0 and high[0] == pytest.approx(3.0 + 1.0 * 4.0)
    # a bound is the forecast plus a quantile times (forecast + 1), never below 0
    assert (low[1], high[1]) == pytest.approx((0.0, 99.0 + 2.0 * 100))
    assert low[2] == 0.5 and (low >= 0).all()
    assert (low[3], high[3]) == (0.0, 0.0)
    assert (low <= np.where([0, 0, 0, 1], 0, forecast)).all()


def test_the_calibration_round_trips_through_json() -> None:
    backtest = _backtest(dict.fromkeys(ORIGINS, (np.arange(1, 201) - 100.0) / 1000))
    cal = calibrate(backtest, "challenger", 0.9, 1)
    again = Calibration.from_json(json.loads(json.dumps(cal.to_json())))
    assert again == cal
    forecast, horizon = np.array([5.0, 50.0, 5000.0]), np.array([1, 14, 28])
    np.testing.assert_array_equal(bounds(again, forecast, horizon),
                                  bounds(cal, forecast, horizon))


def test_level_outside_0_1_is_refused() -> None:
    with pytest.raises(ValueError, match="interval level"):
        calibrate(_backtest({ORIGINS[0]: np.zeros(10)}), "challenger", 1.0, 1)
