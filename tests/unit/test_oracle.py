"""The simulated world's oracle forecaster: the true expected demand, joined to the backtest's
rows, scored like any forecaster, and the challenger's WAPE read against it."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from ml_assets.evaluation.oracle import ORACLE, oracle_ratios, with_oracle
from ml_assets.evaluation.report import BacktestSpec, report_tables
from ml_assets.simulation import World, WorldConfig

DAY = dt.date(2025, 1, 6)


def _backtest() -> pl.DataFrame:
    dates = [DAY, DAY + dt.timedelta(days=1), DAY + dt.timedelta(days=9)]
    return pl.DataFrame({
        "store_id": ["s1", "s1", "s1"], "item_id": ["i1", "i1", "i1"], "date": dates,
        "origin": [DAY - dt.timedelta(days=1)] * 3, "horizon": [1, 2, 10],
        "units_sold": [10.0, 0.0, 20.0], "forced_zero": [False, True, False],
        "category": ["a"] * 3, "challenger": [14.0, 0.0, 26.0]})


def test_oracle_is_the_expected_demand_of_each_row_and_0_where_forced() -> None:
    expected = pl.DataFrame({"date": [DAY, DAY + dt.timedelta(days=1)],
                             "store_id": ["s1", "s1"], "item_id": ["i1", "i1"],
                             "expected": [11.0, 7.0]})
    out = with_oracle(_backtest(), expected)
    assert out.columns == [*_backtest().columns, ORACLE]
    assert out.get_column(ORACLE).to_list() == [11.0, 0.0, None]  # none known for day 10


def test_ratio_of_wapes_overall_and_by_horizon_bucket() -> None:
    backtest = _backtest().with_columns(pl.Series(ORACLE, [12.0, 0.0, 22.0]),
                                        seasonal_naive=pl.lit(0.0))
    labelled = backtest.select("store_id", "item_id", "date", "units_sold")
    spec = BacktestSpec(horizon=14, period_days=1, season=7, ma_window=7, train_window=28)
    tables = report_tables(backtest, labelled, spec, ["challenger", ORACLE])
    ratios = oracle_ratios(tables)
    # challenger: |4| + |6| = 10 over 30; oracle: 2 + 2 = 4 over 30; the forced row counts nowhere
    assert ratios == pytest.approx({"all": 10 / 4, "1-7": 4 / 2, "8-14": 6 / 2})


def test_the_world_expects_its_own_sales_on_average() -> None:
    world = World(WorldConfig(seed=3, n_stores=2, n_items=5, start_date=dt.date(2024, 1, 1)))
    start, end = dt.date(2024, 3, 4), dt.date(2024, 5, 27)
    joined = world.sales(start, end).join(world.expected(start, end),
                                          on=["date", "store_id", "item_id"])
    assert joined.height == world.sales(start, end).height
    ratio = joined.get_column("units_sold").sum() / joined.get_column("expected").sum()
    assert ratio == pytest.approx(1.0, abs=0.1)


def test_as_of_an_origin_the_world_expects_what_it_knew_then() -> None:
    """Known at or after the last day, the expectation is the oracle's; known earlier, it
    misses the popularity's later weekly shocks, and more so the further ahead, while the
    total stays near (the shocks' mean is taken, not a draw)."""
    world = World(WorldConfig(seed=3, n_stores=2, n_items=20, start_date=dt.date(2024, 1, 1)))
    start, end = dt.date(2024, 6, 3), dt.date(2024, 7, 29)
    keys = ["date", "store_id", "item_id"]
    truth = world.expected(start, end)
    late = world.expected(start, end, known_at=end)
    assert late.equals(truth)
    early = world.expected(start, end, known_at=start - dt.timedelta(days=1))
    gap = truth.join(early, on=keys, suffix="_early").with_columns(
        error=(pl.col("expected") - pl.col("expected_early")).abs(),
        week=(pl.col("date") - start).dt.total_days() // 7)
    by_week = gap.group_by("week").agg(pl.col("error").sum() / pl.col("expected").sum()
                                       ).sort("week").get_column("error")
    assert 0 < by_week[0] < by_week[len(by_week) - 1]
    total = gap.get_column("expected_early").sum() / gap.get_column("expected").sum()
    assert total == pytest.approx(1.0, abs=0.15)


def test_an_oracle_with_origins_joins_on_them() -> None:
    backtest = _backtest()
    origin = DAY - dt.timedelta(days=1)
    expected = pl.DataFrame({"date": [DAY, DAY], "store_id": ["s1", "s1"],
                             "item_id": ["i1", "i1"], "origin": [origin, DAY],
                             "expected": [9.0, 99.0]})
    out = with_oracle(backtest, expected, "origin_oracle")
    assert out.get_column("origin_oracle").to_list() == [9.0, 0.0, None]
