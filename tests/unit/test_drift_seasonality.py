"""The seasonality-aware drift reference (ml_assets.monitoring.drift.seasonal_reference): its
rule on hand-made dates, then the issue's test on the simulated world. A year without scenario
raises no drift alarm in any weekly window, holidays and season changes included; a demand level
shift does, in every window once the lagged features have seen it.

The world is the default one (20 stores x 100 items, seed 7), started two years before the
history used. The simulator launches 12% of its items in its first 18 months, each ramping up
for months; against such a launch-era year the ramps read as drift: with the world started with
the history, seeds 1, 2, 3 and 7 raised 5, 3, 2 and 1 false alarms in the year (0 each here).
"""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from ml_assets.features.transforms import FeatureSpec, build_features
from ml_assets.monitoring.drift import (
    DriftReport,
    DriftThresholds,
    drift_report,
    monitored_columns,
    seasonal_reference,
)
from ml_assets.simulation import Scenario, World, WorldConfig
from ml_assets.training.dataset import model_columns

WEEK = dt.timedelta(weeks=1)
WORLD_START = dt.date(2021, 1, 4)
HISTORY_START, HISTORY_END = dt.date(2022, 12, 26), dt.date(2026, 1, 5)
SPEC = FeatureSpec()  # daily, horizon 28
EARLIEST = HISTORY_START + dt.timedelta(days=SPEC.lookback_periods)  # lags complete from here
MONDAYS = [dt.date(2024, 12, 30) + k * WEEK for k in range(53)]  # every week of 2025
SHIFT = dt.date(2025, 6, 2)
DEMAND_RE = "^(lag_|seasonal_lag_mean|mean_|std_|zero_share_)"  # read from units_sold


# --- the rule ----------------------------------------------------------------------------------


def daily(start: dt.date, end: dt.date) -> pl.DataFrame:
    return pl.DataFrame({"date": pl.date_range(start, end, "1d", closed="left", eager=True)})


def test_whole_weeks_meet_the_same_calendar_dates_last_year() -> None:
    history = daily(dt.date(2023, 1, 2), dt.date(2025, 6, 30))
    rows, win = seasonal_reference(history, dt.date(2025, 3, 3), dt.date(2025, 3, 10))
    assert (win.rule, win.start, win.end) == ("last_year", dt.date(2024, 2, 25),
                                             dt.date(2024, 3, 17))  # 3 Mar 2024 +- 1 week
    assert rows.height == 21 and win.weekdays == tuple(range(1, 8))
    _, christmas = seasonal_reference(history, dt.date(2024, 12, 23), dt.date(2024, 12, 30),
                                      tolerance_weeks=0)
    assert christmas.start == dt.date(2023, 12, 23)  # Christmas on the same date, not 2 days off


def test_part_weeks_meet_their_weekdays_52_weeks_back() -> None:
    history = daily(dt.date(2023, 1, 2), dt.date(2025, 6, 30))
    rows, win = seasonal_reference(history, dt.date(2025, 3, 4), dt.date(2025, 3, 7))  # Tue-Thu
    assert (win.rule, win.start, win.end) == ("last_year", dt.date(2024, 2, 27),
                                             dt.date(2024, 3, 15))
    assert win.weekdays == (2, 3, 4) and rows.height == 9
    assert set(rows.get_column("date").dt.weekday()) == {2, 3, 4}


def test_short_history_falls_back_to_the_recent_weeks() -> None:
    history = daily(dt.date(2024, 9, 2), dt.date(2025, 6, 30))
    rows, win = seasonal_reference(history, dt.date(2025, 3, 3), dt.date(2025, 3, 10))
    assert (win.rule, win.start, win.end) == ("recent", dt.date(2025, 2, 3), dt.date(2025, 3, 3))
    # the training data ended months ago: its last four weeks
    ended = daily(dt.date(2024, 9, 2), dt.date(2025, 2, 1))
    _, win = seasonal_reference(ended, dt.date(2025, 6, 2), dt.date(2025, 6, 9))
    assert (win.rule, win.start, win.end) == ("recent", dt.date(2025, 1, 4), dt.date(2025, 2, 1))
    # a complete year exists, but its features are still warming up: not used
    _, win = seasonal_reference(daily(dt.date(2024, 1, 1), dt.date(2025, 6, 30)),
                                dt.date(2025, 3, 3), dt.date(2025, 3, 10),
                                earliest=dt.date(2024, 12, 30))
    assert win.rule == "recent" and win.start == dt.date(2025, 2, 3)


def test_widening_is_clipped_in_whole_weeks_and_weekly_data_goes_52_weeks_back() -> None:
    history = daily(dt.date(2024, 2, 28), dt.date(2025, 6, 30))
    _, win = seasonal_reference(history, dt.date(2025, 3, 3), dt.date(2025, 3, 10))
    assert (win.start, win.end) == (dt.date(2024, 3, 3), dt.date(2024, 3, 17))
    weekly = pl.DataFrame({"date": pl.date_range(dt.date(2023, 1, 2), dt.date(2025, 6, 30), "1w",
                                                  eager=True)})
    rows, win = seasonal_reference(weekly, dt.date(2025, 3, 3), dt.date(2025, 3, 10), 7)
    assert win.rule == "last_year" and rows.get_column("date").to_list() == [
        dt.date(2024, 2, 26), dt.date(2024, 3, 4), dt.date(2024, 3, 11)]
    empty, win = seasonal_reference(weekly.clear(), dt.date(2025, 3, 3), dt.date(2025, 3, 10))
    assert empty.is_empty() and win.rule == "none"


def test_only_the_given_series_history_counts() -> None:
    """A series launched last autumn has no last year: the reference falls back to its recent
    weeks, although another series' history reaches back years."""
    old = daily(dt.date(2023, 1, 2), dt.date(2025, 6, 30)).with_columns(item_id=pl.lit("old"))
    new = daily(dt.date(2024, 9, 2), dt.date(2025, 6, 30)).with_columns(item_id=pl.lit("new"))
    history = pl.concat([old, new])
    launched = pl.DataFrame({"item_id": ["new"]})
    rows, win = seasonal_reference(history, dt.date(2025, 3, 3), dt.date(2025, 3, 10),
                                   series=launched)
    assert (win.rule, win.start, win.end) == ("recent", dt.date(2025, 2, 3), dt.date(2025, 3, 3))
    assert rows.height == 28 and set(rows.get_column("item_id")) == {"new"}
    both, win = seasonal_reference(history, dt.date(2025, 3, 3), dt.date(2025, 3, 10),
                                   series=pl.DataFrame({"item_id": ["old", "new"]}))
    assert win.rule == "last_year" and both.get_column("item_id").to_list() == ["old"] * 21


# --- the simulated world -------------------------------------------------------------------------


def simulate(scenarios: tuple[Scenario, ...] = ()) -> pl.DataFrame:
    world = World(WorldConfig(start_date=WORLD_START, scenarios=scenarios))
    if scenarios:  # a day's rows never depend on the range asked for: only re-draw from the shift
        sales = pl.concat([World(WorldConfig(start_date=WORLD_START)).sales(HISTORY_START, SHIFT),
                           world.sales(SHIFT, HISTORY_END)])
    else:
        sales = world.sales(HISTORY_START, HISTORY_END)
    return build_features(sales, SPEC, stores=world.stores, items=world.items,
                          calendar=world.calendar(HISTORY_START, HISTORY_END))


@pytest.fixture(scope="module")
def calm() -> pl.DataFrame:
    return simulate()


@pytest.fixture(scope="module")
def shifted() -> pl.DataFrame:
    return simulate((Scenario("level_shift", SHIFT, 1.3),))


def test_the_series_argument_equals_filtering_the_history_first(calm: pl.DataFrame) -> None:
    """What `feature_drift` passes (the date-sorted table before the window, and the window's
    series) gives the reference its earlier code built by semi-joining the past first."""
    table = calm.sort("date", maintain_order=True)
    dates = table.get_column("date")
    for monday in (EARLIEST + dt.timedelta(days=7 - EARLIEST.weekday()), MONDAYS[10],
                   MONDAYS[40]):
        lo = dates.search_sorted(monday, "left")
        current = table.filter(pl.col("date") >= monday, pl.col("date") < monday + WEEK)
        # a part of the assortment, so that the restriction changes what counts
        series = current.select("store_id", "item_id").unique().sort(
            "store_id", "item_id").head(150)
        past = calm.filter(pl.col("date") < monday).join(
            series, on=["store_id", "item_id"], how="semi")
        before, rule_before = seasonal_reference(past, monday, monday + WEEK, earliest=EARLIEST)
        now, rule_now = seasonal_reference(table.slice(0, lo), monday, monday + WEEK,
                                           earliest=EARLIEST, series=series)
        assert rule_now == rule_before and now.height == before.height > 0
        keys = ["store_id", "item_id", "date"]
        assert_frame_equal(now.sort(keys), before.sort(keys))


def weekly(features: pl.DataFrame, mondays: list[dt.date],
           naive: bool = False) -> dict[dt.date, DriftReport]:
    """Each Monday-week against its seasonal reference (or, `naive`, the 4 weeks before)."""
    cols = model_columns(features)
    numeric, categorical = monitored_columns(cols.numeric, cols.categorical)
    features = features.select("date", *numeric, *categorical)  # filters copy fewer columns
    date, out = pl.col("date"), {}
    for monday in mondays:
        current = features.filter(date >= monday, date < monday + WEEK)
        if naive:
            reference = features.filter(date >= monday - 4 * WEEK, date < monday)
        else:
            # the whole table: the reference never reaches past the window's start
            reference, win = seasonal_reference(features, monday, monday + WEEK,
                                                earliest=EARLIEST)
            assert win.rule == "last_year"
        out[monday] = drift_report(current, reference, numeric, categorical)
    return out


def test_a_year_without_scenario_raises_no_alarm(calm: pl.DataFrame) -> None:
    reports = weekly(calm, MONDAYS)
    shares = {m: r.summary.share_drifted for m, r in reports.items()}
    worst = max(shares, key=shares.__getitem__)
    assert not any(r.summary.alarm for r in reports.values()), (worst, reports[worst].summary)
    assert shares[worst] < DriftThresholds().share
    assert reports[MONDAYS[0]].summary.n_features == 23  # 31 features less 8 calendar ones
    # the weeks of Easter, the summer peak, Black Friday and Christmas are among them
    assert {dt.date(2025, 4, 14), dt.date(2025, 7, 7), dt.date(2025, 11, 24),
            dt.date(2025, 12, 22)} <= set(reports)


def test_a_demand_level_shift_alarms(shifted: pl.DataFrame) -> None:
    """Features read sales up to t - 28: the shift shows four weeks after it, and from six on
    every window alarms, with most of the demand features drifted."""
    reports = weekly(shifted, [m for m in MONDAYS if m >= SHIFT - 2 * WEEK])
    alarms = [m for m, r in reports.items() if r.summary.alarm]
    assert alarms and SHIFT + 3 * WEEK <= alarms[0] <= SHIFT + 6 * WEEK
    for monday in (m for m in reports if m >= SHIFT + 6 * WEEK):
        report = reports[monday]
        demand = report.table.filter("drifted", pl.col("feature").str.contains(DEMAND_RE))
        assert report.summary.alarm and demand.height >= 6, (monday, report.summary)


def test_a_naive_reference_reads_the_season_as_drift(calm: pl.DataFrame) -> None:
    """The 4 weeks before as reference: after Christmas the lagged demand features meet the
    weeks before the peak and drift, where last year's same weeks match. (In this world the
    shares stay under the alarm either way: measured, not asserted.)"""
    january = [m for m in MONDAYS if m < dt.date(2025, 3, 3)]

    def demand_flags(reports: dict[dt.date, DriftReport]) -> int:
        return sum(r.table.filter("drifted", pl.col("feature").str.contains(DEMAND_RE)).height
                   for r in reports.values())
    naive, seasonal = demand_flags(weekly(calm, january, naive=True)), demand_flags(
        weekly(calm, january))
    assert naive >= 5 and naive > 3 * seasonal, (naive, seasonal)
