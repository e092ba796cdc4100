"""The backtest plan and runner on small hand-made panels (no model: simple refit stand-ins)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from ml_assets.evaluation.baselines import moving_average, seasonal_naive
from ml_assets.evaluation.report import (
    BacktestSpec,
    Candidate,
    category_column,
    plan_origins,
    report_tables,
    run_backtest,
)

START = dt.date(2024, 1, 1)
SPEC = BacktestSpec(horizon=7, period_days=1, season=7, ma_window=7, train_window=28)


def _panel(days: int) -> pl.DataFrame:
    dates = [START + dt.timedelta(days=i) for i in range(days)]
    rows = [(d, s, "i1", float((i % 7) + (3 if s == "s2" else 0)), "food" if s == "s1" else "drink")
            for i, d in enumerate(dates) for s in ("s1", "s2")]
    return pl.DataFrame(rows, schema=["date", "store_id", "item_id", "units_sold",
                                      "item_category"], orient="row")


def _rows_at(panel: pl.DataFrame, closed: str | None = None):  # noqa: ANN202
    """A stand-in for `rows_at_origin` on the panel: its rows after the origin, with the
    origin-relative columns the served rows carry (`finish_rows`); store `closed` forced 0."""
    def rows_at(origin: dt.date) -> tuple[pl.DataFrame, str]:
        rows = panel.filter(pl.col("date") > origin,
                            pl.col("date") <= origin + dt.timedelta(days=SPEC.horizon))
        rows = rows.with_columns(origin=pl.lit(origin, pl.Date),
                                 horizon=((pl.col("date") - pl.lit(origin)).dt.total_days()
                                          ).cast(pl.Int32))
        return rows.with_columns(
            seasonal_naive(panel.filter(pl.col("date") <= origin), rows, 7, 1),
            moving_average(panel.filter(pl.col("date") <= origin), rows, 7, 1),
            forced_zero=pl.col("store_id").eq_missing(closed)), "actuals"
    return rows_at


def _dates(days: int) -> pl.Series:
    return pl.Series([START + dt.timedelta(days=i) for i in range(days)])


def test_full_plan_has_three_origins_each_over_the_whole_horizon() -> None:
    origins, horizon = plan_origins(_dates(60), SPEC)
    last = START + dt.timedelta(days=59)
    assert horizon == 7
    assert origins == [last - dt.timedelta(days=21), last - dt.timedelta(days=14),
                       last - dt.timedelta(days=7)]


def test_short_history_gets_fewer_origins_then_one_shortened_one() -> None:
    # 7 days of lags + 2 horizons fit in 22 days: two full origins
    origins, horizon = plan_origins(_dates(22), SPEC)
    assert (len(origins), horizon) == (2, 7)
    # 10 days: no full origin; one at the first day with lags, over the 2 days that remain
    origins, horizon = plan_origins(_dates(10), SPEC)
    assert (origins, horizon) == ([START + dt.timedelta(days=7)], 2)
    with pytest.raises(ValueError, match="cannot be backtested"):
        plan_origins(_dates(8), SPEC)


def test_each_candidate_trains_only_up_to_its_own_end() -> None:
    panel = _panel(60)
    seen: dict[str, list[dt.date]] = {"fresh": [], "stale": []}

    def recorder(name: str):  # noqa: ANN202
        def refit(train: pl.DataFrame, rows: pl.DataFrame) -> np.ndarray:
            seen[name].append(train.get_column("date").max())
            assert train.get_column("date").min() > train.get_column("date").max() - \
                dt.timedelta(days=28)  # the training window
            return np.full(rows.height, train.get_column("units_sold").mean())
        return refit

    table, sources = run_backtest(panel, _rows_at(panel), SPEC, [
        Candidate("fresh", recorder("fresh")), Candidate("stale", recorder("stale"), lag_days=5)])
    assert set(sources.values()) == {"actuals"}
    origins = sorted(set(table.get_column("origin")))
    assert seen["fresh"] == origins
    assert seen["stale"] == [o - dt.timedelta(days=5) for o in origins]
    assert table.height == 3 * 7 * 2
    assert set(table.columns) >= {"fresh", "stale", "seasonal_naive", "moving_average_7",
                                  "category", "horizon"}
    # the weekly pattern is exact, so seasonal naive is perfect here
    assert (table.get_column("seasonal_naive") == table.get_column("units_sold")).all()


def test_report_tables_cover_every_scope_on_the_same_rows() -> None:
    panel = _panel(60)
    table, _ = run_backtest(panel, _rows_at(panel), SPEC, [Candidate(
        "mean", lambda train, rows: np.full(rows.height, train["units_sold"].mean()))])
    tables = report_tables(table, panel, SPEC, ["mean", "seasonal_naive"])
    assert set(tables) == {"overall", "horizon_bucket", "category", "store"}
    overall = dict(tables["overall"].select("forecaster", "wape").iter_rows())
    assert overall["seasonal_naive"] == 0.0 and overall["mean"] > 0.2
    assert set(tables["category"].get_column("category")) == {"food", "drink"}
    assert tables["overall"].get_column("n").to_list() == [42, 42]


def test_forced_rows_are_zero_for_every_forecaster_and_left_out_of_the_metrics() -> None:
    panel = _panel(60)
    table, _ = run_backtest(panel, _rows_at(panel, closed="s2"), SPEC, [Candidate(
        "mean", lambda train, rows: np.full(rows.height, train["units_sold"].mean()))])
    forced = table.filter(pl.col("forced_zero"))
    assert forced.height == 21
    for name in ("mean", "seasonal_naive", "moving_average_7"):
        assert forced.get_column(name).to_list() == [0.0] * 21
    tables = report_tables(table, panel, SPEC, ["mean", "seasonal_naive"])
    assert tables["overall"].get_column("n").to_list() == [21, 21]
    assert set(tables["store"].get_column("store_id")) == {"s1"}


def test_category_prefers_item_category_then_item_then_store_attributes() -> None:
    frame = pl.DataFrame({"store_type": ["a"], "store_region": ["x"], "item_dept": ["d"],
                          "item_category": [None]}, schema_overrides={"item_category": pl.Utf8})
    assert category_column(frame) == "item_dept"
    assert category_column(frame.drop("item_dept")) == "store_type"
    assert category_column(pl.DataFrame({"price": [1.0]})) is None
