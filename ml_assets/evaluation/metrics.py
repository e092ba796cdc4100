"""Forecast accuracy metrics: scalar functions and one vectorized table.

Conventions shared by every function here:
- A row counts only when both the actual and the forecast are present: nulls (polars), None
  and NaN (numpy) are ignored pairwise, never treated as zero.
- Undefined results are `nan`, never 0.0 or an exception: no usable row, a zero denominator
  (WAPE or bias with sum(actual) == 0, RMSPE with no non-zero actual, MASE with no positive
  scale). A report then shows "nan" instead of a flattering number.
- Ratios are fractions (0.12 = 12 %). `bias` is signed: positive means over-forecast.

MASE divides absolute errors by a scale: the in-sample MAE of the seasonal naive forecast on
the training history (`baselines.naive_scale` computes it per series, from data up to the
origin only).
With one scale per series, the MASE of a group is the mean of the scaled absolute errors
|f - a| / scale over its rows (Hyndman and Koehler's pooled definition); rows whose series has
no positive scale (too short, or constant in history) are left out of MASE only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

ArrayLike = np.ndarray | pl.Series | Sequence[float | None]
METRICS = ["wape", "mae", "rmse", "bias", "mase", "rmspe", "n"]
_DAILY_BUCKETS = [(7, "1-7"), (14, "8-14"), (28, "15-28")], "29+"
_WEEKLY_BUCKETS = [(2, "1-2"), (4, "3-4"), (8, "5-8")], "9+"


# --- scalar metrics -------------------------------------------------------------------------


def _as_float(values: ArrayLike | float) -> np.ndarray:
    if isinstance(values, pl.Series):
        return values.cast(pl.Float64).to_numpy()  # nulls become NaN
    return np.asarray(values, dtype=np.float64)  # None becomes NaN


def _aligned(*values: ArrayLike) -> list[np.ndarray]:
    arrays = [_as_float(v).ravel() for v in values]
    if len({a.size for a in arrays}) > 1:
        raise ValueError(f"inputs differ in length: {[a.size for a in arrays]}")
    return arrays


def _pairs(actual: ArrayLike, forecast: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """The (actual, forecast) pairs where both are present."""
    a, f = _aligned(actual, forecast)
    keep = ~(np.isnan(a) | np.isnan(f))
    return a[keep], f[keep]


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den != 0 else float("nan")


def wape(actual: ArrayLike, forecast: ArrayLike) -> float:
    """sum|f - a| / sum|a|; nan when sum|a| == 0 (all-zero actuals) or no usable row."""
    a, f = _pairs(actual, forecast)
    return _ratio(np.abs(f - a).sum(), np.abs(a).sum())


def mae(actual: ArrayLike, forecast: ArrayLike) -> float:
    """mean|f - a|; nan without a usable row."""
    a, f = _pairs(actual, forecast)
    return float(np.abs(f - a).mean()) if a.size else float("nan")


def rmse(actual: ArrayLike, forecast: ArrayLike) -> float:
    """sqrt(mean((f - a)^2)); nan without a usable row."""
    a, f = _pairs(actual, forecast)
    return float(np.sqrt(np.square(f - a).mean())) if a.size else float("nan")


def bias(actual: ArrayLike, forecast: ArrayLike) -> float:
    """sum(f - a) / sum(a), signed (positive = over-forecast); nan when sum(a) == 0."""
    a, f = _pairs(actual, forecast)
    return _ratio((f - a).sum(), a.sum())


def rmspe_nonzero(actual: ArrayLike, forecast: ArrayLike) -> float:
    """sqrt(mean(((f - a) / a)^2)) over the rows with a != 0; nan when there are none."""
    a, f = _pairs(actual, forecast)
    nonzero = a != 0
    if not nonzero.any():
        return float("nan")
    return float(np.sqrt(np.square((f[nonzero] - a[nonzero]) / a[nonzero]).mean()))


def mase(actual: ArrayLike, forecast: ArrayLike, scale: float | ArrayLike) -> float:
    """mean(|f - a| / scale): MAE over the in-sample MAE of the seasonal naive forecast.

    `scale` is one number (the MAE divided by it) or one value per row (each series' own scale).
    Rows whose scale is missing or <= 0 are left out; nan when no row is left.
    """
    a, f = _aligned(actual, forecast)
    s = _as_float(scale)
    s = np.full(a.shape, float(s)) if s.ndim == 0 else _aligned(a, s)[1]
    keep = ~(np.isnan(a) | np.isnan(f) | np.isnan(s)) & (np.nan_to_num(s) > 0)
    if not keep.any():
        return float("nan")
    return float((np.abs(f[keep] - a[keep]) / s[keep]).mean())


# --- the table ------------------------------------------------------------------------------


def _with_scale(frame: pl.DataFrame, mase_scale: float | str | pl.DataFrame | None
                ) -> pl.DataFrame:
    """`frame` plus the MASE scale of each row as a Float64 column `__scale` (NaN → null)."""
    if isinstance(mase_scale, pl.DataFrame):
        keys = [c for c in mase_scale.columns if c != "mase_scale"]
        if "mase_scale" not in mase_scale.columns or not set(keys) <= set(frame.columns):
            raise ValueError(f"a mase_scale frame needs a `mase_scale` column plus key columns "
                             f"of the frame {frame.columns}, got {mase_scale.columns}")
        frame = frame.join(mase_scale.rename({"mase_scale": "__scale"}), on=keys, how="left",
                           validate="m:1", maintain_order="left")
        scale = pl.col("__scale")
    elif mase_scale is None:
        scale = pl.lit(None, pl.Float64)
    elif isinstance(mase_scale, str):
        scale = pl.col(mase_scale)
    else:
        scale = pl.lit(float(mase_scale))
    return frame.with_columns(scale.cast(pl.Float64).fill_nan(None).alias("__scale"))


def metric_table(
    frame: pl.DataFrame,
    actual: str = "units_sold",
    forecasts: Sequence[str] = ("model", "seasonal_naive"),
    by: Sequence[str] = (),
    mase_scale: float | str | pl.DataFrame | None = None,
    *,
    same_rows: bool = False,
) -> pl.DataFrame:
    """Every metric for every forecast column, overall (`by=[]`) or per group, in long format:
    columns `[*by, "forecaster", "wape", "mae", "rmse", "bias", "mase", "rmspe", "n"]`, sorted by
    `by` then in the order of `forecasts`.

    `n` is the number of rows where the actual and that forecast are both present (each
    forecaster's metrics use its own rows). `same_rows=True` first keeps only the rows where
    every forecast is present, so the forecasters are compared on identical rows.
    `mase_scale`: None (mase is nan), one number, the name of a column of `frame`, or a frame of
    keys plus a `mase_scale` column (as `baselines.naive_scale` returns) joined on those
    keys.
    Metrics are floats, nan when undefined (see the module docstring); `rmspe` is
    `rmspe_nonzero`. Groups are computed with one polars group_by.
    """
    by, forecasts = list(by), list(forecasts)
    if not forecasts:
        raise ValueError("metric_table needs at least one forecast column")
    missing = [c for c in [actual, *forecasts, *by] if c not in frame.columns]
    if missing:
        raise ValueError(f"metric_table: columns {missing} not in frame {frame.columns}")
    present = [pl.col(c).is_not_null() & pl.col(c).cast(pl.Float64).is_not_nan()
               for c in [actual, *forecasts]]
    if same_rows:
        frame = frame.filter(pl.all_horizontal(present))
    frame = _with_scale(frame, mase_scale)
    long = frame.select(
        *by, pl.col(actual).cast(pl.Float64).alias("__actual"), "__scale",
        *[pl.col(c).cast(pl.Float64) for c in forecasts],
    ).unpivot(on=forecasts, index=[*by, "__actual", "__scale"], variable_name="forecaster",
              value_name="__forecast")

    a, f, s = pl.col("__actual"), pl.col("__forecast"), pl.col("__scale")
    valid = a.is_not_null() & a.is_not_nan() & f.is_not_null() & f.is_not_nan()
    a_v = pl.when(valid).then(a)
    err = pl.when(valid).then(f - a)
    nan = pl.lit(float("nan"))

    def ratio(num: pl.Expr, den: pl.Expr) -> pl.Expr:
        return pl.when(den != 0).then(num / den).otherwise(nan)

    table = long.group_by([*by, "forecaster"]).agg(
        wape=ratio(err.abs().sum(), a_v.abs().sum()),
        mae=err.abs().mean(),
        rmse=err.pow(2).mean().sqrt(),
        bias=ratio(err.sum(), a_v.sum()),
        mase=pl.when(s > 0).then(err.abs() / s).mean(),
        rmspe=pl.when(a_v != 0).then((err / a_v).pow(2)).mean().sqrt(),
        n=valid.sum().cast(pl.Int64),
    )
    order = pl.col("forecaster").replace_strict(forecasts, list(range(len(forecasts))))
    return (table.with_columns(pl.col(m).cast(pl.Float64).fill_null(nan) for m in METRICS[:-1])
            .sort([*by, order], nulls_last=True)
            .select(*by, "forecaster", *METRICS))


# --- helpers --------------------------------------------------------------------------------


def horizon_bucket(h: pl.Expr, period_days: int) -> pl.Expr:
    """Horizon (in periods, 1..H) → bucket label, an ordered `pl.Enum` so tables sort by it.

    Daily: "1-7", "8-14", "15-28", "29+". Weekly: "1-2", "3-4", "5-8", "9+". h < 1 → null.
    """
    bounds, last = _buckets(period_days)
    labels = bucket_labels(period_days)
    expr = pl.when(h < 1).then(pl.lit(None, pl.Utf8))
    for upper, label in bounds:
        expr = expr.when(h <= upper).then(pl.lit(label))
    return expr.otherwise(pl.lit(last)).cast(pl.Enum(labels))


def _buckets(period_days: int) -> tuple[list[tuple[int, str]], str]:
    if period_days == 1:
        return _DAILY_BUCKETS
    if period_days == 7:
        return _WEEKLY_BUCKETS
    raise ValueError(f"period_days must be 1 (daily) or 7 (weekly), got {period_days}")


def bucket_labels(period_days: int) -> list[str]:
    """The horizon buckets' labels in order (`horizon_bucket`'s)."""
    bounds, last = _buckets(period_days)
    return [label for _, label in bounds] + [last]


# --- MLflow ---------------------------------------------------------------------------------

# MLflow accepts letters, digits and `_ - . / : space` in metric names: a bucket such as
# "29+" must be spelled out ("29plus"), anything else unexpected becomes "_".
_MLFLOW_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./")


def mlflow_name(name: str) -> str:
    """`name` as an MLflow metric name: "+" → "plus", other characters MLflow refuses → "_"."""
    return "".join(c if c in _MLFLOW_SAFE else "_" for c in name.replace("+", "plus"))


def mlflow_metrics(overall: pl.DataFrame, by_bucket: pl.DataFrame | None = None,
                   prefix: str = "backtest") -> dict[str, float]:
    """Every metric of every forecaster as flat MLflow metrics: `<prefix>_<metric>_<forecaster>`
    from `overall` (a `metric_table` without `by`) and `<prefix>_<metric>_<forecaster>_h<bucket>`
    from `by_bucket` (grouped by `horizon_bucket`; "h29plus" for "29+"). `n` is a count, not a
    score, so it is left out. Undefined values stay nan: MLflow stores nan, and a missing metric
    would read as "not computed" rather than "undefined"."""
    scores = [m for m in METRICS if m != "n"]
    out: dict[str, float] = {}
    for row in overall.iter_rows(named=True):
        for m in scores:
            out[mlflow_name(f"{prefix}_{m}_{row['forecaster']}")] = float(row[m])
    if by_bucket is not None:
        for row in by_bucket.iter_rows(named=True):
            for m in scores:
                name = f"{prefix}_{m}_{row['forecaster']}_h{row['horizon_bucket']}"
                out[mlflow_name(name)] = float(row[m])
    return out
