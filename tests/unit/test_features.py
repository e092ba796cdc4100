"""Point-in-time feature transforms (ml_assets.features.transforms.build_features).

The key property is the absence of leakage: with H = spec.horizon and origin o = t - H, the
feature row of target date t may read sales only up to o, and the known-in-advance inputs at t
(price, promotion, covariates, calendar, static attributes) plus the promotion at t - 1
(`promo_prev`). Everything else after o is perturbed and the row at t must not move.
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
import statistics

import numpy as np
import polars as pl
import polars.selectors as cs
import pytest
from polars.testing import assert_frame_equal

from ml_assets.features.transforms import SERIES, FeatureSpec, build_features, feature_columns
from ml_assets.simulation import World, WorldConfig

KEY = ["date", *SERIES]
DAILY = FeatureSpec()  # horizon 28 days
WEEKLY = FeatureSpec(horizon=8, period_days=7, numeric_covariates=("temperature",),
                     categorical_covariates=("weather",))
START = dt.date(2024, 1, 1)  # a Monday
END = dt.date(2025, 3, 1)  # 426 days of history: more than a year, so lag_364 has values
CALENDAR_INTS = ["day_of_week", "day_of_month", "month", "week_of_year", "day_of_year"]


def days(n: int) -> dt.timedelta:
    return dt.timedelta(days=n)


def weeks(n: int) -> dt.timedelta:
    return dt.timedelta(weeks=n)


# --- data --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world() -> World:
    return World(WorldConfig(n_stores=3, n_items=8, start_date=START))


@pytest.fixture(scope="module")
def daily(world: World) -> pl.DataFrame:
    """Simulated history plus 14 future days carrying prices and promotions, target null."""
    future = world.sales(END, END + days(14)).with_columns(pl.lit(None, pl.Int64).alias(
        "units_sold"))
    return pl.concat([world.sales(START, END), future])


@pytest.fixture(scope="module")
def calendar(world: World) -> pl.DataFrame:
    return world.calendar(START - days(10), END + days(30))


@pytest.fixture(scope="module")
def weekly(daily: pl.DataFrame) -> pl.DataFrame:
    """The simulated world by Monday-week, with a numeric and a categorical covariate."""
    history = daily.filter(pl.col("date") < END)
    out = (history.group_by(pl.col("date").dt.truncate("1w"), *SERIES)
           .agg(pl.col("units_sold").sum(), pl.col("price").mean(),
                pl.col("on_promo").max())
           .sort(KEY))
    rng = np.random.default_rng(0)
    return out.with_columns(
        pl.Series("temperature", rng.normal(12, 8, out.height).round(1)),
        pl.Series("weather", rng.choice(["sun", "rain", "snow"], out.height)),
    )


def series_first(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.group_by(SERIES).agg(pl.col("date").min().alias("first_sale_date"))


# --- leakage -----------------------------------------------------------------------------------


def perturb_after_origin(sales: pl.DataFrame, spec: FeatureSpec, t: dt.date,
                         seed: int) -> pl.DataFrame:
    """Everything the row at t must not read, changed: every units_sold after the origin o
    (t included); price after o except at t; promotions after o except at t - 1 and t (read
    as promo_prev and on_promo); numeric and categorical covariates after o except at t; and a
    quarter of the rows after o dropped, except rows at t and t - 1 (promo_prev) and each
    series' first row (the age reference when `first_sale` is not given)."""
    rng = np.random.default_rng(seed)
    step = days(spec.period_days)
    origin = t - spec.horizon * step
    n = sales.height
    date = pl.col("date")
    after = date > origin
    known_at_t = date == t
    promo_kept = known_at_t | (date == t - step)
    units, promo = pl.col("units_sold"), pl.col("on_promo")
    out = sales.with_columns(
        pl.Series("_factor", rng.uniform(0.0, 3.0, n)),
        pl.Series("_zero", rng.random(n) < 0.2),
        pl.Series("_flip", rng.random(n) < 0.5),
        pl.Series("_drop", rng.random(n) < 0.25),
        pl.Series("_noise", rng.integers(1, 50, n)),
    ).with_columns(
        pl.when(after).then(
            pl.when("_zero").then(0)
            .otherwise(units.fill_null(7) * pl.col("_factor") + pl.col("_noise")).round()
        ).otherwise(units).cast(sales.schema["units_sold"]).alias("units_sold"),
        pl.when(after & ~known_at_t).then(pl.col("price") * (0.5 + pl.col("_factor")))
        .otherwise(pl.col("price")).alias("price"),
        pl.when(after & ~promo_kept & pl.col("_flip")).then(1 - promo).otherwise(promo)
        .cast(sales.schema["on_promo"]).alias("on_promo"),
        *[pl.when(after & ~known_at_t).then(pl.col(c) * 3 + 100).otherwise(pl.col(c))
          .cast(sales.schema[c]).alias(c) for c in spec.numeric_covariates],
        *[pl.when(after & ~known_at_t).then(pl.lit("perturbed")).otherwise(pl.col(c)).alias(c)
          for c in spec.categorical_covariates],
    )
    first_row = date == date.min().over(SERIES)
    out = out.filter(~(pl.col("_drop") & after & ~promo_kept & ~first_row))
    assert out.height < n  # some rows really went
    return out.drop("_factor", "_zero", "_flip", "_drop", "_noise")


def rows_at(features: pl.DataFrame, t: dt.date) -> pl.DataFrame:
    return features.filter(pl.col("date") == t).drop("units_sold").sort(SERIES)


def assert_point_in_time(sales: pl.DataFrame, spec: FeatureSpec, t: dt.date, seed: int,
                         **dims: pl.DataFrame | None) -> None:
    perturbed = perturb_after_origin(sales, spec, t, seed)
    # the perturbation reaches t itself, and rows after t when there are any
    assert not perturbed.filter(pl.col("date") == t).equals(sales.filter(pl.col("date") == t))
    expected = rows_at(build_features(sales, spec, **dims), t)
    assert expected.height == sales.filter(pl.col("date") == t).height > 0
    actual = rows_at(build_features(perturbed, spec, **dims), t)
    assert_frame_equal(actual, expected, check_exact=True)

    # The same perturbation catches a leak of a single period: with a horizon of H - 1 (origin
    # one period later), the rows at t do change.
    leaky = dataclasses.replace(spec, horizon=spec.horizon - 1)
    assert not rows_at(build_features(perturbed, leaky, **dims), t).equals(
        rows_at(build_features(sales, leaky, **dims), t))


@pytest.mark.parametrize(("t", "with_first_sale"), [
    (dt.date(2024, 3, 15), False),  # less than a year in: lag_364 undefined
    (dt.date(2024, 9, 30), True),  # after some items' late launches
    (dt.date(2024, 12, 24), False),  # Christmas Eve: a calendar event at t
    (END - days(1), True),  # last day of history: only future rows after it
    (END + days(5), False),  # a future row (null target) within the horizon
])
def test_no_leakage_daily(daily: pl.DataFrame, world: World, calendar: pl.DataFrame,
                          t: dt.date, with_first_sale: bool) -> None:
    first_sale = series_first(daily) if with_first_sale else None
    assert_point_in_time(daily, DAILY, t, seed=t.toordinal(), stores=world.stores,
                         items=world.items, calendar=calendar, first_sale=first_sale)


@pytest.mark.parametrize("week", [9, 20, 40, 55, 60])
def test_no_leakage_weekly(weekly: pl.DataFrame, calendar: pl.DataFrame, week: int) -> None:
    t = START + weeks(week)
    assert weekly.get_column("date").max() == START + weeks(60)
    assert_point_in_time(weekly, WEEKLY, t, seed=week, calendar=calendar)


@pytest.mark.parametrize(("frame", "spec"), [("daily", DAILY), ("weekly", WEEKLY)])
def test_promo_at_t_minus_1_moves_only_promo_prev(frame: str, spec: FeatureSpec,
                                                  request: pytest.FixtureRequest) -> None:
    sales: pl.DataFrame = request.getfixturevalue(frame)
    t = START + days(spec.period_days * (300 // spec.period_days))
    prev = t - days(spec.period_days)
    flipped = sales.with_columns(
        pl.when(pl.col("date") == prev).then(1 - pl.col("on_promo")).otherwise(pl.col("on_promo"))
        .cast(pl.Int8).alias("on_promo"))
    before = rows_at(build_features(sales, spec), t)
    after = rows_at(build_features(flipped, spec), t)
    assert_frame_equal(after.drop("promo_prev"), before.drop("promo_prev"), check_exact=True)
    changed = after.get_column("promo_prev") - before.get_column("promo_prev")
    assert changed.drop_nulls().len() > 0
    assert changed.drop_nulls().abs().eq(1).all()


# --- correctness on hand-built data ------------------------------------------------------------

TINY = FeatureSpec(horizon=2, period_days=7)  # lags 2, 3, 4, 5, 52; windows 4, 13, 52


def tiny_weekly() -> pl.DataFrame:
    """Series A over weeks 0..11 with weeks 3, 4 and 8 missing and a null price in week 5;
    series B launched in week 6 (no row before). Rows in a scrambled order."""
    a_units = {0: 5, 1: 0, 2: 6, 5: 2, 6: 0, 7: 8, 9: 5, 10: 3, 11: 1}
    a_price = {0: 2.0, 1: 2.0, 2: 2.5, 5: None, 6: 2.0, 7: 1.5, 9: 2.0, 10: 1.0, 11: 2.0}
    a_promo = {0: 0, 1: 0, 2: 0, 5: 0, 6: 0, 7: 1, 9: 1, 10: 0, 11: 1}
    rows = [("A", w, a_units[w], a_price[w], a_promo[w]) for w in a_units]
    rows += [("B", w, 100 + 10 * (w - 6), 9.0, 0) for w in (6, 7, 8, 9)]
    rows = [rows[i] for i in np.random.default_rng(1).permutation(len(rows))]
    return pl.DataFrame({
        "date": [START + weeks(r[1]) for r in rows], "store_id": ["S1"] * len(rows),
        "item_id": [r[0] for r in rows], "units_sold": [r[2] for r in rows],
        "price": [r[3] for r in rows], "on_promo": [r[4] for r in rows],
    }, schema_overrides={"on_promo": pl.Int8})


def feature_row(features: pl.DataFrame, item: str, date: dt.date) -> dict:
    rows = features.filter((pl.col("item_id") == item) & (pl.col("date") == date))
    assert rows.height == 1
    return rows.row(0, named=True)


def assert_row(row: dict, expected: dict) -> None:
    for name, value in expected.items():
        if value is None:
            assert row[name] is None, name
        else:
            assert row[name] == pytest.approx(value, rel=1e-12), name


def test_tiny_weekly_by_hand() -> None:
    out = build_features(tiny_weekly(), TINY)
    # A at week 9: origin week 7; weeks 3, 4, 8 missing count as periods
    assert_row(feature_row(out, "A", START + weeks(9)), {
        "lag_2": 8.0,  # week 7
        "lag_3": 0.0,  # week 6
        "lag_4": 2.0,  # week 5
        "lag_5": None,  # week 4 is missing
        "lag_52": None,
        "seasonal_lag_mean": 10 / 3,  # lags 2..5 present: 8, 0, 2
        "mean_4": 10 / 3,  # weeks 4..7: 2, 0, 8
        "mean_13": 3.5,  # weeks 0..7: 5, 0, 6, 2, 0, 8
        "mean_52": 3.5,
        "std_13": statistics.stdev([5, 0, 6, 2, 0, 8]),
        "zero_share_13": 2 / 6,
        "price": 2.0,
        # price carried forward over gaps and the null: weeks 0..7 = 2, 2, 2.5, 2.5, 2.5,
        # 2.5, 2, 1.5
        "price_rel": 2.0 / (17.5 / 8),
        "discount": 1 - 2.0 / 2.5,
        "on_promo": 1.0,
        "promo_prev": None,  # week 8 is missing
        "promo_share_13": 1 / 6,
        "periods_since_first_sale": 9,  # periods, not the 6 rows before it
    })
    # A at week 10: promo_prev from week 9; windows end at week 8 (missing)
    assert_row(feature_row(out, "A", START + weeks(10)), {
        "lag_2": None, "lag_3": 8.0, "mean_4": 10 / 3, "promo_prev": 1.0, "on_promo": 0.0,
        "price": 1.0, "discount": 1 - 1.0 / 2.5, "periods_since_first_sale": 10,
    })
    # A at week 5: the row's own null price is carried forward from week 2
    assert_row(feature_row(out, "A", START + weeks(5)), {
        "price": 2.5, "lag_3": 6.0, "lag_2": None, "promo_prev": None,
        "mean_4": 11 / 3, "std_13": statistics.stdev([5, 0, 6]),
    })
    # A at week 2: a single week of history (week 0) in every window
    assert_row(feature_row(out, "A", START + weeks(2)), {
        "lag_2": 5.0, "lag_3": None, "mean_4": 5.0, "std_13": None, "zero_share_13": 0.0,
        "price_rel": 2.5 / 2.0, "discount": 1 - 2.5 / 2.0, "promo_prev": 0.0,
        "promo_share_13": 0.0,
    })
    # A at weeks 0 and 1: nothing before the origin
    for week in (0, 1):
        row = feature_row(out, "A", START + weeks(week))
        assert_row(row, {c: None for c in ("lag_2", "seasonal_lag_mean", "mean_4", "mean_52",
                                           "std_13", "zero_share_13", "price_rel", "discount",
                                           "promo_share_13")})
        assert row["price"] == 2.0 and row["periods_since_first_sale"] == week
    # B, launched in week 6, sees only its own weeks; A's values do not reach it
    assert_row(feature_row(out, "B", START + weeks(9)), {
        "lag_2": 110.0, "lag_3": 100.0, "lag_4": None, "seasonal_lag_mean": 105.0,
        "mean_4": 105.0, "std_13": statistics.stdev([100, 110]), "zero_share_13": 0.0,
        "price_rel": 1.0, "discount": 0.0, "promo_prev": 0.0, "periods_since_first_sale": 3,
    })
    assert_row(feature_row(out, "B", START + weeks(6)), {
        "lag_2": None, "mean_4": None, "price_rel": None, "promo_prev": None,
        "periods_since_first_sale": 0,
    })


def test_tiny_weekly_with_first_sale() -> None:
    first_sale = pl.DataFrame({"store_id": ["S1"], "item_id": ["A"],
                               "first_sale_date": [START - weeks(2)]})
    out = build_features(tiny_weekly(), TINY, first_sale=first_sale)
    assert feature_row(out, "A", START + weeks(9))["periods_since_first_sale"] == 11
    assert feature_row(out, "A", START)["periods_since_first_sale"] == 2
    # a series missing from first_sale has no known age
    assert out.filter(pl.col("item_id") == "B").get_column("periods_since_first_sale") \
        .is_null().all()
    without = build_features(tiny_weekly(), TINY)
    assert_frame_equal(out.drop("periods_since_first_sale"),
                       without.drop("periods_since_first_sale"), check_exact=True)
    assert out.schema["periods_since_first_sale"] == without.schema["periods_since_first_sale"]


def test_daily_gaps_are_periods_not_rows() -> None:
    """Days 0..59 except day 5, units = day index: a row-based shift would read day 4 or 6."""
    rows = [d for d in range(60) if d != 5]
    sales = pl.DataFrame({"date": [START + days(d) for d in rows], "store_id": "S",
                          "item_id": "I", "units_sold": rows, "price": 1.0, "on_promo": 0})
    out = build_features(sales, DAILY)
    assert_row(feature_row(out, "I", START + days(33)), {
        "lag_28": None,  # day 5
        "mean_7": 2.0,  # days -1..5 hold 0..4
        "std_28": statistics.stdev(range(5)),
        "zero_share_28": 1 / 5,
        "periods_since_first_sale": 33,
    })
    assert_row(feature_row(out, "I", START + days(34)), {
        "lag_28": 6.0, "mean_7": 16 / 6, "mean_28": 16 / 6})  # days 0..6 without 5
    assert_row(feature_row(out, "I", START + days(39)), {
        "lag_28": 11.0, "lag_35": 4.0, "seasonal_lag_mean": 7.5, "mean_7": 8.5,  # 6..11
        "mean_28": statistics.mean([d for d in range(12) if d != 5])})


def test_spec_lags_windows_and_lookback() -> None:
    assert DAILY.lags == [28, 35, 42, 49, 364]
    assert FeatureSpec(horizon=30).lags == [35, 42, 49, 56, 364]  # rounded up to a weekday
    assert FeatureSpec(horizon=7).lags == [7, 14, 21, 28, 364]
    assert WEEKLY.lags == [8, 9, 10, 11, 52]
    assert FeatureSpec(horizon=52, period_days=7).lags == [52, 53, 54, 55]
    assert DAILY.windows == (7, 28, 91) and WEEKLY.windows == (4, 13, 52)
    assert DAILY.lookback_periods == 365
    assert WEEKLY.lookback_periods == 61
    assert FeatureSpec(horizon=400).lookback_periods == 400 + 91 + 1


# --- an independent reference on random gappy data ---------------------------------------------


def reference_features(sales: pl.DataFrame, spec: FeatureSpec) -> pl.DataFrame:
    """Every sales-derived feature by date arithmetic on dicts, row by row."""
    step, h = days(spec.period_days), spec.horizon
    short, mid, long_ = spec.windows
    rows = {(r["store_id"], r["item_id"], r["date"]): r for r in sales.iter_rows(named=True)}
    first, prices = {}, {}
    for (s, i, d), r in sorted(rows.items()):
        first.setdefault((s, i), d)
        if r["price"] is not None:
            prices.setdefault((s, i), ([], []))
            prices[(s, i)][0].append(d)
            prices[(s, i)][1].append(r["price"])

    def mean(values):
        values = [v for v in values if v is not None]
        return statistics.fmean(values) if values else None

    out = []
    for r in sales.iter_rows(named=True):
        key, t = (r["store_id"], r["item_id"]), r["date"]

        def row(k, key=key, t=t):
            return rows.get((*key, t - k * step))

        def units(k, row=row):
            return row(k)["units_sold"] if row(k) else None

        def price(k, key=key, t=t):  # carried forward, within the series
            ds, ps = prices.get(key, ([], []))
            i = bisect.bisect_right(ds, t - k * step)
            return ps[i - 1] if i else None

        def window(fn, w):
            return [fn(k) for k in range(h, h + w)]

        mid_units = [u for u in window(units, mid) if u is not None]
        past_prices = [p for p in window(price, long_) if p is not None]
        promos = [row(k)["on_promo"] or 0 for k in range(h, h + mid) if row(k)]
        out.append({
            **{f"lag_{k}": units(k) for k in spec.lags},
            "seasonal_lag_mean": mean([units(k) for k in spec.lags[:4]]),
            **{f"mean_{w}": mean(window(units, w)) for w in spec.windows},
            f"std_{mid}": statistics.stdev(mid_units) if len(mid_units) > 1 else None,
            f"zero_share_{mid}": mean([u == 0 for u in mid_units]),
            "price": price(0),
            "price_rel": (price(0) / mean(window(price, mid))
                          if price(0) is not None and mean(window(price, mid)) else None),
            "discount": 1 - price(0) / max(past_prices) if past_prices and price(0) else None,
            "on_promo": float(r["on_promo"] or 0),
            "promo_prev": float(row(1)["on_promo"] or 0) if row(1) else None,
            f"promo_share_{mid}": mean(promos),
            "periods_since_first_sale": (t - first[key]).days // spec.period_days,
        })
    return pl.DataFrame(out, schema_overrides={c: pl.Float64 for c in out[0]} | {
        "periods_since_first_sale": pl.Int64})


def random_gappy(spec: FeatureSpec, n_periods: int, seed: int) -> pl.DataFrame:
    """Four series with 30% of periods missing, a late launch, null prices and promotions,
    zeros, and future rows with a null target; shuffled."""
    rng = np.random.default_rng(seed)
    records = []
    for s, (store, item) in enumerate([("S1", "A"), ("S1", "B"), ("S2", "A"), ("S3", "Z")]):
        launch = n_periods // 2 if s == 3 else 0
        for p in range(launch, n_periods):
            if rng.random() < 0.3 and p > launch:
                continue
            records.append({
                "date": START + days(p * spec.period_days), "store_id": store, "item_id": item,
                "units_sold": None if p >= n_periods - 5 else int(rng.poisson(3) * (s + 1)),
                "price": None if rng.random() < 0.1 else round(float(rng.uniform(1, 5)), 2),
                "on_promo": None if rng.random() < 0.05 else int(rng.random() < 0.2),
            })
    frame = pl.DataFrame(records, schema_overrides={"on_promo": pl.Int8})
    return frame.sample(fraction=1.0, shuffle=True, seed=seed)


@pytest.mark.parametrize(("spec", "n_periods"), [(DAILY, 420), (TINY, 70), (WEEKLY, 66)],
                         ids=["daily", "weekly-h2", "weekly-h8"])
def test_matches_reference_on_random_gappy_data(spec: FeatureSpec, n_periods: int) -> None:
    sales = random_gappy(spec, n_periods, seed=n_periods)
    if spec.numeric_covariates:
        sales = sales.with_columns(temperature=pl.lit(1.5), weather=pl.lit("sun"))
    out = build_features(sales, spec)
    expected = reference_features(sales, spec)
    assert_frame_equal(out.select(expected.columns), expected, rel_tol=1e-9, abs_tol=1e-12)
    assert not any(out.select(cs.float().is_nan().any()).row(0))  # null, not NaN
    assert out.select("lag_52" if spec.period_days == 7 else "lag_364").null_count().item() \
        < out.height  # long enough for the yearly lag to have values


# --- output contract ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def daily_out(daily: pl.DataFrame, world: World, calendar: pl.DataFrame) -> pl.DataFrame:
    return build_features(daily, DAILY, stores=world.stores, items=world.items,
                          calendar=calendar)


def test_output_contract(daily: pl.DataFrame, daily_out: pl.DataFrame) -> None:
    out = daily_out
    assert out.height == daily.height
    assert_frame_equal(out.select(KEY), daily.select(KEY))  # same rows, same order
    assert not out.select(pl.struct(KEY).is_duplicated().any()).item()
    static = [c for c in out.columns if c.startswith(("store_", "item_"))
              and c not in SERIES]
    cal = [c for c in out.columns if c.startswith("cal_")]
    assert static and cal
    assert out.columns == ["date", *SERIES, "units_sold", *feature_columns(DAILY, static, cal)]
    schema = out.schema
    assert schema["date"] == pl.Date
    assert schema["store_id"] == schema["item_id"] == pl.Utf8
    assert schema["units_sold"] == pl.Float64
    for name in CALENDAR_INTS:
        assert schema[name].is_integer(), name
    assert schema["periods_since_first_sale"].is_integer()
    sales_features = feature_columns(DAILY, [], [])[len(CALENDAR_INTS):-1]
    for name in sales_features:
        assert schema[name] == pl.Float64, name
    # undefined is null, never NaN
    nan = out.select(cs.float().is_nan().any())
    assert not any(nan.row(0)), {c: v for c, v in zip(nan.columns, nan.row(0), strict=True) if v}
    # and undefined it is: the first year has no lag_364, the future no target
    assert out.filter(pl.col("date") < START + days(364)).get_column("lag_364").is_null().all()
    assert out.filter(pl.col("date") >= START + days(364)).get_column("lag_364").null_count() \
        < out.filter(pl.col("date") >= START + days(364)).height
    future = out.filter(pl.col("date") >= END)
    assert future.get_column("units_sold").is_null().all()
    assert future.get_column("mean_7").null_count() == 0  # within the horizon: all known


def test_calendar_features(daily_out: pl.DataFrame) -> None:
    expected = daily_out.select(
        pl.col("date").dt.weekday().alias("day_of_week"),  # Monday = 1
        pl.col("date").dt.day().alias("day_of_month"),
        pl.col("date").dt.month().alias("month"),
        pl.col("date").dt.week().alias("week_of_year"),
        pl.col("date").dt.ordinal_day().alias("day_of_year"),
    )
    assert_frame_equal(daily_out.select(CALENDAR_INTS), expected, check_dtypes=False)
    row = daily_out.filter(pl.col("date") == dt.date(2024, 12, 31)).row(0, named=True)
    assert (row["day_of_week"], row["day_of_month"], row["month"], row["day_of_year"]) \
        == (2, 31, 12, 366)


# --- static attributes, calendar table and covariates -------------------------------------------


def small_sales() -> pl.DataFrame:
    dates = [START + days(d) for d in range(4)]
    rows = [(d, s, i) for d in dates for s, i in [("S1", "A"), ("S2", "A"), ("S2", "B"),
                                                   ("S9", "Q")]]
    return pl.DataFrame({"date": [r[0] for r in rows], "store_id": [r[1] for r in rows],
                         "item_id": [r[2] for r in rows], "units_sold": 3,
                         "price": 2.0, "on_promo": 0},
                        schema_overrides={"on_promo": pl.Int8})


def test_static_attributes_and_calendar_table() -> None:
    long_note = "Flagship store in the old town, refurbished twice, with a large bakery"
    stores = pl.DataFrame({
        "store_id": ["S2", "S1", "S3"], "region": ["north", "south", "east"],
        "size_sqm": [1200, 800, 500], "is_mall": [True, False, True],
        "opened": [dt.date(2010, 5, 1), dt.date(2015, 1, 1), dt.date(2020, 1, 1)],
        "note": [long_note, long_note + " (east)", long_note[:45] + " and more"],
    })
    items = pl.DataFrame({
        "item_id": ["A", "B"], "category": ["dairy", "snacks"], "base_price": [1.5, 2.5],
        "description": ["Organic whole milk from pasture-raised cows, 1 litre carton",
                        "Sea salt potato crisps, kettle cooked in small batches, 150 g"],
        "launch": [dt.datetime(2020, 1, 1), dt.datetime(2021, 6, 1)],
    })
    calendar = pl.DataFrame({
        "date": [START + days(1), START + days(2), START + days(3), START + days(40)],
        "event": ["Fair", None, "Sale", "Other"], "is_holiday": [1, 0, 0, 1],
        "comment": ["A very long comment about what happened on this very day"] * 4,
    }, schema_overrides={"is_holiday": pl.Int8})
    sales = small_sales()
    out = build_features(sales, FeatureSpec(), stores=stores, items=items, calendar=calendar)
    extra = out.columns[out.columns.index("periods_since_first_sale") + 1:]
    assert extra == ["store_region", "store_size_sqm", "store_is_mall", "item_category",
                     "item_base_price", "cal_event", "cal_is_holiday"]
    assert out.schema["store_region"] == pl.Utf8
    assert out.schema["store_size_sqm"].is_integer()
    assert out.schema["store_is_mall"] == pl.Boolean
    assert out.schema["item_base_price"] == pl.Float64
    assert out.schema["cal_is_holiday"] == pl.Int8
    # each row gets its own store's, item's and date's attributes; unknown ones are null
    expected = sales.select(KEY).join(
        stores.select("store_id", store_region="region", store_size_sqm="size_sqm",
                      store_is_mall="is_mall"), on="store_id", how="left", maintain_order="left"
    ).join(items.select("item_id", item_category="category", item_base_price="base_price"),
           on="item_id", how="left", maintain_order="left"
    ).join(calendar.select("date", cal_event="event", cal_is_holiday="is_holiday"), on="date",
           how="left", maintain_order="left")
    assert_frame_equal(out.select(expected.columns), expected, check_dtypes=False)
    assert out.filter(pl.col("store_id") == "S9").get_column("store_region").is_null().all()
    assert out.filter(pl.col("date") == START).get_column("cal_is_holiday").is_null().all()


def test_static_attributes_from_the_simulator(daily_out: pl.DataFrame, world: World) -> None:
    cols = [c for c in daily_out.columns if c.startswith(("store_", "item_", "cal_"))
            and c not in SERIES]
    for kept in ("store_store_type", "store_region", "store_size_sqm", "item_category",
                 "item_department", "item_base_price", "cal_event_name", "cal_is_holiday"):
        assert kept in cols, kept
    for dropped in ("store_open_date", "item_launch_date", "item_retire_date"):
        assert dropped not in cols  # typed dates are not features
    row = daily_out.filter(pl.col("date") == dt.date(2024, 12, 25),
                           pl.col("store_id") == "S002").row(0, named=True)
    assert row["cal_event_name"] == "Christmas Day" and row["cal_is_holiday"] == 1
    store = world.stores.filter(pl.col("store_id") == "S002").row(0, named=True)
    assert row["store_size_sqm"] == store["size_sqm"]
    assert row["store_region"] == store["region"]


def test_simulator_item_descriptions_are_not_features(daily_out: pl.DataFrame) -> None:
    assert "item_description" not in daily_out.columns


def test_dates_in_csv_attribute_files_are_not_features(world: World, tmp_path) -> None:
    path = tmp_path / "stores.csv"
    world.stores.write_csv(path)
    stores = pl.read_csv(path, infer_schema_length=10_000)  # as ingest reads attribute files
    out = build_features(small_sales().with_columns(store_id=pl.lit("S001")), DAILY,
                         stores=stores)
    assert "store_region" in out.columns
    assert "store_open_date" not in out.columns


def test_categorical_dtype_attributes_are_kept() -> None:
    items = pl.DataFrame({"item_id": ["A", "B"], "category": ["dairy", "snacks"]},
                         schema_overrides={"category": pl.Categorical})
    out = build_features(small_sales(), DAILY, items=items)
    assert "item_category" in out.columns


def test_covariates_come_through_at_t() -> None:
    spec = FeatureSpec(numeric_covariates=("temperature", "footfall"),
                       categorical_covariates=("weather", "store_open"))
    sales = small_sales()
    rng = np.random.default_rng(4)
    sales = sales.with_columns(
        pl.Series("temperature", rng.normal(10, 5, sales.height)),
        pl.Series("footfall", rng.integers(0, 900, sales.height)),  # integers
        pl.Series("weather", rng.choice(["sun", "rain", None], sales.height)),
        pl.Series("store_open", rng.integers(0, 2, sales.height)),  # a 0/1 category
        pl.lit("ignored").alias("undeclared"),
    )
    out = build_features(sales, spec)
    assert out.columns[-4:] == ["temperature", "footfall", "weather", "store_open"]
    assert "undeclared" not in out.columns
    assert out.schema["temperature"] == out.schema["footfall"] == pl.Float64
    assert out.schema["weather"] == out.schema["store_open"] == pl.Utf8
    assert_frame_equal(out.select("temperature", "footfall", "weather", "store_open"),
                       sales.select(pl.col("temperature", "footfall").cast(pl.Float64),
                                    pl.col("weather", "store_open").cast(pl.Utf8)))


def test_categorical_covariate_of_categorical_dtype_becomes_utf8() -> None:
    spec = FeatureSpec(categorical_covariates=("weather",))
    sales = small_sales().with_columns(
        pl.Series("weather", ["sun", "rain"] * 8, dtype=pl.Categorical))
    out = build_features(sales, spec)
    assert out.schema["weather"] == pl.Utf8
    assert out.get_column("weather").to_list() == ["sun", "rain"] * 8


# --- invariances -------------------------------------------------------------------------------


def test_row_order_does_not_matter(daily: pl.DataFrame, daily_out: pl.DataFrame, world: World,
                                   calendar: pl.DataFrame) -> None:
    shuffled = daily.sample(fraction=1.0, shuffle=True, seed=3)
    out = build_features(shuffled, DAILY, stores=world.stores, items=world.items,
                         calendar=calendar)
    assert_frame_equal(out.select(KEY), shuffled.select(KEY))  # the shuffled order, kept
    assert_frame_equal(out.sort(KEY), daily_out.sort(KEY), check_exact=True)


def test_renaming_ids_does_not_matter(daily: pl.DataFrame, daily_out: pl.DataFrame,
                                      world: World, calendar: pl.DataFrame) -> None:
    # new names in the reverse order of the old ones, so the series are indexed differently
    stores = {s: f"store-{99 - i}" for i, s in enumerate(sorted(daily["store_id"].unique()))}
    items = {s: f"{900 - i}" for i, s in enumerate(sorted(daily["item_id"].unique()))}

    def rename(frame: pl.DataFrame, mapping: dict[str, str], col: str) -> pl.DataFrame:
        return frame.with_columns(pl.col(col).replace_strict(mapping))

    renamed = rename(rename(daily, stores, "store_id"), items, "item_id")
    out = build_features(renamed, DAILY, stores=rename(world.stores, stores, "store_id"),
                         items=rename(world.items, items, "item_id"), calendar=calendar)
    back = rename(rename(out, {v: k for k, v in stores.items()}, "store_id"),
                  {v: k for k, v in items.items()}, "item_id")
    assert_frame_equal(back, daily_out, check_exact=True)


def test_truncated_history_with_first_sale_matches_full_history(daily: pl.DataFrame) -> None:
    """What the asset does for a partition: read lookback_periods before the window, with the
    series' first sale dates from the whole table."""
    window_start = dt.date(2025, 2, 1)
    read_from = window_start - days(DAILY.lookback_periods * DAILY.period_days)
    assert read_from > START  # really truncated
    part = daily.filter(pl.col("date") >= read_from)
    full = build_features(daily, DAILY).filter(pl.col("date") >= window_start)
    cut = build_features(part, DAILY, first_sale=series_first(daily)).filter(
        pl.col("date") >= window_start)
    # equal up to rounding: cumulative sums over a longer history round differently (1e-14)
    assert_frame_equal(cut, full, rel_tol=1e-12, abs_tol=1e-12)
    # without first_sale, the age restarts at the cut
    naive = build_features(part, DAILY).filter(pl.col("date") >= window_start)
    assert (naive["periods_since_first_sale"] < full["periods_since_first_sale"]).any()


# --- launches, short series, bad input ---------------------------------------------------------


def test_new_items_and_single_row_series() -> None:
    base = random_gappy(DAILY, 120, seed=9)
    single = pl.DataFrame({"date": [START + days(60)], "store_id": ["S7"], "item_id": ["solo"],
                           "units_sold": [4], "price": [3.0], "on_promo": [1]},
                          schema_overrides={"on_promo": pl.Int8})
    out = build_features(pl.concat([base, single]), DAILY)
    assert out.height == base.height + 1
    solo = feature_row(out, "solo", START + days(60))
    undefined = [c for c in feature_columns(DAILY, [], [])
                 if c.startswith(("lag_", "mean_", "std_", "zero_share", "promo_share"))]
    undefined += ["seasonal_lag_mean", "price_rel", "discount", "promo_prev"]
    assert_row(solo, dict.fromkeys(undefined))
    assert_row(solo, {"price": 3.0, "on_promo": 1.0, "periods_since_first_sale": 0})
    # the late launch (series Z, from day 60): nothing before its launch, no row before it
    late = out.filter(pl.col("item_id") == "Z").sort("date")
    assert late.get_column("date").min() == START + days(60)
    assert late.get_column("periods_since_first_sale")[0] == 0
    first_h = late.filter(pl.col("date") < START + days(60 + DAILY.horizon))
    assert first_h.select(cs.starts_with("lag_", "mean_", "std_")).null_count().row(0) \
        == (first_h.height,) * 9
    after = late.filter(pl.col("date") >= START + days(60 + DAILY.horizon))
    assert after.get_column("mean_28").null_count() == 0


def test_late_launch_in_the_simulator(daily_out: pl.DataFrame, world: World) -> None:
    launches = world.items.filter(pl.col("launch_date") > START + days(60),
                                  pl.col("launch_date") < END - days(60))
    assert launches.height > 0
    for item, launch in launches.select("item_id", "launch_date").iter_rows():
        rows = daily_out.filter(pl.col("item_id") == item)
        first = rows.get_column("date").min()
        assert first >= launch
        early = rows.filter(pl.col("date") < first + days(DAILY.horizon))
        assert early.get_column("mean_91").is_null().all()
        assert early.get_column("periods_since_first_sale").max() == DAILY.horizon - 1
        assert rows.filter(pl.col("date") >= first + days(DAILY.horizon)) \
            .get_column("mean_91").null_count() == 0


def test_a_single_row_input() -> None:
    sales = pl.DataFrame({"date": [START], "store_id": ["S"], "item_id": ["I"],
                          "units_sold": [None], "price": [None], "on_promo": [None]},
                         schema={"date": pl.Date, "store_id": pl.Utf8, "item_id": pl.Utf8,
                                 "units_sold": pl.Int64, "price": pl.Float64,
                                 "on_promo": pl.Int8})
    out = build_features(sales, FeatureSpec(horizon=8, period_days=7))
    assert out.height == 1
    row = out.row(0, named=True)
    assert row["price"] is None and row["on_promo"] == 0.0 and row["units_sold"] is None
    assert not any(out.select(cs.float().is_nan().any()).row(0))


def test_weekly_date_off_the_grid_names_the_row(weekly: pl.DataFrame) -> None:
    dates = weekly.get_column("date").to_list()
    dates[17] += days(2)
    bad = weekly.with_columns(pl.Series("date", dates))
    with pytest.raises(ValueError, match=r"row 17\b.*7-day grid"):
        build_features(bad, WEEKLY)


@pytest.mark.parametrize(("spec", "n_periods"), [(DAILY, 30), (DAILY, 250), (WEEKLY, 40)],
                         ids=["daily-30", "daily-250", "weekly-40"])
def test_short_histories_do_not_crash(daily: pl.DataFrame, weekly: pl.DataFrame,
                                      spec: FeatureSpec, n_periods: int) -> None:
    sales = weekly if spec.period_days == 7 else daily
    part = sales.filter(pl.col("date") < START + days(n_periods * spec.period_days))
    out = build_features(part, spec)
    assert out.height == part.height
    assert out.get_column(f"lag_{spec.lags[-1]}").is_null().all()
