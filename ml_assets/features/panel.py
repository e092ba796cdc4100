"""Window maths on long data without sorting it or grouping it.

The rows are scattered once into a (period x series) matrix. A lag is a slice of it, a trailing
window is two slices of a cumulative sum, and one `take` per feature brings the result back in
the frame's own row order. Time runs down the matrix rows: date-ordered data (as Delta
partitions return it) touches memory in order, and cumulative sums run row by row. Cells with no
data (gaps, before a launch) are NaN and windows ignore them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import polars as pl

try:  # numpy >= 2
    from numpy._core.multiarray import _set_madvise_hugepage
except ImportError:  # pragma: no cover - numpy 1.x
    try:
        from numpy.core.multiarray import _set_madvise_hugepage
    except ImportError:
        _set_madvise_hugepage = None


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


@contextmanager
def small_pages() -> Iterator[None]:
    """Allocates numpy arrays without transparent huge pages inside the block.

    numpy madvises every large array for huge pages. On our VMs a fresh huge page costs far more
    than the small pages it replaces: a first build_features on 10M rows spent 7 s of its 9 s in
    the kernel with them, 2 s without (benchmarks/README.md). Restores numpy's setting after."""
    if _set_madvise_hugepage is None:
        yield
        return
    before = _set_madvise_hugepage(False)
    try:
        yield
    finally:
        _set_madvise_hugepage(before)


def _local_codes(frame: pl.DataFrame, keys: list[str]) -> list[np.ndarray]:
    """Dense codes 0..n-1 over each key column's own values. (polars' Categorical codes are
    shared by the whole process, so their range says nothing about this frame.) One query per
    step for all the key columns, which polars runs in parallel."""
    text = frame.select(pl.col(key).cast(pl.Utf8) for key in keys)
    levels = text.select(pl.all().unique().drop_nulls().implode()).row(0)
    codes = text.select(pl.col(key).cast(pl.Enum(values)).to_physical().cast(pl.Int64)
                        for key, values in zip(keys, levels, strict=True))
    return [codes.get_column(key).to_numpy() for key in keys]


def build_panel(frame: pl.DataFrame, keys: list[str], period_days: int) -> Panel:
    """Indexes rows by series and period. Rows must be unique per (keys, date)."""
    combined = np.zeros(frame.height, dtype=np.int64)
    for col in _local_codes(frame, keys):
        combined = combined * (int(col.max()) + 1 if col.size else 1) + col
    present = np.zeros(int(combined.max()) + 1 if combined.size else 1, dtype=bool)
    present[combined] = True
    sid = (np.cumsum(present) - 1)[combined]  # dense ids without sorting the rows
    days = frame.get_column("date")
    fast = days.dtype == pl.Date and frame.height > 0 and days.null_count() == 0
    if fast:  # days since the epoch: integer maths, no duration column
        physical = days.to_physical().to_numpy()
        offset = physical.astype(np.int64)
        offset -= int(physical.min())
    else:
        offset = (days - days.min()).dt.total_days().to_numpy() if frame.height \
            else np.zeros(0, int)
    if fast and period_days == 1:  # whole days are always on a daily grid
        t = offset
    else:
        if np.any(offset % period_days):
            bad = int(np.flatnonzero(offset % period_days)[0])
            raise ValueError(f"row {bad}: date {days[bad]} is not on the {period_days}-day "
                             f"grid that starts {days.min()}")
        t = offset // period_days
    n_series = int(present.sum())
    representative = np.empty(n_series, dtype=np.int64)
    representative[sid] = np.arange(frame.height)  # every row of a series has the same keys
    return Panel(sid=sid, t=t, n_series=n_series, n_periods=int(t.max()) + 1 if t.size else 0,
                 representative=representative, flat=t * n_series + sid)


def cumsum_rows(m: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Cumulative sum down the periods. Row by row beats numpy's strided axis-0 cumsum here.
    `out=m` sums in place."""
    out = np.empty_like(m) if out is None else out
    if out is not m:
        out[0] = m[0]
    for i in range(1, len(m)):
        np.add(out[i - 1], m[i], out=out[i])
    return out


def trailing(c: np.ndarray, end: int, w: int) -> np.ndarray:
    """Window totals from a cumulative matrix: periods [t - end - w + 1, t - end] at row t."""
    out = np.empty_like(c)
    n = len(c)
    out[:end] = 0.0
    if end < n:
        out[end:] = c[: n - end]
    if end + w < n:
        out[end + w:] -= c[: n - end - w]
    return out


class Windows:
    """Trailing-window statistics of one (period x series) matrix.

    A window of w periods ending `end` periods before a cell covers periods
    [t - end - w + 1, t - end]. Everything is slices of cumulative sums: no sort, no group-by.
    `like`: the Windows of a matrix with NaN in the same cells; its counts are reused.
    """

    def __init__(self, m: np.ndarray, centre_for_std: bool = False,
                 like: Windows | None = None):
        valid = ~np.isnan(m)
        if like is None:
            counts = valid.astype(np.float64)
            self.count = cumsum_rows(counts, out=counts)
            self._counts: dict[tuple[int, int], np.ndarray] = {}
        else:
            self.count, self._counts = like.count, like._counts
        values = np.where(valid, m, 0.0)
        self.sum = cumsum_rows(values, out=values)
        self.sq: np.ndarray | None = None
        if centre_for_std:
            # Centred on each series' first value, known before any window: keeps the digits
            # of the sum of squares on large levels, and no later value leaks in.
            self.first = np.nan_to_num(np.take_along_axis(m, valid.argmax(axis=0)[None, :], 0))
            centred = np.subtract(m, self.first)
            centred[~valid] = 0.0
            np.multiply(centred, centred, out=centred)
            self.sq = cumsum_rows(centred, out=centred)

    def _count(self, end: int, w: int) -> np.ndarray:
        """Values per window; shared by every statistic (and `like` sibling) of that window."""
        key = (end, w)
        if key not in self._counts:
            self._counts[key] = trailing(self.count, end, w)
        return self._counts[key]

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
        n = self._count(end, w)
        out = trailing(self.sum, end, w)
        with np.errstate(invalid="ignore", divide="ignore"):
            np.divide(out, n, out=out)
        out[n < min_samples] = np.nan
        return out

    def std(self, end: int, w: int, min_samples: int = 2) -> np.ndarray:
        """Sample standard deviation (ddof 1)."""
        assert self.sq is not None, "built without centre_for_std"
        n = self._count(end, w)
        s1 = trailing(self.sum, end, w)
        s1 -= n * self.first
        var = trailing(self.sq, end, w)
        with np.errstate(invalid="ignore", divide="ignore"):
            np.multiply(s1, s1, out=s1)
            np.divide(s1, n, out=s1)
            np.subtract(var, s1, out=var)
            np.divide(var, n - 1, out=var)  # (sq - s1 * s1 / n) / (n - 1)
        del s1
        np.maximum(var, 0.0, out=var)
        np.sqrt(var, out=var)
        var[n < min_samples] = np.nan
        return var


def lagged_mean(m: np.ndarray, lags: list[int]) -> np.ndarray:
    """`Windows.mean_of([shift(m, k) for k in lags])` without building the shifted copies."""
    total = np.zeros_like(m)
    count = np.zeros_like(m)
    n = len(m)
    for k in lags:
        if k >= n:
            continue
        past = m[: n - k]
        valid = ~np.isnan(past)
        np.add(total[k:], past, out=total[k:], where=valid)
        count[k:] += valid
    with np.errstate(invalid="ignore", divide="ignore"):
        np.divide(total, count, out=total)
    total[count == 0] = np.nan
    return total


def shift(m: np.ndarray, k: int) -> np.ndarray:
    """The value k periods earlier in the same series; NaN before period 0."""
    out = np.empty_like(m)
    out[: min(k, len(m))] = np.nan
    if k < len(m):
        out[k:] = m[: len(m) - k]
    return out


def rolling_max(m: np.ndarray, end: int, w: int) -> np.ndarray:
    """Max over the trailing window, ignoring NaN; NaN where the window holds none."""
    filled = np.where(np.isnan(m), -np.inf, m)
    peak = _running_max(filled, w)
    peak[np.isneginf(peak)] = np.nan
    return shift(peak, end)


def _running_max(x: np.ndarray, w: int) -> np.ndarray:
    """Max over periods [t - w + 1, t] (from period 0 on), by van Herk / Gil-Werman: running
    maxima forwards and backwards within blocks of w periods, then one maximum of the two. Each
    step is a whole row (every series at once), so the period loop costs 3 passes, whatever w."""
    n = len(x)
    if n == 0 or w <= 1:
        return x.copy()
    ahead = np.empty_like(x)  # max from the start of t's block up to t
    for i in range(n):
        if i % w:
            np.maximum(ahead[i - 1], x[i], out=ahead[i])
        else:
            ahead[i] = x[i]
    behind = np.empty_like(x)  # max from t up to the end of t's block
    for i in range(n - 1, -1, -1):
        if (i + 1) % w and i + 1 < n:
            np.maximum(behind[i + 1], x[i], out=behind[i])
        else:
            behind[i] = x[i]
    # [t - w + 1, t] spans the end of one block and the start of the next (or is one block)
    if w <= n:
        np.maximum(behind[: n - w + 1], ahead[w - 1:], out=ahead[w - 1:])
    return ahead


def forward_fill(m: np.ndarray) -> np.ndarray:
    """Last non-NaN value at or before each period, within each series."""
    out = m.copy()
    for i in range(1, len(out)):
        row = out[i]
        np.copyto(row, out[i - 1], where=np.isnan(row))
    return out
