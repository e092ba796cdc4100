"""Prediction intervals: split conformal on the rolling-origin backtest's residuals.

Every forecast carries a central interval at the configured level (80 %: P10 to P90). It is
calibrated on what the backtest scored (out of sample, at several origins, on rows built as
served), so the interval says how wrong this recipe was at that horizon and that size of
forecast, not what a model believes about itself.

The score of a scored row is its residual relative to the forecast's size,
`(actual - forecast) / (forecast + 1)`: sales spread more where the level is higher (a
count's noise grows with its mean, and a wandering level multiplies it). Its quantiles are
taken per horizon bucket
(`metrics.horizon_bucket`: 1-7, 8-14, 15-28, 29+ days; 1-2, 3-4, 5-8, 9+ weeks) and per bin
of the forecast's size (up to `MAX_BINS` bins with equal row counts, the same edges in every
bucket, as many as leave `MIN_ROWS` rows per cell), so the scale need only be right within a
bin. The bounds of a forecast f are `f + q * (f + 1)`, the lower one clipped at 0, and
widened to reach f where over 90 % of a cell's residuals lie on one side of it (a biased
cell, or mostly zeros under a small positive forecast): an interval always holds its own
point forecast. A row the dataset's `zero_when` rule forces to 0 gets [0, 0].

Chosen on the default simulated world's backtest (the challenger's 155k scored rows, 3
origins, leave one origin out): every variant covers 80 % overall and per bucket, since the
quantiles are taken per bucket. The bins decide whether it holds per size of forecast: with
one bin and the residual scaled by sqrt(forecast + 1), 99 % of the smallest fifth of the
forecasts were covered and 51 % of the largest fifth; with 16 bins 81 % and 80 %. The scale
decides the width: the mean interval score (width + 10 x the miss) with 16 bins was 23.8 for
raw residuals, 22.6 scaled by sqrt(forecast + 1), 22.1 by forecast + 1 (32 bins: no better).

Each quantile is the conformal one (the ceil((n + 1) * (1 - a/2))-th smallest of n scores): on
rows exchangeable with the calibration rows, each tail misses at most a/2. A (bucket, bin) cell
with fewer than `MIN_ROWS` rows takes its bucket's quantiles over all bins, and a bucket with
fewer than that (a horizon the backtest did not reach) the quantiles over all rows.

Coverage is measured honestly, leaving one origin out: calibrate on the other origins, count
on the held-out one (`coverage_by_bucket`). With a single origin that is impossible, and the
coverage is the in-sample one, which the table says.

The calibration is a small JSON document (`Calibration.to_json`), stored with the model
version (`intervals/calibration_v<version>.json` in its MLflow run) and its Bento; `bounds`
applies it with numpy alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from ml_assets.evaluation.metrics import bucket_labels, horizon_bucket
from ml_assets.training.dataset import TARGET

MAX_BINS = 16
MIN_ROWS = 100  # per (bucket, bin) cell: each 10 % tail rests on at least 10 rows
METHOD = ("split conformal on the rolling-origin backtest: quantiles of "
          "(actual - forecast) / (forecast + 1) per horizon bucket and forecast-size bin")
ALL = "all"  # the fallback row: every bucket pooled
MAX_HORIZON = 1000  # periods: horizons beyond take the last bucket's quantiles


def scale(forecast: np.ndarray) -> np.ndarray:
    """What a residual is measured in: the forecast's size (+ 1, so a 0 forecast has one)."""
    return np.clip(forecast, 0.0, None) + 1.0


def quantile_names(level: float) -> tuple[str, str]:
    """The percentiles a central interval at `level` spans: 0.8 → ("p10", "p90")."""
    tail = (1 - level) / 2 * 100
    return f"p{tail:g}", f"p{100 - tail:g}"


def conformal_bounds(scores: np.ndarray, level: float) -> tuple[float, float]:
    """The lower and upper conformal quantiles of `scores` for a central interval at `level`:
    the floor((n + 1) * a/2)-th and ceil((n + 1) * (1 - a/2))-th smallest (a = 1 - level),
    the extreme score where n is too small for that rank."""
    ordered = np.sort(scores)
    n, tail = ordered.size, (1 - level) / 2
    if n == 0:
        raise ValueError("no scores to calibrate on")
    # rounded first: (1 - 0.8) / 2 is 0.0999..., whose floor would lose a rank
    low = max(math.floor(round((n + 1) * tail, 9)), 1)
    high = min(math.ceil(round((n + 1) * (1 - tail), 9)), n)
    return float(ordered[low - 1]), float(ordered[high - 1])


@dataclass(frozen=True)
class Calibration:
    """Quantiles of the scaled residual per horizon bucket (rows) and forecast-size bin
    (columns), plus the pooled `all` row."""

    level: float
    period_days: int
    edges: list[float]  # the bins' inner edges on the forecast, ascending (< MAX_BINS)
    lower: dict[str, list[float]]  # bucket label (or "all") -> per bin
    upper: dict[str, list[float]]
    rows: dict[str, int]  # calibration rows per bucket label
    forecaster: str = "challenger"
    # what the backtest measured (`coverage_by_bucket`): coverage per bucket label, and how
    coverage: dict[str, float] = field(default_factory=dict)
    measured: str = ""
    method: str = METHOD

    def to_json(self) -> dict[str, object]:
        return {"level": self.level, "period_days": self.period_days, "method": self.method,
                "forecaster": self.forecaster, "edges": self.edges, "lower": self.lower,
                "upper": self.upper, "rows": self.rows, "coverage": self.coverage,
                "coverage_measured": self.measured}

    @classmethod
    def from_json(cls, doc: dict) -> Calibration:
        return cls(level=float(doc["level"]), period_days=int(doc["period_days"]),
                   edges=[float(e) for e in doc["edges"]],
                   lower={k: [float(v) for v in q] for k, q in doc["lower"].items()},
                   upper={k: [float(v) for v in q] for k, q in doc["upper"].items()},
                   rows={k: int(v) for k, v in doc["rows"].items()},
                   forecaster=str(doc.get("forecaster", "challenger")),
                   coverage={k: float(v) for k, v in doc.get("coverage", {}).items()},
                   measured=str(doc.get("coverage_measured", "")),
                   method=str(doc.get("method", METHOD)))


def no_calibration(version: str) -> str:
    """Why a model version's forecasts carry no interval, said the same way everywhere."""
    return (f"model version {version} has no interval calibration: it was registered before "
            "model_evaluation calibrated intervals; evaluate a newer challenger")


def scored_rows(backtest: pl.DataFrame, forecast: str) -> pl.DataFrame:
    """The backtest rows an interval is calibrated and measured on: an actual and a forecast
    present, not forced to 0 by the dataset's rule."""
    frame = backtest
    if "forced_zero" in frame.columns:
        frame = frame.filter(~pl.col("forced_zero").fill_null(False))
    return frame.filter(pl.col(TARGET).is_not_null() & pl.col(TARGET).is_not_nan()
                        & pl.col(forecast).is_not_null() & pl.col(forecast).is_not_nan())


def _bin_edges(forecast: np.ndarray, buckets: np.ndarray) -> list[float]:
    """Inner edges of equal-count bins of the forecast: as many as give the smallest bucket
    with rows of its own `MIN_ROWS` rows per bin, at most `MAX_BINS`."""
    sizes = [n for n in np.unique(buckets, return_counts=True)[1] if n >= MIN_ROWS]
    n_bins = int(np.clip(min(sizes, default=0) // MIN_ROWS, 1, MAX_BINS))
    inner = np.quantile(forecast, np.arange(1, n_bins) / n_bins)
    return sorted({float(e) for e in inner})


def calibrate(backtest: pl.DataFrame, forecast: str, level: float, period_days: int
              ) -> Calibration:
    """The calibration of the forecasts in column `forecast` of a backtest table (columns
    `horizon`, the actual `units_sold`, `forced_zero`, as `report.run_backtest` returns)."""
    if not 0 < level < 1:
        raise ValueError(f"interval level must be in (0, 1), got {level}")
    frame = scored_rows(backtest, forecast)
    if frame.height == 0:
        raise ValueError(f"no backtest rows with an actual and a `{forecast}` forecast to "
                         "calibrate intervals on")
    f = frame.get_column(forecast).cast(pl.Float64).to_numpy()
    y = frame.get_column(TARGET).cast(pl.Float64).to_numpy()
    buckets = frame.select(horizon_bucket(pl.col("horizon"), period_days).cast(pl.Utf8)
                           ).to_series().to_numpy()
    score = (y - f) / scale(f)
    edges = _bin_edges(f, buckets)
    bins = np.searchsorted(edges, f, side="right")
    pooled = conformal_bounds(score, level)
    lower: dict[str, list[float]] = {}
    upper: dict[str, list[float]] = {}
    rows: dict[str, int] = {}
    for label in [*bucket_labels(period_days), ALL]:
        here = np.ones(f.size, bool) if label == ALL else buckets == label
        rows[label] = int(here.sum())
        whole = conformal_bounds(score[here], level) if here.sum() >= MIN_ROWS else pooled
        cells = [conformal_bounds(score[here & (bins == b)], level)
                 if (here & (bins == b)).sum() >= MIN_ROWS else whole
                 for b in range(len(edges) + 1)]
        lower[label] = [c[0] for c in cells]
        upper[label] = [c[1] for c in cells]
    return Calibration(level=level, period_days=period_days, edges=edges, lower=lower,
                       upper=upper, rows=rows, forecaster=forecast)


class Bounds:
    """A calibration ready to apply: lookup arrays, built once (the service builds one per
    model), then `Bounds(forecast, horizon)` is a few numpy operations."""

    def __init__(self, calibration: Calibration) -> None:
        self.calibration = calibration
        labels = bucket_labels(calibration.period_days)
        rows = [label if calibration.rows.get(label, 0) >= MIN_ROWS else ALL
                for label in labels]
        self.lower = np.array([calibration.lower[r] for r in rows])
        self.upper = np.array([calibration.upper[r] for r in rows])
        self.edges = np.array(calibration.edges)
        bucket = pl.select(horizon_bucket(pl.Series(range(MAX_HORIZON + 1)),
                                          calibration.period_days).to_physical())
        # horizon < 1 has no bucket: it takes the first one
        self.bucket_of = bucket.to_series().fill_null(0).to_numpy().astype(np.int64)

    def __call__(self, forecast: np.ndarray, horizon: np.ndarray,
                 zero: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The lower and upper bounds of `forecast` at `horizon` (periods); [0, 0] where
        `zero` (rows forced to 0)."""
        f = np.asarray(forecast, dtype=np.float64)
        b = self.bucket_of[np.clip(np.asarray(horizon, dtype=np.int64), 0, MAX_HORIZON)]
        k = np.searchsorted(self.edges, f, side="right")
        s = scale(f)
        low = np.clip(np.minimum(f + self.lower[b, k] * s, f), 0.0, None)
        high = np.maximum(f + self.upper[b, k] * s, f)
        if zero is not None:
            low, high = np.where(zero, 0.0, low), np.where(zero, 0.0, high)
        return low, high


def bounds(calibration: Calibration, forecast: np.ndarray, horizon: np.ndarray,
           zero: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    return Bounds(calibration)(forecast, horizon, zero)


def coverage_by_bucket(backtest: pl.DataFrame, forecast: str, level: float,
                       period_days: int) -> tuple[pl.DataFrame, str]:
    """Per horizon bucket: scored rows, the share of actuals inside the interval, below and
    above it, the mean width, and the width relative to the mean actual. Leave one origin out
    (each origin's rows get the intervals calibrated on the other origins); with one origin,
    in sample. Returns the table (with an `all` row) and how it was measured."""
    frame = scored_rows(backtest, forecast)
    origins = frame.get_column("origin").unique().sort().to_list()
    parts = []
    loo = len(origins) > 1
    for origin in origins if loo else [None]:
        held = frame if origin is None else frame.filter(pl.col("origin") == origin)
        rest = frame if origin is None else frame.filter(pl.col("origin") != origin)
        low, high = bounds(calibrate(rest, forecast, level, period_days),
                           held.get_column(forecast).to_numpy(),
                           held.get_column("horizon").to_numpy())
        parts.append(held.select("horizon", TARGET).with_columns(
            __low=pl.Series(low), __high=pl.Series(high)))
    measured = pl.concat(parts).with_columns(
        bucket=horizon_bucket(pl.col("horizon"), period_days).cast(pl.Utf8))
    y, low, high = pl.col(TARGET), pl.col("__low"), pl.col("__high")
    stats = [pl.len().alias("rows"),
             ((y >= low) & (y <= high)).mean().alias("coverage"),
             (y < low).mean().alias("below"), (y > high).mean().alias("above"),
             (high - low).mean().alias("mean_width"),
             ((high - low).mean() / y.mean()).alias("relative_width")]
    table = pl.concat([
        measured.group_by("bucket").agg(stats)
        .sort(pl.col("bucket").cast(pl.Enum(bucket_labels(period_days)))),
        measured.select(pl.lit(ALL).alias("bucket"), *stats)])
    how = (f"leave one origin out ({len(origins)} origins)" if loo
           else "in sample (a single backtest origin: no origin to hold out)")
    return table, how
