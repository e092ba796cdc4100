"""The feature rows of the next horizon, built by the same transform code as training rows.

A future row carries the series and the date, and no sales: its lags and rolling statistics
reach back to the origin at most (lags >= horizon), the price is the last regular (non-promotion)
one, promotion defaults to none, and calendar and attributes are known in advance.
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


def regular_price(history: pl.DataFrame) -> pl.DataFrame:
    """Per series, the last price seen on a day without promotion: what the horizon carries
    forward. Carrying a promotion's price into the horizon would pair a discount with no
    promotion, a combination the model never saw."""
    priced = history.filter(pl.col("price").is_not_null())
    regular = priced.filter(pl.col("on_promo").fill_null(0) != 1)
    last = [frame.sort("date").group_by(SERIES).agg(pl.col("price").last().alias(name))
            for frame, name in ((regular, "__regular"), (priced, "__last"))]
    return last[1].join(last[0], on=SERIES, how="left").select(
        *SERIES, pl.coalesce("__regular", "__last").alias("price"))


def future_rows(series: pl.DataFrame, origin: dt.date, spec: FeatureSpec,
                template: pl.DataFrame) -> pl.DataFrame:
    """One row per series and future period (origin + 1..H periods), in `template`'s schema:
    the regular price, no promotion, nulls for everything else not known in advance."""
    dates = pl.DataFrame({"date": [origin + dt.timedelta(days=k * spec.period_days)
                                   for k in range(1, spec.horizon + 1)]})
    keys = (series.join(dates, how="cross")
            .join(regular_price(template), on=SERIES, how="left")
            .select("date", *SERIES, "price", pl.lit(0).alias("on_promo")))
    return pl.concat([template.clear(), keys], how="diagonal_relaxed").select(
        pl.col(name).cast(dtype) for name, dtype in template.schema.items())


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
