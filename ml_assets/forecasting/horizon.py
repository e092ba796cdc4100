"""The feature rows of the next horizon, built by the same transform code as training rows.

A future row carries the series and the date, and no sales: its lags and rolling statistics
reach back to the origin at most (lags >= horizon), price is carried forward from the last
known one, promotion defaults to none, and calendar and attributes are known in advance.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from ml_assets.features.transforms import SERIES, FeatureSpec, build_features

ACTIVE_PERIODS = 28  # a series with no sales row in this many periods is not forecast


def active_series(sales: pl.DataFrame, origin: dt.date, spec: FeatureSpec,
                  active_periods: int = ACTIVE_PERIODS) -> pl.DataFrame:
    """The series with at least one sales row in the last `active_periods` up to the origin."""
    since = origin - dt.timedelta(days=active_periods * spec.period_days)
    return (sales.filter(pl.col("date") > since, pl.col("date") <= origin)
            .select(SERIES).unique().sort(SERIES))


def future_rows(series: pl.DataFrame, origin: dt.date, spec: FeatureSpec,
                template: pl.DataFrame) -> pl.DataFrame:
    """One row per series and future period (origin + 1..H periods), in `template`'s schema,
    with nulls for everything that is not known in advance."""
    dates = pl.DataFrame({"date": [origin + dt.timedelta(days=k * spec.period_days)
                                   for k in range(1, spec.horizon + 1)]})
    keys = series.join(dates, how="cross").select("date", *SERIES)
    return pl.concat([template.clear(), keys], how="diagonal_relaxed").select(template.columns)


def horizon_features(sales: pl.DataFrame, origin: dt.date, spec: FeatureSpec,
                     **dims: pl.DataFrame | None) -> pl.DataFrame:
    """Feature rows for every active series over the next horizon after `origin`, with the
    columns `origin` and `horizon` (1..H periods ahead) after the keys.

    `sales` is bronze history up to the origin (at least `spec.lookback_periods` of it);
    `dims` are the optional `stores`, `items`, `calendar` and `first_sale` frames that
    `build_features` takes.
    """
    history = sales.filter(pl.col("date") <= origin)
    future = future_rows(active_series(history, origin, spec), origin, spec, history)
    table = build_features(pl.concat([history, future]), spec, **dims)
    ahead = (pl.col("date") - pl.lit(origin)).dt.total_days() // spec.period_days
    return (table.filter(pl.col("date") > origin)
            .with_columns(origin=pl.lit(origin, pl.Date), horizon=ahead.cast(pl.Int32))
            .select("date", *SERIES, "origin", "horizon", pl.exclude("date", *SERIES,
                                                                     "origin", "horizon"))
            .sort([*SERIES, "date"]))
