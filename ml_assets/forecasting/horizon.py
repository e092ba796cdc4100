"""The feature rows of the next horizon, built by the same transform code as training rows.

A future row carries the series and the date, and no sales: its lags and rolling statistics
reach back to the origin at most (lags >= horizon), and its origin-relative features
(`ml_assets.features.recent`) read the last periods before the origin. Its known-in-advance
inputs come from the plan as known at the origin; where the plan says nothing, the price is the
last regular (non-promotion) one, promotion is none, and a covariate takes its declared default.
Calendar and attributes are known in advance.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from ml_assets.evaluation.baselines import moving_average, seasonal_naive
from ml_assets.features.recent import pooled_at, with_recent
from ml_assets.features.transforms import SERIES, FeatureSpec, build_features
from ml_assets.forecasting.plan import PLAN_KEYS, apply_plan, plan_columns, plan_or_actuals

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
                template: pl.DataFrame, plan: pl.DataFrame | None = None,
                report: dict[str, int] | None = None) -> pl.DataFrame:
    """One row per series and future period (origin + 1..H periods), in `template`'s schema,
    with the known-in-advance inputs from `plan` (rows as known at the origin, see
    `ml_assets.forecasting.plan`). Where the plan says nothing: the regular price carried
    forward, no promotion, and each covariate's declared default. `report` (if given) receives
    per column how many values came from those fallbacks (`defaulted_<column>`) and how many
    stayed missing (`missing_<column>`)."""
    dates = pl.DataFrame({"date": [origin + dt.timedelta(days=k * spec.period_days)
                                   for k in range(1, spec.horizon + 1)]})
    columns = plan_columns(spec.covariates)
    keys = apply_plan(series.join(dates, how="cross").select("date", *SERIES), plan, columns)
    fallback = {"price": pl.col("__regular"), "on_promo": pl.lit(0),
                **{name: pl.lit(value) for name, value in spec.defaults}}
    if report is not None:
        counts = keys.select(pl.col(c).is_null().sum().alias(c) for c in columns).row(
            0, named=True)
        report.update({f"defaulted_{c}": n for c, n in counts.items() if c in fallback})
    keys = keys.join(regular_price(template).rename({"price": "__regular"}), on=SERIES,
                     how="left").with_columns(
        pl.coalesce(pl.col(c).cast(template.schema[c]), fallback[c].cast(template.schema[c]))
        .alias(c) for c in columns if c in fallback and c in template.columns)
    if report is not None:
        report.update({f"missing_{c}": n for c, n in keys.select(
            pl.col(c).is_null().sum() for c in columns if c in keys.columns).row(
            0, named=True).items() if n})
    keys = keys.select(*PLAN_KEYS, *[c for c in columns if c in template.columns])
    return pl.concat([template.clear(), keys], how="diagonal_relaxed").select(
        pl.col(name).cast(dtype) for name, dtype in template.schema.items())


def finish_rows(table: pl.DataFrame, history: pl.DataFrame, origin: dt.date,
                spec: FeatureSpec, pooled: pl.DataFrame | None = None) -> pl.DataFrame:
    """Feature rows after `origin` with what every forecaster of them needs: `origin`,
    `horizon` (1..H periods ahead), the two baselines as known at the origin (seasonal naive,
    moving average; the baseline champion serves one of them), the origin-relative features
    (`ml_assets.features.recent`; those pooled over a store's or an item's series pool the
    series forecast here, or come from `pooled`) and `forced_zero`."""
    ahead = (pl.col("date") - pl.lit(origin)).dt.total_days() // spec.period_days
    rows = (table.filter(pl.col("date") > origin)
            .with_columns(origin=pl.lit(origin, pl.Date), horizon=ahead.cast(pl.Int32)))
    history = history.filter(pl.col("date") <= origin)
    if pooled is None:
        pooled = pooled_at(history.join(rows.select(SERIES).unique(), on=SERIES, how="semi"),
                           origin, spec)
    rows = with_recent(rows, history, spec, pooled)
    return rows.with_columns(
        seasonal_naive(history, rows, spec.season, spec.period_days).fill_null(0.0),
        moving_average(history, rows, spec.windows[1], spec.period_days).fill_null(0.0),
        spec.forced_zero(),
    ).select("date", *SERIES, "origin", "horizon",
             pl.exclude("date", *SERIES, "origin", "horizon"))


def horizon_features(sales: pl.DataFrame, origin: dt.date, spec: FeatureSpec,
                     plan: pl.DataFrame | None = None, report: dict[str, int] | None = None,
                     **dims: pl.DataFrame | None) -> pl.DataFrame:
    """Feature rows for every active series over the next horizon after `origin`: what batch
    forecasts and the service answer from, and what the backtest scores at each origin (one
    function, so what is scored is what is served). Columns: `finish_rows`'.

    `sales` is bronze history up to the origin (at least `spec.lookback_periods` of it; later
    rows are ignored); `plan` the known future at the origin (`plan_as_known`,
    `plan_or_actuals`); `dims` the optional `stores`, `items`, `calendar` and `first_sale`
    frames that `build_features` takes.
    """
    history = sales.filter(pl.col("date") <= origin)
    future = future_rows(active_series(history, origin, spec), origin, spec, history, plan,
                         report)
    table = build_features(pl.concat([history, future]), spec, **dims)
    return finish_rows(table, history, origin, spec).sort([*SERIES, "date"])


def known_future(sales: pl.DataFrame, origin: dt.date, spec: FeatureSpec,
                 plan: pl.DataFrame | None) -> tuple[pl.DataFrame, str]:
    """The known-in-advance values of the horizon after `origin` (`plan_or_actuals`): the plan
    as known at the origin, or the actual values where no delivery was known by then."""
    end = origin + spec.horizon * dt.timedelta(days=spec.period_days)
    return plan_or_actuals(plan, sales, origin, end, plan_columns(spec.covariates))


def rows_at_origin(sales: pl.DataFrame, origin: dt.date, spec: FeatureSpec,
                   plan: pl.DataFrame | None = None, report: dict[str, int] | None = None,
                   **dims: pl.DataFrame | None) -> tuple[pl.DataFrame, str]:
    """The rows served at `origin`, and what a backtest scores there: `horizon_features` on
    the history up to the origin (its lookback, as `forecast_features` reads it) and the
    `known_future`, with the actual `units_sold` joined where it landed (null at the live
    origin). `plan` is the whole bronze plan table. Returns the rows and where their known
    future came from ("plan" or "actuals")."""
    step = dt.timedelta(days=spec.period_days)
    known, source = known_future(sales, origin, spec, plan)
    start = origin + step * (1 - spec.lookback_periods)
    history = sales.filter(pl.col("date") >= start, pl.col("date") <= origin)
    rows = horizon_features(history, origin, spec, known, report, **dims)
    actual = sales.filter(pl.col("date") > origin, pl.col("date") <= origin + spec.horizon * step
                          ).select(*PLAN_KEYS, pl.col("units_sold").cast(pl.Float64)
                                   .alias("__actual"))
    rows = rows.join(actual, on=PLAN_KEYS, how="left", maintain_order="left")
    return rows.with_columns(units_sold=pl.col("__actual")).drop("__actual"), source
