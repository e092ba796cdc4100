"""Tests for the synthetic retail world (ml_assets.simulation)."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from ml_assets.simulation import SALES_SCHEMA, Scenario, World, WorldConfig
from ml_assets.simulation import world as world_module

SMALL = WorldConfig(n_stores=4, n_items=60)
START = date(2024, 1, 1)


def _days(d: date, n: int) -> date:
    return d + timedelta(days=n)


@pytest.fixture(scope="module")
def year_sales() -> pl.DataFrame:
    """The default world over its first year: enough rows for the behavioural checks."""
    return World(WorldConfig()).sales(START, _days(START, 366))


# --- determinism -------------------------------------------------------------------------------


def test_window_equals_concatenation_of_single_days() -> None:
    world = World(SMALL)
    first = date(2024, 12, 10)  # crosses Christmas, a year end and several promo weeks
    window = world.sales(first, _days(first, 30))
    singles = pl.concat([world.sales(_days(first, i), _days(first, i + 1)) for i in range(30)])
    assert window.height > 0
    assert_frame_equal(window, singles)


def test_chunk_size_does_not_change_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    world = World(SMALL)
    reference = world.sales(START, _days(START, 40))
    monkeypatch.setattr(world_module, "_CHUNK_CELLS", 7 * 4 * 60)  # 7-day chunks
    assert_frame_equal(world.sales(START, _days(START, 40)), reference)


def test_same_config_equal_and_other_seed_differs() -> None:
    a = World(SMALL).sales(START, _days(START, 20))
    b = World(SMALL).sales(START, _days(START, 20))
    assert_frame_equal(a, b)
    assert_frame_equal(World(SMALL).items, World(SMALL).items)
    other = World(WorldConfig(seed=8, n_stores=4, n_items=60)).sales(START, _days(START, 20))
    assert not other.equals(a)


# --- contract ----------------------------------------------------------------------------------


def test_sales_contract(year_sales: pl.DataFrame) -> None:
    assert year_sales.schema == pl.Schema(SALES_SCHEMA)
    assert list(year_sales.columns) == [
        "date", "store_id", "item_id", "units_sold", "price", "on_promo"]
    assert year_sales["units_sold"].min() >= 0
    assert year_sales["price"].min() > 0
    assert set(year_sales["on_promo"].unique().to_list()) == {0, 1}
    assert year_sales.null_count().sum_horizontal().item() == 0
    keys = ["date", "store_id", "item_id"]
    assert year_sales.select(keys).is_duplicated().sum() == 0
    assert year_sales.select(keys).equals(year_sales.select(keys).sort(keys))


def test_attribute_tables() -> None:
    world = World(WorldConfig())
    assert world.stores["store_id"].to_list()[:2] == ["S001", "S002"]
    assert set(world.stores["store_type"].unique()) <= {"urban", "suburban", "rural"}
    assert world.stores.schema["open_date"] == pl.Date
    assert world.items["item_id"].to_list()[0] == "I0001"
    assert world.items.schema["launch_date"] == pl.Date
    assert world.items.schema["retire_date"] == pl.Date
    assert world.items["description"].str.contains(",").all()
    cal = world.calendar(START, date(2025, 1, 1))
    assert cal.height == 366 and cal.schema["is_holiday"] == pl.Int8
    names = set(cal["event_name"].drop_nulls())
    assert {"Christmas Day", "New Year's Day", "Easter Sunday", "Black Friday"} <= names
    assert cal.filter(pl.col("date") == date(2024, 12, 25))["is_holiday"].item() == 1


def test_empty_range_has_contract_schema() -> None:
    assert World(SMALL).sales(START, START).schema == pl.Schema(SALES_SCHEMA)


# --- behaviours --------------------------------------------------------------------------------


def test_demand_level_gives_signal(year_sales: pl.DataFrame) -> None:
    daily = year_sales.group_by("date").agg(pl.col("units_sold").sum())["units_sold"]
    assert 15_000 <= daily.median() <= 40_000
    series_mean = year_sales.group_by("store_id", "item_id").agg(pl.col("units_sold").mean())
    assert 1.0 <= series_mean["units_sold"].median() <= 10.0


def test_promo_days_sell_more_for_the_same_items(year_sales: pl.DataFrame) -> None:
    by_item = (
        year_sales.group_by("item_id", "on_promo").agg(pl.col("units_sold").mean())
        .pivot(on="on_promo", index="item_id", values="units_sold").drop_nulls()
    )
    assert by_item.height >= 20
    ratio = by_item["1"] / by_item["0"]
    assert ratio.median() > 1.2
    assert (ratio > 1).mean() > 0.8


def test_weekends_differ_from_weekdays(year_sales: pl.DataFrame) -> None:
    weekday = year_sales["date"].dt.weekday()
    saturday = year_sales.filter(weekday == 6)["units_sold"].mean()
    midweek = year_sales.filter(weekday.is_in([2, 3]))["units_sold"].mean()
    assert saturday > 1.1 * midweek


def test_slow_movers_have_mostly_zeros(year_sales: pl.DataFrame) -> None:
    zero_share = year_sales.group_by("item_id").agg((pl.col("units_sold") == 0).mean())
    assert (zero_share["units_sold"] > 0.5).mean() > 0.1


def test_launches_and_retirements_bound_the_rows(year_sales: pl.DataFrame) -> None:
    items = World(WorldConfig()).items
    span = year_sales.group_by("item_id").agg(
        pl.col("date").min().alias("first"), pl.col("date").max().alias("last"))
    joined = items.join(span, on="item_id", how="left")
    late = joined.filter(pl.col("launch_date") > START)
    assert late.height > 0
    assert late.filter(pl.col("first") < pl.col("launch_date")).height == 0
    in_window = late.filter(pl.col("launch_date") < date(2024, 12, 1))
    assert in_window.height > 0 and in_window["first"].null_count() == 0
    retired = joined.filter(pl.col("retire_date") < date(2024, 12, 31))
    assert retired.height > 0
    assert retired.filter(pl.col("last") > pl.col("retire_date")).height == 0


def test_level_shift_scales_units_after_start() -> None:
    shift_start = date(2024, 3, 1)
    base = World(SMALL).sales(START, _days(START, 120))
    shifted_cfg = WorldConfig(n_stores=4, n_items=60,
                              scenarios=(Scenario("level_shift", shift_start, 1.5),))
    shifted = World(shifted_cfg).sales(START, _days(START, 120))
    before = pl.col("date") < shift_start
    assert_frame_equal(shifted.filter(before), base.filter(before))
    ratio = shifted.filter(~before)["units_sold"].sum() / base.filter(~before)["units_sold"].sum()
    assert 1.4 < ratio < 1.6


def test_price_shock_raises_prices_and_lowers_demand() -> None:
    cfg = WorldConfig(n_stores=4, n_items=60, scenarios=(
        Scenario("price_shock", date(2024, 2, 1), 1.25, stores=("S002",)),))
    base = World(SMALL).sales(START, _days(START, 60))
    shocked = World(cfg).sales(START, _days(START, 60))
    after = (pl.col("date") >= date(2024, 2, 1)) & (pl.col("store_id") == "S002")
    price_ratio = shocked.filter(after)["price"].sum() / base.filter(after)["price"].sum()
    assert 1.2 < price_ratio < 1.3
    assert shocked.filter(after)["units_sold"].sum() < 0.9 * base.filter(after)["units_sold"].sum()
    assert_frame_equal(shocked.filter(~after), base.filter(~after))


def test_promo_regime_increases_promo_share() -> None:
    cfg = WorldConfig(n_stores=4, n_items=60,
                      scenarios=(Scenario("promo_regime", date(2024, 2, 1), 2.5),))
    after = pl.col("date") >= date(2024, 2, 1)
    base = World(SMALL).sales(START, _days(START, 90)).filter(after)
    regime = World(cfg).sales(START, _days(START, 90)).filter(after)
    assert regime["on_promo"].mean() > 1.5 * base["on_promo"].mean()


def test_new_store_opens_at_start_without_touching_others() -> None:
    opening = date(2024, 2, 15)
    cfg = WorldConfig(n_stores=4, n_items=60,
                      scenarios=(Scenario("new_store", opening, stores=("S900",)),))
    world = World(cfg)
    assert "S900" in world.stores["store_id"].to_list()
    sales = world.sales(START, _days(START, 90))
    new = sales.filter(pl.col("store_id") == "S900")
    assert new.height > 0 and new["date"].min() == opening
    base = World(SMALL).sales(START, _days(START, 90))
    assert_frame_equal(sales.filter(pl.col("store_id") != "S900"), base)


def test_new_store_id_may_sort_before_existing_ones() -> None:
    cfg = WorldConfig(n_stores=3, n_items=20,
                      scenarios=(Scenario("new_store", date(2024, 1, 5), stores=("A01",)),))
    sales = World(cfg).sales(START, _days(START, 10))
    keys = ["date", "store_id", "item_id"]
    assert sales.select(keys).equals(sales.select(keys).sort(keys))
    assert sales.filter(pl.col("store_id") == "A01")["date"].min() == date(2024, 1, 5)


# --- landing files -----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_write_landing(tmp_path: Path, fmt: str) -> None:
    world = World(SMALL)
    first, end = date(2024, 3, 30), date(2024, 4, 4)
    paths = world.write_landing(tmp_path, first, end, fmt=fmt)
    expected = [tmp_path / "sales" / f"sales_{_days(first, i).isoformat()}.{fmt}" for i in range(5)]
    assert paths == expected
    assert sorted((tmp_path / "sales").iterdir()) == expected  # no temp files left behind
    reader = pl.read_csv if fmt == "csv" else pl.read_parquet
    frames = [reader(p) for p in paths]
    if fmt == "csv":
        frames = [f.with_columns(pl.col("date").str.to_date()).cast(SALES_SCHEMA) for f in frames]
    for frame, day in zip(frames, range(5), strict=True):
        assert frame["date"].unique().to_list() == [_days(first, day)]
    assert_frame_equal(pl.concat(frames), world.sales(first, end))
    stores = pl.read_csv(tmp_path / "stores.csv")
    items = pl.read_csv(tmp_path / "items.csv")
    assert stores["store_id"].to_list() == world.stores["store_id"].to_list()
    assert items["description"].to_list() == world.items["description"].to_list()
    calendar = pl.read_csv(tmp_path / "calendar.csv", try_parse_dates=True)
    assert calendar["date"].min() == SMALL.start_date
    assert calendar["date"].max() == _days(end, 365)
