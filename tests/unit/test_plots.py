"""Backtest plots (ml_assets.evaluation.plots): every function returns a decodable PNG, also
on degenerate inputs, and representative_series picks the intended series."""

from __future__ import annotations

import datetime as dt
import io

import matplotlib.pyplot as plt
import numpy as np
import polars as pl
import pytest
from matplotlib.dates import date2num
from PIL import Image

from ml_assets.evaluation.plots import (
    error_by_horizon_png,
    feature_importance_png,
    forecast_vs_actual_figure,
    forecast_vs_actual_png,
    period_unit,
    report_images,
    representative_series,
)

FORECASTERS = ["challenger", "champion", "seasonal_naive", "moving_average_28"]
START = dt.date(2024, 1, 1)


def _decode(png: bytes) -> tuple[int, int]:
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(io.BytesIO(png)) as img:
        img.load()
        return img.size


def _frame(levels: dict[tuple[str, str], float], origins: int = 2, horizon: int = 7,
           zero_every: dict[tuple[str, str], int] | None = None) -> pl.DataFrame:
    """A backtest frame: `origins` tiled windows of `horizon` days per series; the actual is
    the series' level (0 on every k-th day for the series in `zero_every`), forecasts are
    the level times a constant factor, and `champion` is all null."""
    rows = []
    for (store, item), level in levels.items():
        k = (zero_every or {}).get((store, item))
        for o in range(origins):
            origin = START + dt.timedelta(days=o * horizon)
            for h in range(1, horizon + 1):
                day = o * horizon + h
                actual = 0.0 if k and day % k else level
                rows.append({"store_id": store, "item_id": item,
                             "date": origin + dt.timedelta(days=h), "origin": origin,
                             "horizon": h, "units_sold": actual, "challenger": level * 1.1,
                             "champion": None, "seasonal_naive": level * 0.8 + h,
                             "moving_average_28": level})
    return pl.DataFrame(rows, schema={
        "store_id": pl.Utf8, "item_id": pl.Utf8, "date": pl.Date, "origin": pl.Date,
        "horizon": pl.Int32, "units_sold": pl.Float64, "challenger": pl.Float64,
        "champion": pl.Float64, "seasonal_naive": pl.Float64, "moving_average_28": pl.Float64})


LEVELS = {("S1", f"I{i}"): float(v) for i, v in enumerate([50, 3, 20, 10, 8, 30, 5])}
FRAME = _frame(LEVELS, zero_every={("S1", "I1"): 2})  # I1: slow, zero every other day


@pytest.fixture(autouse=True)
def _no_open_figures():
    yield
    assert plt.get_fignums() == []  # nothing leaked into pyplot's global state


def test_representative_series_picks_top_zero_heavy_and_median():
    picks = representative_series(FRAME)
    # totals (14 days): I0 700, I5 420, I2 280, I3 140, I4 112, I6 70, I1 21 (zeros 50 %)
    assert picks[:3] == [("S1", "I0"), ("S1", "I1"), ("S1", "I3")]
    assert len(picks) == 4 and len(set(picks)) == 4
    assert representative_series(FRAME) == picks  # deterministic
    assert representative_series(FRAME.reverse()) == picks  # independent of row order


def test_representative_series_small_inputs():
    assert representative_series(FRAME.head(0)) == []
    assert representative_series(FRAME, n=1) == [("S1", "I0")]
    one = FRAME.filter(pl.col("item_id") == "I2")
    assert representative_series(one) == [("S1", "I2")]
    two = FRAME.filter(pl.col("item_id").is_in(["I2", "I4"]))
    assert representative_series(two, n=4) == [("S1", "I2"), ("S1", "I4")]


def test_representative_series_without_zeros_picks_the_slowest():
    frame = _frame({("A", "x"): 9.0, ("A", "y"): 1.0, ("B", "z"): 5.0})
    assert representative_series(frame, n=2) == [("A", "x"), ("A", "y")]


def test_forecast_vs_actual_png_is_small_and_valid():
    png = forecast_vs_actual_png(FRAME, FORECASTERS, representative_series(FRAME))
    width, height = _decode(png)
    assert width <= 1000 and height <= 1000
    assert plt.imread(io.BytesIO(png)).ndim == 3


def test_forecast_vs_actual_png_edge_cases():
    gappy = FRAME.with_columns(
        units_sold=pl.when(pl.col("horizon") == 3).then(None).otherwise(pl.col("units_sold")))
    _decode(forecast_vs_actual_png(gappy, FORECASTERS, [("S1", "I0")]))  # single series, gaps
    no_cols = FRAME.drop("champion", "seasonal_naive")
    _decode(forecast_vs_actual_png(no_cols, FORECASTERS, [("S1", "I0"), ("S9", "nope")]))
    _decode(forecast_vs_actual_png(FRAME.head(0), FORECASTERS, [("S1", "I0")]))
    _decode(forecast_vs_actual_png(FRAME, FORECASTERS, []))
    _decode(forecast_vs_actual_png(FRAME, [], [("S1", "I0"), ("S1", "I1"), ("S1", "I2")]))


def test_error_by_horizon_png_valid_and_edge_cases():
    _decode(error_by_horizon_png(FRAME, FORECASTERS, period_days=1))
    _decode(error_by_horizon_png(FRAME.drop("champion"), FORECASTERS, period_days=7))
    _decode(error_by_horizon_png(FRAME.head(0), FORECASTERS, period_days=1))
    _decode(error_by_horizon_png(FRAME, ["champion", "missing"], period_days=1))
    zero_actuals = FRAME.with_columns(units_sold=pl.lit(0.0))  # WAPE is nan everywhere
    _decode(error_by_horizon_png(zero_actuals, FORECASTERS, period_days=1))


def test_feature_importance_png():
    gains = {f"f{i}": float(i) for i in range(40)} | {"bad": float("nan")}
    size_top = _decode(feature_importance_png(gains, top=20))
    size_few = _decode(feature_importance_png({"lag_7": 3.0, "price": 1.5}))
    assert size_top[1] > size_few[1]  # the height grows with the number of bars
    _decode(feature_importance_png({}))


def test_feature_importance_from_xgboost():
    xgb = pytest.importorskip("xgboost")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    booster = xgb.train({"max_depth": 2, "nthread": 1},
                        xgb.DMatrix(x, label=x[:, 0] * 2, feature_names=["a", "b", "c"]),
                        num_boost_round=5)
    _decode(feature_importance_png(booster.get_score(importance_type="gain")))


def _origin_lines(ax) -> list[float]:
    """The x positions (matplotlib date numbers) of the dashed vertical lines on `ax`."""
    return sorted(float(date2num(line.get_xdata()[0])) for line in ax.get_lines()
                  if len(set(line.get_xdata())) == 1 and line.get_linestyle() == "--")


def test_forecast_vs_actual_marks_each_origin_and_labels_the_axes():
    frame = _frame({("S1", "I0"): 20.0, ("S1", "I1"): 5.0}, origins=3)
    fig = forecast_vs_actual_figure(frame, ["challenger"], [("S1", "I0"), ("S1", "I1")])
    origins = [date2num(START + dt.timedelta(days=7 * o)) for o in range(3)]
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == 2
    for ax in panels:  # every panel marks every origin, at the origin's date
        assert _origin_lines(ax) == pytest.approx(origins)
        assert ax.get_ylabel() == "units sold per day"
        assert ax.get_xlabel() == "date"
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["actual", "challenger", "backtest origin"]
    # no origin column: nothing to mark, and no legend entry that marks nothing
    bare = forecast_vs_actual_figure(frame.drop("origin"), ["challenger"], [("S1", "I0")])
    assert _origin_lines(bare.axes[0]) == []
    assert "backtest origin" not in [t.get_text() for t in bare.legends[0].get_texts()]


def test_forecast_vs_actual_axis_units_follow_the_period():
    assert (period_unit(1), period_unit(7), period_unit(14)) == ("day", "week", "14-day period")
    weekly = forecast_vs_actual_figure(FRAME, ["challenger"], [("S1", "I0")], period_days=7)
    assert weekly.axes[0].get_ylabel() == "units sold per week"
    _decode(forecast_vs_actual_png(FRAME, ["challenger"], [("S1", "I0")], period_days=7))


def test_report_images_are_the_three_plots():
    images = report_images(FRAME, FORECASTERS, 1, {"lag_7": 2.0})
    assert list(images) == ["forecast_vs_actual", "error_by_horizon", "feature_importance"]
    for png in images.values():
        _decode(png)
    _decode(report_images(FRAME, FORECASTERS, 1, {})["feature_importance"])  # a baseline
