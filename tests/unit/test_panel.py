"""Panel window maths (ml_assets.features.panel) against plain pandas per-series references.

Every check builds the same long data twice: as shuffled polars rows for the panel, and as a
pandas frame on the full (series x period) grid, where the reference is the obvious
`groupby(series).shift()/.rolling()/.ffill()`. Missing rows (gaps, late launches) are missing
periods, not missing rows, in both.
"""

from __future__ import annotations

import datetime as dt
import tracemalloc
import uuid

import numpy as np
import pandas as pd
import polars as pl
import pytest

from ml_assets.features.panel import (
    Panel,
    Windows,
    build_panel,
    cumsum_rows,
    forward_fill,
    rolling_max,
    shift,
    trailing,
)

KEYS = ["store_id", "item_id"]
START = dt.date(2024, 1, 1)  # a Monday
N_PERIODS = 23
WINDOW_SIZES = [1, 2, 5, 13, N_PERIODS + 7]  # w = 1 up to w longer than every series
ENDS = [0, 1, 4]


class Data:
    """Random long data with gaps and NaN values, plus its pandas grid and panel."""

    def __init__(self, seed: int, period_days: int = 1, n_periods: int = N_PERIODS):
        rng = np.random.default_rng(seed)
        # (store, item) pairs chosen so that a naive string concatenation would collide:
        # ("S1", "12") + ("S11", "2") both give "S112".
        pairs = [("S1", "12"), ("S11", "2"), ("S2", "12"), ("S2", "7"), ("S3", "9")]
        rows = []
        for s, (store, item) in enumerate(pairs):
            periods = np.arange(n_periods)
            if s == 3:
                periods = periods[periods >= n_periods // 2]  # launched mid-history
            elif s == 4:
                periods = np.array([n_periods // 3])  # a series of one row
            else:
                keep = rng.random(len(periods)) < 0.7
                keep[[0, -1]] = s == 0  # only series 0 spans the whole grid
                periods = periods[keep]
            for p in periods:
                value = float(rng.poisson(6.0)) if rng.random() > 0.15 else np.nan
                rows.append((store, item, f"{store}|{item}", int(p), value))
        order = rng.permutation(len(rows))
        rows = [rows[i] for i in order]  # shuffled: the panel must not rely on row order
        self.period_days = period_days
        self.n_periods = n_periods
        self.labels = [f"{a}|{b}" for a, b in pairs]
        self.pdf = pd.DataFrame(rows, columns=["store_id", "item_id", "series", "p", "value"])
        self.frame = pl.DataFrame({
            "date": [START + dt.timedelta(days=period_days * r[3]) for r in rows],
            "store_id": [r[0] for r in rows],
            "item_id": [r[1] for r in rows],
            "value": [r[4] for r in rows],
        }, schema={"date": pl.Date, "store_id": pl.Utf8, "item_id": pl.Utf8,
                   "value": pl.Float64})
        self.panel = build_panel(self.frame, KEYS, period_days)
        grid = pd.MultiIndex.from_product([self.labels, range(n_periods)], names=["series", "p"])
        self.grid = self.pdf.set_index(["series", "p"])["value"].reindex(grid)

    @property
    def values(self) -> np.ndarray:
        return self.frame.get_column("value").to_numpy()

    def matrix(self) -> np.ndarray:
        return self.panel.matrix(self.values)

    def sid_of(self) -> dict[str, int]:
        """Series label -> panel column, read off the panel's own row indexing."""
        return dict(zip(self.pdf["series"], self.panel.sid.tolist(), strict=True))

    def to_matrix(self, reference: pd.Series | pd.DataFrame) -> np.ndarray:
        """A reference on the pandas grid (long, or wide with one column per series), laid
        out like the panel's matrix."""
        out = np.full((self.n_periods, self.panel.n_series), np.nan)
        for label, sid in self.sid_of().items():
            column = (reference[label] if isinstance(reference, pd.DataFrame)
                      else reference.xs(label, level="series"))
            out[:, sid] = column.to_numpy()
        return out

    def per_series(self, fn) -> np.ndarray:
        """`fn` applied to each series alone: `groupby(series).transform(fn)`."""
        ref = self.grid.groupby(level="series", group_keys=False).transform(fn)
        return self.to_matrix(ref)

    @property
    def wide(self) -> pd.DataFrame:
        """The grid as (period x series): the same references, faster for many windows, as
        its shift, rolling and ffill work column by column, i.e. per series."""
        return self.grid.unstack("series")


@pytest.fixture(scope="module", params=[1, 7], ids=["daily", "weekly"])
def data(request: pytest.FixtureRequest) -> Data:
    return Data(seed=11, period_days=request.param)


def assert_close(actual: np.ndarray, expected: np.ndarray, **tol) -> None:
    assert actual.shape == expected.shape
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    np.testing.assert_allclose(actual, expected, equal_nan=True, **tol)


# --- build_panel, matrix, gather ---------------------------------------------------------------


def test_build_panel_indexes_series_and_periods(data: Data) -> None:
    panel = data.panel
    assert isinstance(panel, Panel)
    assert panel.n_series == len(data.labels)
    assert panel.n_periods == data.n_periods
    np.testing.assert_array_equal(panel.t, data.pdf["p"].to_numpy())
    # one dense id per (store, item) pair, the same for every row of it
    sid_by_label = data.pdf.assign(sid=panel.sid).groupby("series")["sid"].agg(["min", "max"])
    assert (sid_by_label["min"] == sid_by_label["max"]).all()
    assert sorted(sid_by_label["min"]) == list(range(panel.n_series))
    # a representative row of each series really belongs to it
    reps = data.pdf.iloc[panel.representative]
    assert reps["series"].map(data.sid_of()).tolist() == list(range(panel.n_series))
    np.testing.assert_array_equal(panel.flat, panel.t * panel.n_series + panel.sid)


def test_matrix_scatters_rows_and_gather_brings_them_back(data: Data) -> None:
    m = data.matrix()
    assert m.shape == (data.n_periods, data.panel.n_series)
    assert_close(m, data.to_matrix(data.grid))  # gaps and launches are NaN cells
    np.testing.assert_array_equal(data.panel.gather(m), data.values)  # row order, NaN included
    marker = np.arange(data.frame.height, dtype=float)
    np.testing.assert_array_equal(data.panel.gather(data.panel.matrix(marker)), marker)


def test_build_panel_numeric_keys_and_single_key() -> None:
    frame = pl.DataFrame({"date": [START, START, START + dt.timedelta(days=2)],
                          "store_id": [1, 11, 1], "item_id": [12, 2, 12]})
    panel = build_panel(frame, KEYS, 1)
    assert panel.n_series == 2 and panel.n_periods == 3
    assert panel.sid[0] == panel.sid[2] != panel.sid[1]
    single = build_panel(frame, ["store_id"], 1)
    assert single.n_series == 2
    np.testing.assert_array_equal(single.t, [0, 0, 2])


def test_weekly_grid_accepts_weeks_and_rejects_an_off_grid_date() -> None:
    good = Data(seed=3, period_days=7).frame
    assert build_panel(good, KEYS, 7).n_periods == N_PERIODS
    bad_row = 5
    dates = good.get_column("date").to_list()
    dates[bad_row] = dates[bad_row] + dt.timedelta(days=3)
    bad = good.with_columns(pl.Series("date", dates, dtype=pl.Date))
    with pytest.raises(ValueError, match=rf"row {bad_row}\b.*{dates[bad_row]}.*7-day grid"):
        build_panel(bad, KEYS, 7)
    # the same dates are fine on a daily grid
    assert build_panel(bad, KEYS, 1).n_periods == 7 * (N_PERIODS - 1) + 1


def test_build_panel_memory_does_not_depend_on_other_categoricals_in_the_process() -> None:
    alive = pl.Series([f"other-{uuid.uuid4().hex}" for i in range(1000)]).cast(pl.Categorical)
    tag = uuid.uuid4().hex  # ids never seen by the process before: they get fresh codes
    frame = pl.DataFrame({"date": [START, START], "store_id": [f"S-{tag}", f"T-{tag}"],
                          "item_id": [f"I-{tag}", f"J-{tag}"]})
    tracemalloc.start()
    try:
        panel = build_panel(frame, KEYS, 1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert alive.len() == 1000  # keeps the other categories alive during the call
    assert panel.n_series == 2
    assert peak < 1_000_000, f"build_panel on 2 rows peaked at {peak / 1e6:.0f} MB"


# --- shift -------------------------------------------------------------------------------------

@pytest.mark.parametrize("k", [
    0, 1, 3, N_PERIODS - 1, N_PERIODS,
    N_PERIODS + 1, 2 * N_PERIODS - 2,
    2 * N_PERIODS - 1, 2 * N_PERIODS + 5,
])
def test_shift_matches_groupby_shift(data: Data, k: int) -> None:
    assert_close(shift(data.matrix(), k), data.per_series(lambda s: s.shift(k)))


# --- cumulative sums and trailing windows ------------------------------------------------------


def test_cumsum_rows_matches_cumsum(data: Data) -> None:
    m = np.nan_to_num(data.matrix())
    np.testing.assert_allclose(cumsum_rows(m), np.cumsum(m, axis=0))
    single = np.array([[1.5, 2.0]])
    np.testing.assert_array_equal(cumsum_rows(single), single)


def _cases(min_samples: tuple[int, ...] = (1,)):
    return [(end, w, k) for end in ENDS for w in WINDOW_SIZES for k in min_samples]


def _rolling(frame: pd.DataFrame, end: int, w: int, min_samples: int):
    """pandas rejects min_periods > window; such a window never holds enough: all NaN."""
    shifted = frame.shift(end)
    if min_samples > w:
        shifted = shifted * np.nan
    return shifted.rolling(w, min_periods=min(min_samples, w))


def test_trailing_totals_match_rolling_sum(data: Data) -> None:
    c = cumsum_rows(np.nan_to_num(data.matrix()))
    for end, w, _ in _cases():
        expected = data.to_matrix(_rolling(data.wide.fillna(0.0), end, w, 1).sum())
        np.testing.assert_allclose(trailing(c, end, w), np.nan_to_num(expected), atol=1e-9,
                                   err_msg=f"end={end} w={w}")


def test_windows_mean_matches_rolling_mean(data: Data) -> None:
    plain, centred = Windows(data.matrix()), Windows(data.matrix(), centre_for_std=True)
    for end, w, k in _cases(min_samples=(1, 3)):
        expected = data.to_matrix(_rolling(data.wide, end, w, k).mean())
        for windows in (plain, centred):
            assert_close(windows.mean(end, w, k), expected, rtol=1e-12, atol=1e-12,
                         err_msg=f"end={end} w={w} min_samples={k}")
        if k == 1:  # the default
            assert_close(plain.mean(end, w), expected, rtol=1e-12, atol=1e-12)


def test_windows_std_matches_rolling_std(data: Data) -> None:
    windows = Windows(data.matrix(), centre_for_std=True)
    for end, w, k in _cases(min_samples=(2, 4)):
        expected = data.to_matrix(_rolling(data.wide, end, w, k).std(ddof=1))
        assert_close(windows.std(end, w, k), expected, rtol=1e-9, atol=1e-7,
                     err_msg=f"end={end} w={w} min_samples={k}")
        if k == 2:  # the default
            assert_close(windows.std(end, w), expected, rtol=1e-9, atol=1e-7)


def test_windows_std_keeps_digits_on_large_levels() -> None:
    """A level of 1e7 with unit noise: naive sum-of-squares variance would lose every digit."""
    rng = np.random.default_rng(5)
    m = 1e7 + rng.normal(0, 1, size=(400, 3))
    m[rng.random(m.shape) < 0.2] = np.nan
    expected = pd.DataFrame(m).shift(3).rolling(28, min_periods=2).std().to_numpy()
    assert_close(Windows(m, centre_for_std=True).std(3, 28), expected, rtol=1e-6)


def test_windows_std_needs_centre_for_std() -> None:
    with pytest.raises(AssertionError):
        Windows(np.ones((3, 1))).std(0, 2)


def test_windows_mean_of_ignores_nan(data: Data) -> None:
    mats = [shift(data.matrix(), k) for k in (1, 2, 5)]
    stacked = np.stack(mats)
    count = (~np.isnan(stacked)).sum(axis=0)
    expected = np.where(count > 0, np.nansum(stacked, axis=0) / np.maximum(count, 1), np.nan)
    assert_close(Windows.mean_of(mats), expected, rtol=1e-12)
    assert np.isnan(Windows.mean_of([np.full((2, 2), np.nan)] * 3)).all()


# --- rolling max and forward fill --------------------------------------------------------------


def test_rolling_max_matches_rolling_max(data: Data) -> None:
    m = data.matrix()
    for end in ENDS:
        for w in [*WINDOW_SIZES, 3, 4, 52]:  # odd and even sizes place scipy's origin apart
            expected = data.to_matrix(_rolling(data.wide, end, w, 1).max())
            assert_close(rolling_max(m, end, w), expected, err_msg=f"end={end} w={w}")


def test_forward_fill_matches_groupby_ffill(data: Data) -> None:
    m = data.matrix()
    before = m.copy()
    assert_close(forward_fill(m), data.per_series(lambda s: s.ffill()))
    np.testing.assert_array_equal(m, before)  # the input is not modified


def test_forward_fill_feeds_windows_like_pandas(data: Data) -> None:
    """The price features' path: ffill, then a trailing mean ending `end` periods back."""
    expected = data.to_matrix(_rolling(data.wide.ffill(), 2, 5, 1).mean())
    assert_close(Windows(forward_fill(data.matrix())).mean(2, 5), expected, rtol=1e-12)
