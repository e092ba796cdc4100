"""Origin-relative features: values by hand, point-in-time correctness, ids never matter."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from ml_assets.features.recent import (
    pooled_at,
    pooled_columns,
    recent_columns,
    recent_features,
    sampled_horizon,
)
from ml_assets.features.transforms import SERIES, FeatureSpec

SPEC = FeatureSpec(horizon=14)
START = dt.date(2025, 1, 6)  # a Monday


def _sales(days: int, store: str = "S1", value: object = None) -> pl.DataFrame:
    units = [float(i) if value is None else value for i in range(days)]
    return pl.DataFrame({"date": [START + dt.timedelta(days=i) for i in range(days)],
                         "store_id": store, "item_id": "I1", "units_sold": units})


def _row(day: int, horizon: int, store: str = "S1") -> pl.DataFrame:
    return pl.DataFrame({"date": [START + dt.timedelta(days=day)], "store_id": store,
                         "item_id": "I1", "horizon": pl.Series([horizon], dtype=pl.Int32)})


def test_values_at_the_origin_by_hand() -> None:
    # units on day i are i: the origin of a day-40 row 3 days ahead is day 37
    got = recent_features(_sales(60), _row(40, 3), SPEC).row(0, named=True)
    assert got["horizon"] == 3
    assert got["recent_last"] == 37.0
    assert got["recent_mean_7"] == pytest.approx(np.mean(range(31, 38)))
    assert got["recent_mean_28"] == pytest.approx(np.mean(range(10, 38)))
    assert got["recent_same_day"] == 33.0  # the latest same weekday up to day 37: day 33
    assert got["recent_same_day_mean"] == pytest.approx(np.mean([33, 26, 19, 12]))
    # one series: the store's total is the series; its last 7 days against its last 91 (0..37)
    assert got["store_trend_7"] == pytest.approx(np.mean(range(31, 38)) / np.mean(range(38)))


def test_the_store_trend_pools_the_store_s_series() -> None:
    two = pl.concat([_sales(60), _sales(60, value=10.0).with_columns(item_id=pl.lit("I2"))])
    got = recent_features(two, _row(40, 3), SPEC).row(0, named=True)
    total = np.arange(60) + 10.0
    assert got["store_trend_28"] == pytest.approx(total[10:38].mean() / total[:38].mean())


def test_nothing_after_the_origin_is_read() -> None:
    history = _sales(60)
    rows = pl.concat([_row(day, h) for day in (30, 45, 59) for h in (1, 7, 14)])
    before = recent_features(history, rows, SPEC)
    # every value after each row's own origin changes: none of its features may
    for row, (day, h) in zip(before.iter_rows(named=True),
                             [(d, h) for d in (30, 45, 59) for h in (1, 7, 14)], strict=True):
        origin = START + dt.timedelta(days=day - h)
        changed = history.with_columns(
            pl.when(pl.col("date") > origin).then(pl.lit(1e6)).otherwise(pl.col("units_sold"))
            .alias("units_sold"))
        after = recent_features(changed, _row(day, h), SPEC).row(0, named=True)
        assert after == row


def test_an_unknown_series_or_an_empty_history_gives_nulls() -> None:
    got = recent_features(_sales(60), _row(40, 3, store="S9"), SPEC).row(0, named=True)
    # a new store: nothing of its own, but the item's level across the other stores is known
    assert [c for c in recent_columns(SPEC)[1:] if got[c] is not None] == [
        "item_trend_7", "item_trend_28", "item_level"]
    empty = recent_features(_sales(0), _row(40, 3), SPEC)
    assert empty.columns == recent_columns(SPEC) and empty.item(0, "recent_last") is None


def test_sampled_horizons_cover_1_to_h_and_ignore_ids() -> None:
    days = 400
    rows = pl.concat([_sales(days, store=s, value=v) for s, v in (("A", 1.0), ("B", 2.0))])
    rows = rows.with_columns(lag_14=pl.col("units_sold"), mean_28=pl.col("units_sold"))
    drawn = rows.with_columns(sampled_horizon(rows, SPEC))["horizon"]
    assert drawn.min() == 1 and drawn.max() == SPEC.horizon
    assert drawn.n_unique() == SPEC.horizon
    # 1 + H u^2: horizons up to H/4 take half the draws (u < 1/2), the last one about 1/2H
    assert 0.45 < (drawn <= SPEC.horizon // 4).mean() < 0.6
    assert (drawn == SPEC.horizon).mean() > 0.25 / SPEC.horizon
    renamed = rows.with_columns(store_id=pl.col("store_id").replace({"A": "Z", "B": "Y"}))
    assert renamed.with_columns(sampled_horizon(renamed, SPEC))["horizon"].equals(drawn)


def test_pooled_at_equals_the_pooled_columns_of_rows_at_that_origin() -> None:
    two = pl.concat([_sales(60), _sales(60, value=10.0).with_columns(item_id=pl.lit("I2"))])
    origin = START + dt.timedelta(days=40)
    rows = two.select(SERIES).unique().sort(SERIES).with_columns(
        date=pl.lit(origin + dt.timedelta(days=5)), horizon=pl.lit(5, pl.Int32))
    via_rows = recent_features(two, rows, SPEC).select(pooled_columns(SPEC))
    assert pooled_at(two, origin, SPEC).sort(SERIES).drop(SERIES).equals(via_rows)
