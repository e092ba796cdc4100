"""Realized accuracy: every forecast gets a status, late actuals are flagged, what-if requests
are left out and counted, and the metrics match a hand computation."""

from __future__ import annotations

import datetime as dt
import math

import polars as pl
import pytest

from ml_assets.monitoring.accuracy import (
    accuracy_tables,
    actuals_frame,
    batch_forecasts_frame,
    join_actuals,
    logged_forecasts_frame,
    long_table,
    status_counts,
    window_error,
)

D = dt.date(2025, 3, 1)


def _day(n: int) -> dt.date:
    return D + dt.timedelta(days=n)


BATCH = pl.DataFrame({
    "origin": [D] * 5, "date": [_day(1), _day(1), _day(2), _day(2), _day(3)],
    "store_id": ["S1", "S2", "S1", "S2", "S1"], "item_id": ["I1"] * 5,
    "horizon": [1, 1, 2, 2, 3], "units_forecast": [10.0, 5.0, 12.0, 4.0, 9.0],
    "model_version": ["3"] * 5, "model_run_id": ["r"] * 5, "features_delta_version": [1] * 5})
SALES = pl.DataFrame({
    "date": [_day(1), _day(1), _day(2)], "store_id": ["S1", "S2", "S1"], "item_id": ["I1"] * 3,
    "units_sold": [8.0, 5.0, 15.0],
    # S1's day 2 arrived in the next day's file: late
    "source_file": ["sales_2025-03-02.csv", "sales_2025-03-02.csv", "sales_2025-03-04.csv"]})
LOG = pl.DataFrame({
    "features_origin": [D] * 4, "date": [_day(1)] * 4, "store_id": ["S1"] * 4,
    "item_id": ["I1"] * 4, "model_version": ["3"] * 4, "horizon": [1] * 4,
    "units": [11.0, 13.0, 20.0, 30.0],
    "price": [None, None, 2.5, None], "on_promo": [None, None, None, 1]},
    schema_overrides={"price": pl.Float64, "on_promo": pl.Int8})


def test_statuses_cover_every_forecast_and_flag_late_actuals() -> None:
    joined = join_actuals(batch_forecasts_frame(BATCH), actuals_frame(SALES))
    assert joined.height == BATCH.height
    by_key = {(r["date"], r["store_id"]): (r["status"], r["late"])
              for r in joined.iter_rows(named=True)}
    assert by_key == {(_day(1), "S1"): ("matched", False), (_day(1), "S2"): ("matched", False),
                      (_day(2), "S1"): ("matched", True), (_day(2), "S2"): ("missing", False),
                      (_day(3), "S1"): ("pending", False)}
    assert status_counts(joined) == {"matched": 3, "missing": 1, "pending": 1, "late": 1}


def test_logged_what_ifs_are_left_out_and_repeats_count_once() -> None:
    logged, what_if = logged_forecasts_frame(LOG)
    assert what_if == 2
    assert logged.to_dicts() == [{"source": "online", "origin": D, "date": _day(1),
                                  "store_id": "S1", "item_id": "I1", "horizon": 1,
                                  "model_version": "3", "forecast": 12.0}]


def test_metrics_by_scope_match_a_hand_computation() -> None:
    logged, _ = logged_forecasts_frame(LOG)
    forecasts = pl.concat([batch_forecasts_frame(BATCH), logged])
    joined = join_actuals(forecasts, actuals_frame(SALES))
    cats = pl.DataFrame({"item_id": ["I1"], "category": ["food"]})
    tables = accuracy_tables(joined, 1, cats)
    # batch: |10-8| + |5-5| + |12-15| = 5 over 28; online: |12-8| = 4 over 8
    overall = tables["overall"].row(0, named=True)
    assert overall["wape"] == pytest.approx(9 / 36) and overall["n"] == 4
    assert overall["bias"] == pytest.approx((2 + 0 - 3 + 4) / 36)
    source = {r["source"]: r["wape"] for r in tables["source"].iter_rows(named=True)}
    assert source == {"batch": pytest.approx(5 / 28), "online": pytest.approx(4 / 8)}
    day = {r["date"]: r["n"] for r in tables["day"].iter_rows(named=True)}
    assert day == {_day(1): 3, _day(2): 1}
    assert tables["category"].get_column("category").to_list() == ["food"]
    long = long_table(tables)
    assert set(long.get_column("scope")) == {"overall", "source", "model_version", "day",
                                             "horizon_bucket", "store", "category"}
    assert long.filter(pl.col("scope") == "overall").get_column("key").to_list() == ["all"]
    wape, _, n = window_error(joined, _day(1), 1)
    assert (wape, n) == (pytest.approx((2 + 0 + 4) / 21), 3)
    wape, _, n = window_error(joined, _day(-5), 3)  # before any forecast
    assert math.isnan(wape) and n == 0
