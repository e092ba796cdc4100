"""Feature transforms: pure polars, one row per (series, date), point-in-time correct.

Strategy: lags at least the horizon. Every value derived from sales for target date t uses
only sales up to the forecast origin t - H, where H is the maximum horizon. One table then
serves every horizon 1..H, and the same code builds training rows, batch forecasts and online
requests. Known-in-advance inputs (calendar, price, promotion, declared covariates, static
attributes) are taken at t itself. The cost: a 1-day-ahead forecast does not see the last H-1
days; the evaluation report shows the error by horizon so that trade-off stays visible.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import numpy as np
import polars as pl

from ml_assets.features.panel import (
    Panel,
    Windows,
    build_panel,
    forward_fill,
    rolling_max,
    shift,
)

SERIES = ["store_id", "item_id"]
_STATIC_EXCLUDE_AVG_LEN = 30  # longer strings are free text (descriptions), not categories


@dataclass(frozen=True)
class FeatureSpec:
    horizon: int = 28  # periods
    period_days: int = 1  # 1 = daily, 7 = weekly
    numeric_covariates: tuple[str, ...] = ()
    categorical_covariates: tuple[str, ...] = ()
    extra: dict[str, int] = field(default_factory=dict)  # reserved for per-dataset overrides

    @property
    def daily(self) -> bool:
        return self.period_days == 1

    @property
    def lags(self) -> list[int]:
        """Seasonal lags from the horizon on: same weekday for daily data; plus last year."""
        step = 7 if self.daily else 1
        first = -(-self.horizon // step) * step
        lags = [first + i * step for i in range(4)]
        year = 364 if self.daily else 52
        return lags + ([year] if year > lags[-1] else [])

    @property
    def windows(self) -> tuple[int, int, int]:
        return (7, 28, 91) if self.daily else (4, 13, 52)

    @property
    def lookback_periods(self) -> int:
        """History a window of features needs before its first target date."""
        return max(self.lags[-1], self.horizon + self.windows[-1]) + 1


def feature_columns(spec: FeatureSpec, static: list[str], calendar: list[str]) -> list[str]:
    short, mid, long_ = spec.windows
    cols = ["day_of_week", "day_of_month", "month", "week_of_year", "day_of_year"]
    cols += [f"lag_{k}" for k in spec.lags]
    cols += ["seasonal_lag_mean", f"mean_{short}", f"mean_{mid}", f"mean_{long_}", f"std_{mid}",
             f"zero_share_{mid}", "price", "price_rel", "discount", "on_promo", "promo_prev",
             f"promo_share_{mid}", "periods_since_first_sale"]
    covariates = [*spec.numeric_covariates, *spec.categorical_covariates]
    return cols + covariates + static + calendar


def _static_columns(frame: pl.DataFrame, key: str) -> pl.DataFrame:
    """Attribute columns usable as features: numbers and short categories, not text or dates."""
    keep = [key]
    for name, dtype in frame.schema.items():
        if name == key:
            continue
        if dtype.is_numeric() or dtype == pl.Boolean:
            keep.append(name)
        elif dtype == pl.Utf8:
            lengths = frame.get_column(name).str.len_chars().mean() or 0
            if lengths <= _STATIC_EXCLUDE_AVG_LEN:
                keep.append(name)
    prefix = {"store_id": "store", "item_id": "item", "date": "cal"}[key]
    return frame.select(keep).rename({c: f"{prefix}_{c}" for c in keep if c != key})


def _attributes(table: pl.DataFrame, dim: pl.DataFrame | None, key: str) -> pl.DataFrame:
    """Static attribute columns aligned with `table`'s rows (one per series or per period)."""
    if dim is None or dim.height == 0:
        return pl.DataFrame()
    attrs = _static_columns(dim, key)
    return table.select(key).join(attrs, on=key, how="left", maintain_order="left").drop(key)


def _window_features(sales: pl.DataFrame, panel: Panel, spec: FeatureSpec) -> list[pl.Series]:
    """Lags, rolling statistics, price and promotion features, in the rows' own order."""
    short, mid, long_ = spec.windows
    h = spec.horizon
    column = lambda name: sales.get_column(name).cast(pl.Float64).to_numpy()  # noqa: E731
    units_m = panel.matrix(column("units_sold"))
    price_m = forward_fill(panel.matrix(column("price")))
    promo_m = panel.matrix(sales.get_column("on_promo").fill_null(0).cast(pl.Float64).to_numpy())
    units = Windows(units_m, centre_for_std=True)
    prices = Windows(price_m)
    # One matrix at a time, gathered and dropped: peak memory stays a few matrices, not 20.
    recipes = {
        **{f"lag_{k}": partial(shift, units_m, k) for k in spec.lags},
        "seasonal_lag_mean": lambda: Windows.mean_of([shift(units_m, k) for k in spec.lags[:4]]),
        **{f"mean_{w}": partial(units.mean, h, w) for w in (short, mid, long_)},
        f"std_{mid}": partial(units.std, h, mid),
        f"zero_share_{mid}": lambda: Windows(np.where(np.isnan(units_m), np.nan, units_m == 0))
        .mean(h, mid),
        "price": lambda: price_m,
        "price_rel": lambda: price_m / prices.mean(h, mid),
        "discount": lambda: 1.0 - price_m / rolling_max(price_m, h, long_),
        "on_promo": lambda: promo_m,
        "promo_prev": partial(shift, promo_m, 1),
        f"promo_share_{mid}": lambda: Windows(promo_m).mean(h, mid),
    }
    return [pl.Series(name, panel.gather(make()), nan_to_null=True)
            for name, make in recipes.items()]


def build_features(
    sales: pl.DataFrame,
    spec: FeatureSpec,
    stores: pl.DataFrame | None = None,
    items: pl.DataFrame | None = None,
    calendar: pl.DataFrame | None = None,
    first_sale: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Bronze sales (plus any future rows carrying known-in-advance inputs and a null target)
    → one feature row per input row, in the input's row order.

    `first_sale` (series → `first_sale_date`) makes the series age independent of how much
    history was passed in; without it the earliest row passed in counts as the first sale.
    """
    panel = build_panel(sales, SERIES, spec.period_days)
    columns = _window_features(sales, panel, spec)
    series = sales.select(SERIES).gather(panel.representative)
    if first_sale is None:
        first_t = np.full(panel.n_series, panel.n_periods)
        np.minimum.at(first_t, panel.sid, panel.t)
        age = pl.Series(panel.t - first_t[panel.sid])
    else:
        first = series.join(first_sale, on=SERIES, how="left", maintain_order="left")
        age = ((sales.get_column("date") - first.get_column("first_sale_date").gather(panel.sid))
               .dt.total_days() // spec.period_days)

    periods = pl.DataFrame({"date": pl.date_range(sales.get_column("date").min(),
                                                  sales.get_column("date").max(),
                                                  interval=f"{spec.period_days}d", eager=True)})
    static = pl.concat([_attributes(series, stores, "store_id"),
                        _attributes(series, items, "item_id")], how="horizontal")
    cal = _attributes(periods, calendar, "date")
    date = pl.col("date")
    out = sales.select(
        "date", *SERIES, pl.col("units_sold").cast(pl.Float64),
        *[pl.col(c).cast(pl.Float64) for c in spec.numeric_covariates],
        *[pl.col(c).cast(pl.Utf8) for c in spec.categorical_covariates],
        date.dt.weekday().alias("day_of_week"),
        date.dt.day().alias("day_of_month"),
        date.dt.month().alias("month"),
        date.dt.week().alias("week_of_year"),
        date.dt.ordinal_day().alias("day_of_year"),
    ).with_columns(
        *columns,
        periods_since_first_sale=age,
    )
    if static.width:
        out = out.hstack(static.gather(panel.sid))
    if cal.width:
        out = out.hstack(cal.gather(panel.t))
    order = feature_columns(spec, static.columns, cal.columns)
    return out.select("date", *SERIES, "units_sold", *order)

