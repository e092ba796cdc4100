"""Feature and prediction drift: pure, vectorized statistics (no Dagster) and the reference rule.

Numeric columns (null and NaN are missing):
- PSI over the reference's deciles: the distinct reference quantiles at 0, 0.1 .. 1 (actual
  values, so ties collapse: 0/1 gets the bins {0} and (0, 1]) bound the bins below the minimum,
  at it, (e_i-1, e_i], above the maximum, plus one for missing. Shares are floored at EPSILON.
- KS at KS_GRID evenly spaced order statistics of each side (every value of a smaller side):
  at most 1/(KS_GRID - 1) + 1/n below the exact statistic.
- W1 / std(reference) (/ 1 if the std is 0): exact for equal sizes or n + m <= W1_EXACT_MAX,
  else the midpoint rule on the smaller side's quantiles, within range(larger) / min(n, m).
Categorical columns: Jensen-Shannon distance (base 2, in [0, 1]) and PSI over the union of
levels, missing a level of its own. Cost: one numpy sort per numeric column and side, then
searches into the sorted arrays; a hash group-by per categorical column and side.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import polars as pl

BINS = 10
EPSILON = 1e-4
KS_GRID = 8193
W1_EXACT_MAX = 200_000
CHUNK = 1 << 16
PARALLEL_ROWS = 500_000  # below this a thread pool costs more than it saves
TOP = 5
# Functions of the date (the age: of the date and the first sale), as are the `cal_*` attributes
# (is_holiday, event_name): set by the calendar and seen in every training year, never news.
# Against last year's season only movable feasts (Easter: weeks) and the age (+1 year) move.
CALENDAR_FEATURES = ("day_of_week", "day_of_month", "month", "week_of_year", "day_of_year",
                     "periods_since_first_sale")
SCHEMA = {"feature": pl.Utf8, "kind": pl.Utf8, "n_current": pl.Int64, "n_reference": pl.Int64,
          "null_share_current": pl.Float64, "null_share_reference": pl.Float64,
          "psi": pl.Float64, "ks": pl.Float64, "wasserstein_norm": pl.Float64, "js": pl.Float64,
          "score": pl.Float64, "drifted": pl.Boolean}


@dataclass(frozen=True)
class DriftThresholds:
    """A feature drifts when a statistic reaches its threshold (`score`, the largest ratio, >= 1);
    `share` of the features drifted raises the alarm. PSI 0.2 (between the customary 0.1 and
    0.25), KS 0.1, W1/std 0.1 (Evidently's default), JS 0.1. On the simulated default world
    (tests/unit/test_drift_seasonality.py) a 1.3x level shift takes ~9 demand features to W1/std
    0.12-0.3 (pooled over series, PSI and KS hardly move), while without scenario the item-level
    price and promotion features cross 0.1 week to week and no weekly share passed 6/23: 0.3.
    Fewer than `min_rows` rows on either side: reported, never drifted."""

    psi: float = 0.2
    ks: float = 0.1
    wasserstein: float = 0.1
    js: float = 0.1
    share: float = 0.3
    min_rows: int = 100


@dataclass(frozen=True)
class DriftSummary:
    n_features: int
    n_drifted: int
    share_drifted: float
    alarm: bool  # share_drifted >= thresholds.share
    top: tuple[str, ...]  # drifted features, highest score first
    prediction_drifted: bool | None  # None: no prediction column compared


@dataclass(frozen=True)
class DriftReport:
    table: pl.DataFrame  # SCHEMA: one row per feature, then the prediction if any
    summary: DriftSummary


# --- numeric --------------------------------------------------------------------------------


def _sorted_valid(values: pl.Series | np.ndarray) -> tuple[np.ndarray, int]:
    """Sorted non-missing values (a view) and the number of missing ones."""
    a = values.cast(pl.Float64).to_numpy() if isinstance(values, pl.Series) else values
    if isinstance(values, pl.Series) and a.flags.writeable:  # a copy (nulls became NaN): ours
        a.sort()
        s = a
    else:  # a view of polars' or the caller's memory
        s = np.sort(np.asarray(a, dtype=np.float64))
    valid = int(np.searchsorted(s, np.nan, "left"))  # NaN sorts last
    return s[:valid], len(s) - valid


def _chunked_sum(fn: Callable[..., np.ndarray], *arrays: np.ndarray) -> float:
    """sum(fn(*arrays)) by cache-sized slices: array-sized temporaries cost page faults."""
    n = len(arrays[0])
    return float(sum(fn(*(a[i:i + CHUNK] for a in arrays)).sum() for i in range(0, n, CHUNK)))


def _bin_counts(v: np.ndarray, edges: np.ndarray, missing: int) -> np.ndarray:
    if len(edges) == 0:
        return np.array([len(v), missing])
    right = np.searchsorted(v, edges, "right")
    low = np.searchsorted(v, edges[:1], "left")
    return np.concatenate([low, right[:1] - low, np.diff(right), [len(v) - right[-1], missing]])


def _psi(cur: np.ndarray, ref: np.ndarray) -> float:
    p = np.maximum(cur / max(cur.sum(), 1), EPSILON)
    q = np.maximum(ref / max(ref.sum(), 1), EPSILON)
    return float(np.sum((p - q) * np.log(p / q)))


def _ks(c: np.ndarray, r: np.ndarray) -> float:
    def grid(v: np.ndarray) -> np.ndarray:
        return v if len(v) <= KS_GRID else v[np.linspace(0, len(v) - 1, KS_GRID).astype(np.int64)]
    points = np.concatenate([grid(c), grid(r)])
    d = (np.searchsorted(c, points, "right") / len(c)
         - np.searchsorted(r, points, "right") / len(r))
    return float(np.abs(d).max())


def _w1(a: np.ndarray, b: np.ndarray) -> float:
    """W1 = integral over p of |Q_a(p) - Q_b(p)|, from sorted samples."""
    n, m = len(a), len(b)
    if n == m:
        return _chunked_sum(lambda x, y: np.abs(x - y), a, b) / n
    if n + m <= W1_EXACT_MAX:  # merge the breakpoints i/n and j/m, as integers (times n*m)
        i, j = np.arange(1, n + 1) * m, np.arange(1, m + 1) * n
        t = np.empty(n + m, np.int64)
        t[np.arange(n) + (i - 1) // n] = i
        t[np.arange(m) + j // m] = j
        gap = np.abs(a[(t + m - 1) // m - 1] - b[(t + n - 1) // n - 1])
        # a plain sum, not np.dot: BLAS may wake its thread pool, slow on a busy machine
        return float(np.sum(np.diff(t, prepend=0) * gap)) / (n * m)
    big, small = (a, b) if n > m else (b, a)
    ratio = len(big) / len(small)

    def gap(x: np.ndarray, start: int) -> np.ndarray:
        mid = np.ceil((np.arange(start, start + len(x)) + 0.5) * ratio).astype(np.int64) - 1
        return np.abs(x - big[mid])
    total = sum(gap(small[i:i + CHUNK], i).sum() for i in range(0, len(small), CHUNK))
    return float(total) / len(small)


def numeric_drift(current: pl.Series | np.ndarray,
                  reference: pl.Series | np.ndarray) -> dict[str, float]:
    """PSI, KS and W1/std of one numeric column, with row counts and missing shares. KS and
    W1 are NaN when a side has no value (the PSI's missing bin still compares them)."""
    c, c_missing = _sorted_valid(current)
    r, r_missing = _sorted_valid(reference)
    quantiles = np.floor(np.linspace(0, 1, BINS + 1) * (len(r) - 1)).astype(np.int64)
    edges = np.unique(r[quantiles]) if len(r) else np.empty(0)
    n_c, n_r = len(c) + c_missing, len(r) + r_missing
    out = {"n_current": n_c, "n_reference": n_r, "null_share_current": c_missing / max(n_c, 1),
           "null_share_reference": r_missing / max(n_r, 1),
           "psi": _psi(_bin_counts(c, edges, c_missing), _bin_counts(r, edges, r_missing)),
           "ks": np.nan, "wasserstein_norm": np.nan}
    if len(c) and len(r):
        mean = float(r.mean())
        std = np.sqrt(_chunked_sum(lambda x: np.square(x - mean), r) / len(r))
        out["ks"] = _ks(c, r)
        out["wasserstein_norm"] = _w1(c, r) / (std if std > 0 else 1.0)
    return out


# --- categorical ----------------------------------------------------------------------------


def js_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon distance, base 2, of two count (or probability) vectors: in [0, 1]."""
    p, q = p / max(p.sum(), 1e-300), q / max(q.sum(), 1e-300)
    m = (p + q) / 2

    def kl(x: np.ndarray) -> float:
        on = x > 0
        return float(np.sum(x[on] * np.log2(x[on] / m[on])))
    return float(np.sqrt(max((kl(p) + kl(q)) / 2, 0.0)))


def _level_counts(current: pl.Series, reference: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """Counts per level over the union of both sides' levels; null is a level."""
    def counts(s: pl.Series, name: str) -> pl.DataFrame:  # group_by: ~2x value_counts' speed
        out = s.rename("level").to_frame().group_by("level").len(name=name)
        return out.with_columns(pl.col("level").cast(pl.Utf8))
    both = counts(current, "cur").join(counts(reference, "ref"), on="level", how="full",
                                       coalesce=True, nulls_equal=True)
    both = both.select(pl.col("cur", "ref").fill_null(0).cast(pl.Float64))
    return both.get_column("cur").to_numpy(), both.get_column("ref").to_numpy()


def categorical_drift(current: pl.Series, reference: pl.Series) -> dict[str, float]:
    """JS distance and PSI over the levels (null a level), with row counts and null shares."""
    cur, ref = _level_counts(current, reference)
    n_c, n_r = len(current), len(reference)
    return {"n_current": n_c, "n_reference": n_r,
            "null_share_current": current.null_count() / max(n_c, 1),
            "null_share_reference": reference.null_count() / max(n_r, 1),
            "psi": _psi(cur, ref), "js": js_distance(cur, ref) if n_c and n_r else np.nan}


# --- the report -----------------------------------------------------------------------------


def monitored_columns(numeric: Sequence[str],
                      categorical: Sequence[str]) -> tuple[list[str], list[str]]:
    """The feature columns drift is judged on: all but CALENDAR_FEATURES and `cal_*`."""
    def keep(c: str) -> bool:
        return c not in CALENDAR_FEATURES and not c.startswith("cal_")
    return [c for c in numeric if keep(c)], [c for c in categorical if keep(c)]


def _score(stats: dict[str, float], t: DriftThresholds) -> float:
    limits = {"psi": t.psi, "ks": t.ks, "wasserstein_norm": t.wasserstein, "js": t.js}
    ratios = [stats[k] / v for k, v in limits.items() if not np.isnan(stats.get(k, np.nan))]
    return max(ratios, default=np.nan)


def drift_report(current: pl.DataFrame, reference: pl.DataFrame, numeric: Sequence[str],
                 categorical: Sequence[str], thresholds: DriftThresholds | None = None,
                 prediction: str | None = None, workers: int | None = None) -> DriftReport:
    """One row per feature (numeric, then categorical), then the `prediction` column if given:
    judged like a numeric feature, outside the share. `workers`: threads (default: one per
    core, up to 4, for frames of PARALLEL_ROWS rows or more; else 1)."""
    t = thresholds or DriftThresholds()
    jobs = [(c, "numeric") for c in numeric] + [(c, "categorical") for c in categorical]
    jobs += [(prediction, "prediction")] if prediction else []

    def one(job: tuple[str, str]) -> dict[str, object]:
        name, kind = job
        stats = (categorical_drift if kind == "categorical" else numeric_drift)(
            current.get_column(name), reference.get_column(name))
        score = _score(stats, t)
        enough = min(stats["n_current"], stats["n_reference"]) >= t.min_rows
        return {**dict.fromkeys(SCHEMA), "feature": name, "kind": kind, **stats,
                "score": score, "drifted": bool(enough and score >= 1.0)}

    if workers is None:  # numpy's sorts and searches release the GIL: columns overlap
        big = current.height + reference.height >= PARALLEL_ROWS
        workers = min(4, os.cpu_count() or 1) if big else 1
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            rows = list(pool.map(one, jobs))
    else:
        rows = [one(job) for job in jobs]
    table = pl.DataFrame(rows, schema=SCHEMA).with_columns(pl.col(pl.Float64).fill_nan(None))
    feats = table.filter(pl.col("kind") != "prediction")
    drifted = feats.filter("drifted").sort("score", descending=True)
    share = drifted.height / feats.height if feats.height else 0.0
    pred = table.filter(pl.col("kind") == "prediction").get_column("drifted")
    return DriftReport(table, DriftSummary(
        n_features=feats.height, n_drifted=drifted.height, share_drifted=share,
        alarm=share >= t.share, top=tuple(drifted.get_column("feature").head(TOP)),
        prediction_drifted=bool(pred[0]) if len(pred) else None))


# --- the reference: like with like --------------------------------------------------------


@dataclass(frozen=True)
class ReferenceWindow:
    rule: str  # "last_year", "recent", or "none" (no history)
    start: dt.date
    end: dt.date  # exclusive
    weekdays: tuple[int, ...]  # ISO weekdays kept (1 = Monday)


def seasonal_reference(history: pl.DataFrame, start: dt.date, end: dt.date,
                       period_days: int = 1, *, earliest: dt.date | None = None,
                       tolerance_weeks: int = 1, recent_weeks: int = 4,
                       series: pl.DataFrame | None = None
                       ) -> tuple[pl.DataFrame, ReferenceWindow]:
    """The rows of `history` (feature rows with a `date`) to compare [start, end) with.

    1. Same season last year, if that window lies within [earliest, last history date]: for
       whole weeks of daily data the same calendar dates (each weekday as often, and Christmas
       or New Year on the same days: 52 weeks back slips them by 1-2 days, across week ends);
       for shorter windows and weekly data 52 weeks back. Widened by `tolerance_weeks` whole
       weeks a side, clipped to the history and to before `start`: 3 weeks are less noisy.
    2. Otherwise the `recent_weeks` whole weeks before min(start, last history date + 1 day),
       from `earliest` on: the latest weeks of the training period.
    Windows shorter than a week keep only their own weekdays. `earliest`: the first date with
    complete features (history start + FeatureSpec.lookback_periods * period_days), since
    warm-up nulls would read as drift; default the history's first date. `series` (key
    columns): only the history of these series counts, as if `history` held no other.
    """
    day, week = dt.timedelta(days=1), dt.timedelta(weeks=1)
    keys = list(series.columns) if series is not None else []
    # the date range on the narrow key columns: `history` may be wide and long
    dates = (history.select(*keys, "date").join(series, on=keys, how="semi")
             if series is not None else history).get_column("date")
    first, last = dates.min(), dates.max()
    if first is None:
        return history.clear(), ReferenceWindow("none", start, start, ())
    lo, stop = max(earliest or first, first), min(start, last + day)
    n_days = (end - start).days
    whole_weeks = period_days == 1 and n_days % 7 == 0
    ys = _year_before(start) if whole_weeks else start - 52 * week
    ye = ys + (end - start)
    if lo <= ys and ye <= stop:
        rule = "last_year"
        rs = ys - min(tolerance_weeks, (ys - lo).days // 7) * week
        re_ = ye + min(tolerance_weeks, (stop - ye).days // 7) * week
    else:
        rule, re_ = "recent", stop
        rs = max(lo, re_ - max(1, min(recent_weeks, (re_ - lo).days // 7)) * week)
    weekdays = tuple(range(1, 8)) if period_days != 1 or n_days >= 7 else tuple(sorted(
        {(start + i * day).isoweekday() for i in range(n_days)}))
    date = pl.col("date")
    rows = history.filter(date >= rs, date < re_, date.dt.weekday().is_in(weekdays))
    if series is not None:
        rows = rows.join(series, on=keys, how="semi")
    return rows, ReferenceWindow(rule, rs, re_, weekdays)


def _year_before(day: dt.date) -> dt.date:
    return day.replace(year=day.year - 1, day=28 if (day.month, day.day) == (2, 29) else day.day)
