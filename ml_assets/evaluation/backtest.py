"""Rolling-origin backtests on the feature table.

A backtest at origin o trains on the rows with date <= o (`train_mask`) and scores the rows
o < date <= o + H (`backtest_frame`). This is leak-free because of how the feature table is
built (`ml_assets.features.transforms`): every sales-derived feature of the row at date t uses
sales up to t - H_spec only, where H_spec = FeatureSpec.horizon (lags >= H_spec, windows ending
at t - H_spec), and the other inputs (price, promotion, calendar, covariates, attributes) are
known in advance. So for a backtest horizon H <= H_spec, a scored row at t <= o + H reads sales
up to o at most, and the training rows' targets and features end at o too. A backtest horizon
longer than the feature spec's horizon would leak: keep H <= FeatureSpec.horizon.
"""

from __future__ import annotations

import datetime as dt

import polars as pl


def rolling_origins(
    last_date: dt.date,
    horizon: int,
    period_days: int,
    n_origins: int = 3,
    step: int | None = None,
) -> list[dt.date]:
    """`n_origins` forecast origins, oldest first, each with its whole horizon <= `last_date`.

    The last origin is `last_date - horizon` periods (its horizon ends exactly on
    `last_date`); each earlier one is `step` periods (default: `horizon`, so the scored windows
    tile without overlap) before the next.
    """
    step = horizon if step is None else step
    if horizon < 1 or period_days < 1 or n_origins < 1 or step < 1:
        raise ValueError(f"horizon ({horizon}), period_days ({period_days}), n_origins "
                         f"({n_origins}) and step ({step}) must be >= 1")
    last = last_date - dt.timedelta(days=horizon * period_days)
    return [last - dt.timedelta(days=(n_origins - 1 - i) * step * period_days)
            for i in range(n_origins)]


def backtest_frame(
    features: pl.DataFrame, origin: dt.date, horizon: int, period_days: int
) -> pl.DataFrame:
    """The rows with origin < date <= origin + `horizon` periods, plus the columns `origin`
    (Date) and `horizon` (Int32, 1..H periods ahead: ceil(days ahead / period_days)).

    Rows with a null target are kept (metrics skip them). Leak-free for horizon <=
    FeatureSpec.horizon: see the module docstring.
    """
    if horizon < 1 or period_days < 1:
        raise ValueError(f"horizon ({horizon}) and period_days ({period_days}) must be >= 1")
    end = origin + dt.timedelta(days=horizon * period_days)
    ahead = (pl.col("date") - pl.lit(origin)).dt.total_days()
    return (features.filter((pl.col("date") > origin) & (pl.col("date") <= end))
            .with_columns(origin=pl.lit(origin, pl.Date),
                          horizon=(-(-ahead // period_days)).cast(pl.Int32)))


def train_mask(features: pl.DataFrame, origin: dt.date, target: str = "units_sold") -> pl.Series:
    """Boolean series over `features`: date <= origin and the target present (not null/NaN)."""
    y = pl.col(target)
    keep = (pl.col("date") <= origin) & y.is_not_null() & y.cast(pl.Float64).is_not_nan()
    return features.select(keep.fill_null(False).alias("train")).to_series()
