"""Tests for the synthetic retail world (ml_assets.simulation)."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from ml_assets.simulation import SALES_SCHEMA, Scenario, World, WorldConfig
from ml_assets.simulation import world as world_module
from ml_assets.simulation.landing import SCENARIOS_FILE, add_scenario, land
from ml_assets.simulation.world import PLAN_SCHEMA
from resources.settings import load_settings
from tests.conftest import small_world_env

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
        "date", "store_id", "item_id", "units_sold", "price", "on_promo", "open"]
    assert year_sales["units_sold"].min() >= 0
    assert year_sales["price"].min() > 0
    assert set(year_sales["on_promo"].unique().to_list()) == {0, 1}
    assert set(year_sales["open"].unique().to_list()) == {0, 1}
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


def test_write_landing_lands_plan_deliveries_with_their_days(tmp_path: Path) -> None:
    world = World(SMALL)
    plan_dir = tmp_path / "plan"
    world.write_landing(tmp_path, date(2024, 3, 30), date(2024, 4, 16))  # Saturday .. Monday
    mondays = [date(2024, 4, 1), date(2024, 4, 8), date(2024, 4, 15)]
    assert sorted(plan_dir.iterdir()) == [plan_dir / f"plan_{d}.csv" for d in mondays]
    world.write_landing(tmp_path, date(2024, 4, 16), date(2024, 4, 22))  # no Monday in it
    assert len(list(plan_dir.iterdir())) == 3
    world.write_landing(tmp_path, date(2024, 4, 22), date(2024, 4, 23))
    assert sorted(plan_dir.iterdir())[-1].name == "plan_2024-04-22.csv"
    assert len(list(plan_dir.iterdir())) == 4  # and no temp files left behind
    for d in [*mondays, date(2024, 4, 22)]:
        read = pl.read_csv(plan_dir / f"plan_{d}.csv", schema=PLAN_SCHEMA)
        assert_frame_equal(read, world.plan(d))
        assert read["date"].min() > d and read["date"].max() <= _days(d, 42)


def test_plan_file_format_and_store_level_closures(tmp_path: Path) -> None:
    world = World(SMALL)
    world.write_landing(tmp_path, date(2024, 3, 25), date(2024, 3, 26))  # Easter is March 31
    raw = pl.read_csv(tmp_path / "plan" / "plan_2024-03-25.csv", infer_schema=False)
    assert raw.columns == ["date", "store_id", "item_id", "on_promo", "price", "open"]
    closures = raw.filter(pl.col("open") == "0")
    assert closures.height > 0
    assert closures["item_id"].null_count() == closures.height  # an empty item_id
    assert closures["on_promo"].null_count() == closures["price"].null_count() == closures.height
    assert (closures["date"] == "2024-03-31").all()
    promos = raw.filter(pl.col("item_id").is_not_null(), pl.col("store_id").is_not_null())
    assert promos["open"].null_count() == promos.height  # the plan says nothing about it
    assert "1" in set(promos["on_promo"]) <= {"0", "1"}
    assert promos.filter(pl.col("on_promo") == "1")["price"].null_count() == 0
    # the price plan: one item-level row (no store) per item and day, with the regular price
    prices = raw.filter(pl.col("store_id").is_null())
    assert prices.height == 42 * 60 and prices["price"].null_count() == 0
    assert prices["on_promo"].null_count() == prices["open"].null_count() == prices.height
    assert promos.height < 0.2 * 42 * 4 * 60  # promotions, not every series-day


# --- closed days and the plan -------------------------------------------------------------------


def test_some_stores_close_on_holidays(year_sales: pl.DataFrame) -> None:
    calendar = World(WorldConfig()).calendar(START, _days(START, 366))
    holidays = calendar.filter(pl.col("is_holiday") == 1)["date"]
    closed = year_sales.filter(pl.col("open") == 0)
    assert (closed["units_sold"] == 0).all()
    assert set(closed["date"]) == set(holidays)  # closed on holidays only
    on_holidays = year_sales.filter(pl.col("date").is_in(holidays.implode()))
    per_store = on_holidays.group_by("store_id").agg(pl.col("open").n_unique(),
                                                     pl.col("open").first().alias("state"))
    assert (per_store["open"] == 1).all()  # a store closes its whole range of items
    closing = per_store.filter(pl.col("state") == 0).height
    assert 0.15 <= closing / per_store.height <= 0.5  # roughly a third of the stores
    still_open = on_holidays.filter(pl.col("open") == 1)["units_sold"].sum()
    assert still_open > 0


PLAN_FIRST = date(2024, 1, 1)  # a Monday
DELIVERIES = [_days(PLAN_FIRST, 7 * k) for k in range(30)]


def _plans(world: World) -> pl.DataFrame:
    return pl.concat([world.plan(d).with_columns(delivered=pl.lit(d)) for d in DELIVERIES])


def _as_known(sales: pl.DataFrame, plans: pl.DataFrame, last_only: bool) -> pl.DataFrame:
    """Sales rows with the plan for their day: from the last delivery before it (`last_only`),
    or as known then (per key, the latest delivery before the day); defaults where none says."""
    if last_only:
        plans = plans.filter(
            pl.col("delivered") == (pl.col("date") - pl.duration(days=1)).dt.truncate("1w"))
    known = (plans.filter(pl.col("delivered") < pl.col("date")).sort("delivered")
             .group_by("date", "store_id", "item_id", maintain_order=True).last())
    series = known.filter(pl.col("item_id").is_not_null()).select(
        "date", "store_id", "item_id", pl.col("on_promo").alias("plan_promo"),
        pl.col("price").alias("plan_price"))
    stores = known.filter(pl.col("item_id").is_null()).select(
        "date", "store_id", pl.col("open").alias("plan_open"))
    return (sales.join(series, on=["date", "store_id", "item_id"], how="left")
            .join(stores, on=["date", "store_id"], how="left")
            .with_columns(pl.col("plan_promo").fill_null(0), pl.col("plan_open").fill_null(1)))


@pytest.fixture(scope="module")
def small_plans() -> tuple[pl.DataFrame, pl.DataFrame]:
    world = World(SMALL)
    sales = world.sales(_days(PLAN_FIRST, 1), _days(DELIVERIES[-1], 8))
    return sales, _plans(world)


def test_plan_is_deterministic(small_plans: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    _, plans = small_plans
    d = DELIVERIES[12]
    alone = World(SMALL).plan(d)  # without the earlier deliveries computed first
    assert_frame_equal(alone, plans.filter(pl.col("delivered") == d).drop("delivered"))
    assert alone.schema == pl.Schema(PLAN_SCHEMA)
    other = World(WorldConfig(seed=8, n_stores=4, n_items=60)).plan(d)
    assert not other.equals(alone)
    with pytest.raises(ValueError, match="Mondays"):
        World(SMALL).plan(_days(d, 1))


@pytest.mark.parametrize("last_only", [True, False])
def test_last_delivery_before_a_day_agrees_with_it(
        small_plans: tuple[pl.DataFrame, pl.DataFrame], last_only: bool) -> None:
    sales, plans = small_plans
    joined = _as_known(sales, plans, last_only)
    assert joined.height == sales.height
    assert joined.filter(pl.col("plan_promo") != pl.col("on_promo")).height == 0
    assert joined.filter(pl.col("plan_open") != pl.col("open")).height == 0
    promo = joined.filter(pl.col("on_promo") == 1)
    assert promo.height > 1000 and (promo["plan_price"] == promo["price"]).all()
    assert joined.filter(pl.col("open") == 0).height > 0  # Easter, in the range


def test_plan_has_late_additions_and_cancellations(
        small_plans: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    sales, plans = small_plans
    keys = ["date", "store_id", "item_id"]
    series = plans.filter(pl.col("item_id").is_not_null())
    # promotions that run, first planned at most two weeks ahead (a delivery three weeks
    # ahead covered them already)
    promo = sales.filter(pl.col("on_promo") == 1, pl.col("date") > _days(PLAN_FIRST, 42))
    first = series.filter(pl.col("on_promo") == 1).group_by(keys).agg(pl.col("delivered").min())
    lead = promo.join(first, on=keys, how="left").select(
        (pl.col("date") - pl.col("delivered")).dt.total_days())["date"]
    assert lead.null_count() == 0
    late = (lead <= 14).mean()
    assert 0.01 < late < 0.15  # type: ignore[operator]
    # cancellations: planned (1) by one delivery, 0 in a later one, and the world does not run them
    cancelled = series.filter(pl.col("on_promo") == 0).select(*keys, "delivered")
    assert cancelled.height > 0
    planned_before = series.filter(pl.col("on_promo") == 1).select(
        *keys, pl.col("delivered").alias("planned"))
    earliest = cancelled.group_by(keys).agg(pl.col("delivered").min()).join(
        planned_before.group_by(keys).agg(pl.col("planned").min()), on=keys, how="left")
    assert (earliest["planned"] < earliest["delivered"]).all()
    actual = cancelled.join(sales, on=keys, how="inner")
    assert actual.height > 0 and (actual["on_promo"] == 0).all()
    n_cancelled = cancelled.select("item_id", "date").unique().height
    n_promo_days = sales.filter(pl.col("on_promo") == 1).select("item_id", "date").unique().height
    assert n_cancelled < 0.15 * n_promo_days


@pytest.mark.parametrize("share", [0.5, 1.0])
def test_plan_miss_leaves_that_share_of_promotions_unplanned(
        small_plans: tuple[pl.DataFrame, pl.DataFrame], share: float) -> None:
    sales, base_plans = small_plans
    start = date(2024, 3, 4)  # a Monday: from this delivery on
    world = World(replace_scenarios(SMALL, Scenario("plan_miss", start, share)))
    assert_frame_equal(world.sales(_days(PLAN_FIRST, 1), _days(DELIVERIES[-1], 8)), sales)
    plans = _plans(world)
    before = pl.col("delivered") < start
    assert_frame_equal(plans.filter(before), base_plans.filter(before))
    joined = _as_known(sales, plans, last_only=False).filter(pl.col("on_promo") == 1)
    missed = pl.col("plan_promo") == 0
    assert joined.filter(pl.col("date") <= start, missed).height == 0
    after = joined.filter(pl.col("date") > _days(start, 6))  # promotions starting from `start`
    assert after.filter(missed).height / after.height == pytest.approx(share, abs=0.15)
    assert _as_known(sales, plans, last_only=True).filter(  # the rest of the plan holds
        pl.col("on_promo") == 0, pl.col("plan_promo") == 1).height == 0


def replace_scenarios(config: WorldConfig, *scenarios: Scenario) -> WorldConfig:
    return WorldConfig(seed=config.seed, n_stores=config.n_stores, n_items=config.n_items,
                       start_date=config.start_date, scenarios=scenarios)


def test_a_delivery_knows_only_the_scenarios_started_by_its_day(tmp_path: Path) -> None:
    # What landed before a scenario was added equals what the world with it would have landed.
    start, end = date(2024, 2, 5), date(2024, 4, 30)
    scenarios = (Scenario("plan_miss", date(2024, 3, 6), 0.6),
                 Scenario("promo_regime", date(2024, 3, 20), 2.0),
                 Scenario("new_store", date(2024, 4, 3), stores=("S900",)))
    at_once = tmp_path / "at_once"
    World(replace_scenarios(SMALL, *scenarios)).write_landing(at_once, start, end)
    bits = tmp_path / "bit_by_bit"
    cuts = [start, *[sc.start for sc in scenarios], end]
    for k, (a, b) in enumerate(zip(cuts[:-1], cuts[1:], strict=True)):
        World(replace_scenarios(SMALL, *scenarios[:k])).write_landing(bits, a, b)
    files = sorted(p.relative_to(at_once) for p in (at_once / "plan").iterdir())
    assert len(files) == 13
    assert files == sorted(p.relative_to(bits) for p in (bits / "plan").iterdir())
    for f in files:
        assert (at_once / f).read_bytes() == (bits / f).read_bytes(), f
    assert "S900" in pl.read_csv(at_once / "plan" / "plan_2024-04-08.csv")["store_id"]


# --- landing through the settings ---------------------------------------------------------------


def test_land_writes_the_deliveries_of_the_days_it_lands(tmp_path: Path) -> None:
    settings = load_settings(small_world_env(tmp_path / "home", offset_days=20))
    land(settings)
    landing = settings.landing_dir
    sales_days = sorted(p.stem.removeprefix("sales_") for p in (landing / "sales").iterdir())
    plan_days = sorted(p.stem.removeprefix("plan_") for p in (landing / "plan").iterdir())
    mondays = [d for d in sales_days if date.fromisoformat(d).weekday() == 0]
    assert plan_days == mondays and len(mondays) >= 25
    with pytest.raises(ValueError, match="share"):  # checked before it is kept
        add_scenario(settings, "plan_miss", settings.today, 1.3)
    assert not (landing / SCENARIOS_FILE).exists()
    new = land(settings, days=10, scenario=("plan_miss", 0.5))
    assert len(new) == 10
    new_days = [date.fromisoformat(p.stem.removeprefix("sales_")) for p in new]
    plan_days_after = sorted(p.stem.removeprefix("plan_") for p in (landing / "plan").iterdir())
    assert plan_days_after == plan_days + [d.isoformat() for d in new_days if d.weekday() == 0]
    assert "plan_miss" in (landing / SCENARIOS_FILE).read_text()


def test_the_cli_reads_plan_miss_as_a_share_and_refuses_one_out_of_range() -> None:
    import argparse

    from ml_assets.cli import _scenario

    assert _scenario("plan_miss") == ("plan_miss", 0.5)
    assert _scenario("plan_miss:0.2") == ("plan_miss", 0.2)
    assert _scenario("level_shift") == ("level_shift", 1.3)
    with pytest.raises(argparse.ArgumentTypeError, match=r"share in \[0, 1\]"):
        _scenario("plan_miss:3")
