"""Window maths on long data without sorting it or grouping it.

The rows are scattered once into a (period x series) matrix. A lag is a slice of it, a trailing
window is two slices of a cumulative sum, and one `take` per feature brings the result back in
the frame's own row order. Time runs down the matrix rows: date-ordered data (as Delta
partitions return it) touches memory in order, and cumulative sums run row by row. Cells with no
data (gaps, before a launch) are NaN and windows ignore them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy.ndimage import maximum_filter1d


@dataclass(frozen=True)
class Panel:
    sid: np.ndarray  # series index per row
    t: np.ndarray  # period index per row
    n_series: int
    n_periods: int
    representative: np.ndarray  # one row index per series (any row of it)

    flat: np.ndarray  # each row's cell in the flattened matrix

    def matrix(self, values: np.ndarray) -> np.ndarray:
        out = np.full((self.n_periods, self.n_series), np.nan)
        out.ravel()[self.flat] = values
        return out

    def gather(self, matrix: np.ndarray) -> np.ndarray:
        """Each row's own cell: back to the frame's row order."""
        return matrix.ravel().take(self.flat)


def build_panel(frame: pl.DataFrame, keys: list[str], period_days: int) -> Panel:
    """Indexes rows by series and period. Rows must be unique per (keys, date)."""
    combined = np.zeros(frame.height, dtype=np.int64)
    for key in keys:
        codes = frame.get_column(key).cast(pl.Utf8).cast(pl.Categorical).to_physical()
        col = codes.cast(pl.Int64).to_numpy()
        combined = combined * (int(col.max()) + 1 if col.size else 1) + col
    present = np.zeros(int(combined.max()) + 1 if combined.size else 1, dtype=bool)
    present[combined] = True
    sid = (np.cumsum(present) - 1)[combined]  # dense ids without sorting the rows
    days = frame.get_column("date")
    offset = (days - days.min()).dt.total_days().to_numpy() if frame.height else np.zeros(0, int)
    if np.any(offset % period_days):
        bad = int(np.flatnonzero(offset % period_days)[0])
        raise ValueError(f"row {bad}: date {days[bad]} is not on the {period_days}-day grid "
                         f"that starts {days.min()}")
    t = offset // period_days
    n_series = int(present.sum())
    representative = np.empty(n_series, dtype=np.int64)
    representative[sid] = np.arange(frame.height)  # every row of a series has the same keys
    return Panel(sid=sid, t=t, n_series=n_series, n_periods=int(t.max()) + 1 if t.size else 0,
                 representative=representative, flat=t * n_series + sid)


def cumsum_rows(m: np.ndarray) -> np.ndarray:
    """Cumulative sum down the periods. Row by row beats numpy's strided axis-0 cumsum here."""
    out = np.empty_like(m)
    out[0] = m[0]
    for i in range(1, len(m)):
        np.add(out[i - 1], m[i], out=out[i])
    return out


def trailing(c: np.ndarray, end: int, w: int) -> np.ndarray:
    """Window totals from a cumulative matrix: periods [t - end - w + 1, t - end] at row t."""
    out = np.zeros_like(c)
    n = len(c)
    if end < n:
        out[end:] = c[: n - end]
    if end + w < n:
        out[end + w:] -= c[: n - end - w]
    return out


class Windows:
    """Trailing-window statistics of one (period x series) matrix.

    A window of w periods ending `end` periods before a cell covers periods
    [t - end - w + 1, t - end]. Everything is slices of cumulative sums: no sort, no group-by.
    """

    def __init__(self, m: np.ndarray, centre_for_std: bool = False):
        valid = ~np.isnan(m)
        values = np.where(valid, m, 0.0)
        self.count = cumsum_rows(valid.astype(np.float64))
        self.sum = cumsum_rows(values)
        self.sq: np.ndarray | None = None
        if centre_for_std:
            # Centred on each series' first value, known before any window: keeps the digits
            # of the sum of squares on large levels, and no later value leaks in.
            self.first = np.nan_to_num(np.take_along_axis(m, valid.argmax(axis=0)[None, :], 0))
            centred = np.where(valid, m - self.first, 0.0)
            self.sq = cumsum_rows(centred * centred)

    @staticmethod
    def mean_of(matrices: list[np.ndarray]) -> np.ndarray:
        """Cell-wise mean of several matrices, ignoring NaN; NaN where all are NaN."""
        total = np.zeros_like(matrices[0])
        count = np.zeros_like(matrices[0])
        for m in matrices:
            valid = ~np.isnan(m)
            np.add(total, m, out=total, where=valid)
            count += valid
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, total / count, np.nan)

    def mean(self, end: int, w: int, min_samples: int = 1) -> np.ndarray:
        n = trailing(self.count, end, w)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n >= min_samples, trailing(self.sum, end, w) / n, np.nan)

    def std(self, end: int, w: int, min_samples: int = 2) -> np.ndarray:
        """Sample standard deviation (ddof 1)."""
        assert self.sq is not None, "built without centre_for_std"
        n = trailing(self.count, end, w)
        s1 = trailing(self.sum, end, w) - n * self.first
        with np.errstate(invalid="ignore", divide="ignore"):
            var = (trailing(self.sq, end, w) - s1 * s1 / n) / (n - 1)
        return np.where(n >= min_samples, np.sqrt(np.maximum(var, 0.0)), np.nan)


def shift(m: np.ndarray, k: int) -> np.ndarray:
    """The value k periods earlier in the same series; NaN before period 0."""
    out = np.empty_like(m)
    out[: min(k, len(m))] = np.nan
    out[k:] = m[: len(m) - k]
    return out


def rolling_max(m: np.ndarray, end: int, w: int) -> np.ndarray:
    """Max over the trailing window, ignoring NaN; NaN where the window holds none."""
    filled = np.where(np.isnan(m), -np.inf, m)
    # maximum_filter1d centres its window; origin moves it to end at the current period
    peak = maximum_filter1d(filled, size=w, axis=0, mode="constant", cval=-np.inf,
                            origin=(w - 1) // 2)
    peak[np.isneginf(peak)] = np.nan
    return shift(peak, end)


def forward_fill(m: np.ndarray) -> np.ndarray:
    """Last non-NaN value at or before each period, within each series."""
    out = m.copy()
    for i in range(1, len(out)):
        row = out[i]
        np.copyto(row, out[i - 1], where=np.isnan(row))
    return out
