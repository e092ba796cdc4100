"""Baseline forecasts that use only what is known at the forecast origin.

Both baselines take `history` (rows `store_id, item_id, date, <actual>`; the actual may be null)
and `targets` (rows `store_id, item_id, date, origin`) and return one value per target row, in
the targets' order. History after a row's origin is never read, so passing the full table is
safe. Null and NaN actuals count as not observed. A row gets null when its series has nothing
usable at its origin (unknown series, launched after the origin, null origin). History is
expected unique per (store_id, item_id, date), as the feature table is.

Everything is joins and asof joins over the whole frame: no Python loop over series or origins.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from ml_assets.features.transforms import SERIES

_ROW = "__row"


def _observed(history: pl.DataFrame, actual: str) -> pl.DataFrame:
    """History rows with a present actual, as `[*SERIES, date, __value]`, sorted by date."""
    missing = [c for c in [*SERIES, "date", actual] if c not in history.columns]
    if missing:
        raise ValueError(f"history lacks columns {missing}")
    return (history.select(*SERIES, pl.col("date").cast(pl.Date),
                           pl.col(actual).cast(pl.Float64).fill_nan(None).alias("__value"))
            .drop_nulls(["__value", "date"])
            .sort("date", maintain_order=True))


def _indexed(targets: pl.DataFrame) -> pl.DataFrame:
    missing = [c for c in [*SERIES, "date", "origin"] if c not in targets.columns]
    if missing:
        raise ValueError(f"targets lack columns {missing}")
    return targets.select(*SERIES, pl.col("date").cast(pl.Date),
                          pl.col("origin").cast(pl.Date)).with_row_index(_ROW)


def _asof(left: pl.DataFrame, right: pl.DataFrame, left_on: str, by: list[str],
          tolerance: dt.timedelta | None = None) -> pl.DataFrame:
    """Backward asof join (the last right row at or before `left_on`), per `by` group."""
    return left.sort(left_on, nulls_last=True).join_asof(
        right, left_on=left_on, right_on="date", by=by, strategy="backward",
        tolerance=tolerance, check_sortedness=False)  # both sorted on the key just above


def seasonal_naive(
    history: pl.DataFrame,
    targets: pl.DataFrame,
    season: int,
    period_days: int,
    actual: str = "units_sold",
    seasons_back: int = 1,
) -> pl.Series:
    """The actual at the same position in the season, as last seen at or before the origin.

    For a target at date t with origin o, the candidate date is c = t - k * season periods
    for the smallest k >= 1 with c <= o (daily with season 7: the same weekday in the last week
    before the origin; season 364 (daily) or 52 (weekly): the same weekday or week last year).
    If c has no observed actual, the same position up to `seasons_back - 1` further seasons
    back is tried (default: none), then the last observed actual at or before o, then null.
    Returns a Float64 series named `seasonal_naive`, aligned with `targets`.
    """
    if season < 1 or period_days < 1 or seasons_back < 1:
        raise ValueError(f"season ({season}), period_days ({period_days}) and seasons_back "
                         f"({seasons_back}) must be >= 1")
    step = season * period_days  # days
    # Dates whose day number differs by a multiple of `step` share a phase.
    phase = (pl.col("date").cast(pl.Int64) % step).alias("__phase")
    observed = _observed(history, actual).with_columns(phase)
    rows = _indexed(targets)
    days_ahead = (pl.col("date") - pl.col("origin")).dt.total_days()
    k = ((days_ahead + step - 1) // step).clip(lower_bound=1)  # ceil, at least 1; null stays
    rows = rows.with_columns(phase, __candidate=pl.col("date") - pl.duration(days=k * step))

    same_position = _asof(rows, observed.rename({"__value": "__seasonal"}), "__candidate",
                          [*SERIES, "__phase"], dt.timedelta(days=(seasons_back - 1) * step))
    last_seen = _asof(rows, observed.drop("__phase").rename({"__value": "__last"}), "origin",
                      SERIES)
    out = (same_position.select(_ROW, "__seasonal")
           .join(last_seen.select(_ROW, "__last"), on=_ROW)
           .sort(_ROW))
    return out.select(pl.coalesce("__seasonal", "__last").alias("seasonal_naive")).to_series()


def moving_average(
    history: pl.DataFrame,
    targets: pl.DataFrame,
    window: int,
    period_days: int,
    actual: str = "units_sold",
) -> pl.Series:
    """Mean of the observed actuals in the last `window` periods up to the origin, per series.

    The window is calendar time, (o - window periods, o]: gaps and null actuals shrink the
    count rather than reaching further back, and zeros count as zeros. Null when the window
    holds no observed actual. Computed from per-series cumulative sums read with two asof
    joins, once per distinct (series, origin). Returns a Float64 series named
    `moving_average_{window}`, aligned with `targets`.
    """
    if window < 1 or period_days < 1:
        raise ValueError(f"window ({window}) and period_days ({period_days}) must be >= 1")
    name = f"moving_average_{window}"
    # Rows are in date order, so cumulative sums within each series run through time.
    observed = (_observed(history, actual)
                .with_columns(__sum=pl.col("__value").cum_sum().over(SERIES),
                              __count=pl.int_range(1, pl.len() + 1).over(SERIES))
                .drop("__value"))
    rows = _indexed(targets)
    origins = (rows.select(*SERIES, "origin").unique()
               .with_columns(__start=pl.col("origin") - dt.timedelta(days=window * period_days)))
    upto_origin = _asof(origins, observed, "origin", SERIES)
    upto_start = _asof(upto_origin, observed.rename({"__sum": "__sum0", "__count": "__count0"}),
                       "__start", SERIES)
    count = pl.col("__count") - pl.col("__count0").fill_null(0)
    means = upto_start.select(
        *SERIES, "origin",
        pl.when(count > 0).then((pl.col("__sum") - pl.col("__sum0").fill_null(0.0)) / count)
        .alias(name),
    )
    return (rows.join(means, on=[*SERIES, "origin"], how="left", maintain_order="left")
            .get_column(name))


def naive_scale(
    history: pl.DataFrame,
    season: int,
    period_days: int,
    origin: dt.date | None = None,
    actual: str = "units_sold",
) -> pl.DataFrame:
    """Per series, the in-sample MAE of the seasonal naive forecast: the MASE scale.

    mean|a_t - a_{t - season periods}| over the dates t <= `origin` (all dates when None; pass
    the origin so the scale uses training history only) where both actuals are observed; a
    gap or a null drops the pair, it is not bridged. Columns `[store_id, item_id, mase_scale]`,
    one row per series with an observed actual; `mase_scale` is null for a series without a
    pair and 0.0 for one constant over its history (`metric_table` leaves both out of MASE).
    """
    if season < 1 or period_days < 1:
        raise ValueError(f"season ({season}) and period_days ({period_days}) must be >= 1")
    observed = _observed(history, actual)
    if origin is not None:
        observed = observed.filter(pl.col("date") <= origin)
    pairs = _asof(observed.with_columns(
        __lag_date=pl.col("date") - dt.timedelta(days=season * period_days)),
        observed.rename({"__value": "__lag"}), "__lag_date", SERIES, dt.timedelta(0))
    return (pairs.group_by(SERIES, maintain_order=True)
            .agg(mase_scale=(pl.col("__value") - pl.col("__lag")).abs().mean()))
