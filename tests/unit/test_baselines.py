"""Origin-only baselines (ml_assets.evaluation.baselines) and rolling-origin backtests
(ml_assets.evaluation.backtest).

Hand-built series with gaps, nulls and zeros give hand-computed expectations; a plain Python
reference checks random data; perturbing every actual after the origin must move nothing.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from ml_assets.evaluation.backtest import backtest_frame, rolling_origins, train_mask
from ml_assets.evaluation.baselines import moving_average, naive_scale, seasonal_naive

JAN = dt.date(2024, 1, 1)  # a Monday
ORIGIN = dt.date(2024, 1, 10)


def day(n: int) -> dt.date:
    """Day n of January 2024."""
    return dt.date(2024, 1, n)


def history_rows(store: str, item: str, values: dict[int, float | None]) -> list[dict]:
    return [{"store_id": store, "item_id": item, "date": day(d), "units_sold": v}
            for d, v in values.items()]


# s1/a: Jan 1-10 with a gap (no row on Jan 4), a null (Jan 6) and zeros; then 100s after the
# origin, which no baseline may read.
A = {1: 5.0, 2: 0.0, 3: 0.0, 5: 3.0, 6: None, 7: 0.0, 8: 4.0, 9: 0.0, 10: 2.0,
     **{d: 100.0 for d in range(11, 21)}}
B = {9: 1.0}  # s1/b: a one-day history
Z = {d: 0.0 for d in range(1, 11)}  # s2/z: only zeros
LATE = {12: 6.0, 13: 7.0}  # s2/late: first sale after the origin
HISTORY = pl.DataFrame(history_rows("s1", "a", A) + history_rows("s1", "b", B)
                       + history_rows("s2", "z", Z) + history_rows("s2", "late", LATE),
                       schema={"store_id": pl.Utf8, "item_id": pl.Utf8, "date": pl.Date,
                               "units_sold": pl.Float64})


def targets(rows: list[tuple[str, str, int, int | None]]) -> pl.DataFrame:
    return pl.DataFrame(
        [{"store_id": s, "item_id": i, "date": day(d), "origin": day(o) if o else None}
         for s, i, d, o in rows],
        schema={"store_id": pl.Utf8, "item_id": pl.Utf8, "date": pl.Date, "origin": pl.Date})


# --- seasonal naive -------------------------------------------------------------------------

# Target t, origin Jan 10, season 7: candidate c = t - 7k for the smallest k >= 1 with c <= 10.
SEASONAL_CASES = [
    ("s1", "a", 11, 2.0),  # c = Jan 4: gap → last observed at or before the origin (Jan 10: 2)
    ("s1", "a", 12, 3.0),  # c = Jan 5 → 3
    ("s1", "a", 13, 2.0),  # c = Jan 6: null → last observed (2)
    ("s1", "a", 14, 0.0),  # c = Jan 7 → 0 (a zero is a value, not missing)
    ("s1", "a", 15, 4.0),  # c = Jan 8 → 4
    ("s1", "a", 17, 2.0),  # c = Jan 10 (the origin itself) → 2
    ("s1", "a", 19, 3.0),  # 9 days ahead: k = 2, c = Jan 5 → 3 (not Jan 12 = 100, after o)
    ("s1", "a", 24, 2.0),  # 14 days ahead: k = 2, c = Jan 24 - 14 = Jan 10 → 2
    ("s1", "b", 15, 1.0),  # c = Jan 8: before the one-day history → last observed (Jan 9: 1)
    ("s2", "z", 12, 0.0),  # c = Jan 5 → 0
    ("s2", "late", 14, None),  # nothing at or before the origin
    ("s9", "x", 12, None),  # unknown series
]


def test_seasonal_naive_hand_computed() -> None:
    rows = targets([(s, i, d, 10) for s, i, d, _ in SEASONAL_CASES])
    got = seasonal_naive(HISTORY, rows, season=7, period_days=1)
    assert got.name == "seasonal_naive"
    assert got.dtype == pl.Float64
    assert got.to_list() == [expected for *_, expected in SEASONAL_CASES]


def test_seasonal_naive_keeps_target_row_order_and_null_origin() -> None:
    rows = targets([("s1", "a", 15, 10), ("s1", "a", 12, 10), ("s1", "a", 12, None),
                    ("s1", "a", 12, 7)])
    # Jan 15 → c = Jan 8: 4; Jan 12 → c = Jan 5: 3; no origin → null;
    # origin Jan 7, Jan 12 is 5 ahead → c = Jan 5: 3
    assert seasonal_naive(HISTORY, rows, 7, 1).to_list() == [4.0, 3.0, None, 3.0]


def test_seasons_back_reaches_further_before_falling_back() -> None:
    history = pl.DataFrame(history_rows("s", "i", {1: 7.0, 10: 2.0}))
    rows = targets([("s", "i", 15, 10)])  # c = Jan 8: no row
    assert seasonal_naive(history, rows, 7, 1).to_list() == [2.0]  # last observed
    assert seasonal_naive(history, rows, 7, 1, seasons_back=2).to_list() == [7.0]  # Jan 1


def test_yearly_season_daily() -> None:
    history = pl.DataFrame({"store_id": ["s"] * 2, "item_id": ["i"] * 2,
                            "date": [dt.date(2023, 1, 12), day(10)], "units_sold": [9.0, 2.0]})
    rows = targets([("s", "i", 11, 10), ("s", "i", 12, 10)])
    # Jan 11 2024 - 364 days = Jan 12 2023 → 9; Jan 12 2024 → Jan 13 2023: none → Jan 10: 2
    assert seasonal_naive(history, rows, season=364, period_days=1).to_list() == [9.0, 2.0]


def test_weekly_seasonal_naive() -> None:
    weeks = [JAN + dt.timedelta(weeks=w) for w in range(9)]
    history = pl.DataFrame({"store_id": ["s"] * 9, "item_id": ["i"] * 9, "date": weeks,
                            "units_sold": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 60.0, 70.0, 80.0]})
    rows = pl.DataFrame({"store_id": ["s"] * 3, "item_id": ["i"] * 3, "date": weeks[6:9],
                         "origin": [weeks[5]] * 3})
    # season 2 weeks, origin W5: W6 → W4 (5); W7 → W5 (6); W8 is 3 ahead → k = 2 → W4 (5)
    assert seasonal_naive(history, rows, season=2, period_days=7).to_list() == [5.0, 6.0, 5.0]
    # season 1 = last week at or before the origin
    assert seasonal_naive(history, rows, season=1, period_days=7).to_list() == [6.0] * 3


# --- moving average -------------------------------------------------------------------------


def test_moving_average_hand_computed() -> None:
    rows = targets([("s1", "a", 11, 10), ("s1", "a", 20, 10), ("s1", "a", 11, 7),
                    ("s1", "b", 11, 10), ("s2", "z", 11, 10), ("s2", "late", 14, 10),
                    ("s9", "x", 11, 10)])
    ma3 = moving_average(HISTORY, rows, window=3, period_days=1)
    assert ma3.name == "moving_average_3"
    assert ma3.to_list() == [
        2.0,  # Jan 8-10: (4 + 0 + 2) / 3
        2.0,  # same origin, any horizon: the same value
        1.5,  # origin Jan 7: Jan 5-7 = 3, null, 0 → (3 + 0) / 2
        1.0,  # s1/b: Jan 9 only
        0.0,  # zeros average to zero, not null
        None,  # no sale up to the origin
        None,  # unknown series
    ]
    # window 7, origin Jan 10: Jan 4-10 = gap, 3, null, 0, 4, 0, 2 → 9 / 5
    assert moving_average(HISTORY, rows.head(1), 7, 1).to_list() == [pytest.approx(1.8)]
    # window 1, s1/b at Jan 10: nothing on Jan 10 itself → null (the window is calendar time)
    assert moving_average(HISTORY, rows.slice(3, 1), 1, 1).to_list() == [None]


def test_moving_average_weekly_window_counts_weeks() -> None:
    weeks = [JAN + dt.timedelta(weeks=w) for w in range(6)]
    history = pl.DataFrame({"store_id": ["s"] * 6, "item_id": ["i"] * 6, "date": weeks,
                            "units_sold": [1.0, 2.0, 3.0, 4.0, 5.0, 50.0]})
    rows = pl.DataFrame({"store_id": ["s"], "item_id": ["i"], "date": [weeks[5]],
                         "origin": [weeks[4]]})
    assert moving_average(history, rows, 2, period_days=7).to_list() == [4.5]  # (4 + 5) / 2


# --- MASE scale -----------------------------------------------------------------------------


def test_naive_scale_hand_computed_with_gap_and_origin() -> None:
    history = pl.DataFrame({
        "store_id": ["s"] * 6 + ["t"],
        "item_id": [1] * 7,
        # s: Jan 1: 1, Jan 2: 3, (no Jan 3), Jan 4: 4, Jan 5: null, Jan 6: 10, Jan 7: 2
        # t: Jan 1 only
        "date": [day(d) for d in [1, 2, 4, 5, 6, 7]] + [day(1)],
        "units_sold": [1.0, 3.0, 4.0, None, 10.0, 2.0, 7.0],
    })
    # season 1: |3 - 1| = 2 (Jan 2); Jan 4 has no Jan 3; Jan 5 is null; Jan 6 has a null
    # Jan 5; |2 - 10| = 8 (Jan 7) → mean(2, 8) = 5
    scales = naive_scale(history, season=1, period_days=1).sort("store_id")
    assert scales.columns == ["store_id", "item_id", "mase_scale"]
    assert scales.row(0) == ("s", 1, pytest.approx(5.0))
    assert scales.row(1) == ("t", 1, None)  # a single day has no pair
    # season 3: |4 - 1| = 3 (Jan 4), Jan 6 has no Jan 3, |2 - 4| = 2 (Jan 7) → 2.5
    assert naive_scale(history, 3, 1).sort("store_id").row(0)[2] == pytest.approx(2.5)
    # up to Jan 6: only |3 - 1| = 2; the 10 → 2 drop after the origin is not seen
    cut = naive_scale(history, season=1, period_days=1, origin=day(6)).sort("store_id")
    assert cut.row(0)[2] == pytest.approx(2.0)


# --- against a plain reference, and no leakage ---------------------------------------------


def random_history(seed: int) -> pl.DataFrame:
    """6 series over 60 days, shuffled: random gaps, nulls and many zeros; one starts late."""
    rng = np.random.default_rng(seed)
    rows = []
    for sid in range(6):
        first = 40 if sid == 5 else 0
        for d in range(first, 60):
            if rng.random() < 0.2:
                continue  # gap: no row
            value = None if rng.random() < 0.1 else float(rng.poisson(0.7))
            rows.append({"store_id": f"s{sid % 2}", "item_id": f"i{sid}",
                         "date": JAN + dt.timedelta(days=d), "units_sold": value})
    return pl.DataFrame(rows).sample(fraction=1.0, shuffle=True, seed=seed)  # any row order


def random_targets(seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed + 1)
    rows = [{"store_id": f"s{sid % 2}", "item_id": f"i{sid}",
             "date": JAN + dt.timedelta(days=o + h), "origin": JAN + dt.timedelta(days=o)}
            for sid in range(6) for o in (20, 34, 45) for h in range(1, 15)]
    return pl.DataFrame(rows).sample(fraction=1.0, shuffle=True, seed=int(rng.integers(1e6)))


def reference(history: pl.DataFrame, rows: pl.DataFrame, fn: str, n: int) -> list:
    """Row by row in Python: seasonal naive with season n, or moving average of n days."""
    seen = {(r["store_id"], r["item_id"], r["date"]): r["units_sold"]
            for r in history.iter_rows(named=True) if r["units_sold"] is not None}
    out = []
    for r in rows.iter_rows(named=True):
        key, t, o = (r["store_id"], r["item_id"]), r["date"], r["origin"]
        past = [(d, v) for (s, i, d), v in seen.items() if (s, i) == key and d <= o]
        if fn == "seasonal":
            c = t
            while c > o:
                c -= dt.timedelta(days=n)
            last = max(past)[1] if past else None
            out.append(seen.get((*key, c), last))
        else:
            window = [v for d, v in past if d > o - dt.timedelta(days=n)]
            out.append(sum(window) / len(window) if window else None)
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_baselines_match_a_row_by_row_reference(seed: int) -> None:
    history, rows = random_history(seed), random_targets(seed)
    for season in (7, 3):
        assert seasonal_naive(history, rows, season, 1).to_list() == \
            reference(history, rows, "seasonal", season)
    for window in (1, 7, 28):
        got = moving_average(history, rows, window, 1).to_list()
        want = reference(history, rows, "ma", window)
        assert [g is None for g in got] == [w is None for w in want]
        assert [g for g in got if g is not None] == \
            pytest.approx([w for w in want if w is not None])


def test_changing_actuals_after_the_origin_changes_no_baseline() -> None:
    history, rows = random_history(3), random_targets(3)
    rng = np.random.default_rng(9)
    for origin in rows.get_column("origin").unique():
        own = rows.filter(pl.col("origin") == origin)
        after = pl.col("date") > origin
        # new values, new nulls, deleted rows and brand-new rows, all after the origin
        perturbed = pl.concat([
            history.with_columns(
                pl.when(after).then(pl.lit(pl.Series(rng.poisson(50, history.height))
                                           .cast(pl.Float64))).otherwise("units_sold")
                .alias("units_sold"))
            .filter(~after | (pl.int_range(pl.len()) % 3 != 0)),
            own.select("store_id", "item_id", "date", pl.lit(999.0).alias("units_sold"))
            .join(history, on=["store_id", "item_id", "date"], how="anti"),
        ])
        assert perturbed.filter(after).get_column("units_sold").sum() > 0  # it did change
        for baseline, n in [(seasonal_naive, 7), (seasonal_naive, 364), (moving_average, 28)]:
            assert baseline(perturbed, own, n, 1).to_list() == \
                baseline(history, own, n, 1).to_list()


def test_missing_columns_are_named() -> None:
    with pytest.raises(ValueError, match="origin"):
        seasonal_naive(HISTORY, HISTORY, 7, 1)


# --- rolling origins and backtest frames --------------------------------------------------


def test_rolling_origins_hand_computed_and_fit_the_horizon() -> None:
    last = dt.date(2024, 6, 30)
    # daily H = 28: last origin June 2; then 28 days back each → May 5, April 7
    assert rolling_origins(last, 28, 1) == [dt.date(2024, 4, 7), dt.date(2024, 5, 5),
                                            dt.date(2024, 6, 2)]
    # step 7 days: June 2, May 26, May 19, oldest first
    assert rolling_origins(last, 28, 1, n_origins=3, step=7) == [
        dt.date(2024, 5, 19), dt.date(2024, 5, 26), dt.date(2024, 6, 2)]
    # weekly H = 8: 56 days before June 30 = May 5; one origin only
    assert rolling_origins(last, 8, 7, n_origins=1) == [dt.date(2024, 5, 5)]
    for horizon, period, n, step in [(28, 1, 5, None), (8, 7, 4, 2), (1, 1, 3, 1)]:
        origins = rolling_origins(last, horizon, period, n, step)
        assert len(origins) == n and origins == sorted(set(origins))
        ends = [o + dt.timedelta(days=horizon * period) for o in origins]
        assert max(ends) == last and all(e <= last for e in ends)


def test_rolling_origins_rejects_non_positive_arguments() -> None:
    with pytest.raises(ValueError):
        rolling_origins(dt.date(2024, 6, 30), 0, 1)


def test_backtest_frame_and_train_mask_split_at_the_origin() -> None:
    features = HISTORY.filter(pl.col("item_id") == "a")  # Jan 1-20, Jan 4 missing, Jan 6 null
    scored = backtest_frame(features, ORIGIN, horizon=7, period_days=1)
    assert scored.get_column("date").to_list() == [day(d) for d in range(11, 18)]
    assert scored.get_column("horizon").to_list() == list(range(1, 8))
    assert scored.get_column("origin").unique().to_list() == [ORIGIN]
    train = features.filter(train_mask(features, ORIGIN))
    # Jan 1-10 minus the missing Jan 4 and the null Jan 6
    assert train.get_column("date").to_list() == [day(d) for d in (1, 2, 3, 5, 7, 8, 9, 10)]


def test_backtest_frame_weekly_horizon_in_weeks() -> None:
    weeks = [JAN + dt.timedelta(weeks=w) for w in range(10)]
    features = pl.DataFrame({"date": weeks, "units_sold": [1.0] * 10})
    scored = backtest_frame(features, weeks[3], horizon=4, period_days=7)
    assert scored.get_column("date").to_list() == weeks[4:8]
    assert scored.get_column("horizon").to_list() == [1, 2, 3, 4]
